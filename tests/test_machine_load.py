"""The benchmarks' record of machine load (benchmarks/machine_load.py).

A sweep's claim to be "one quiet run" rests on it, so its reading of
``/proc/stat`` and its verdicts are tested here (not its numbers, which are
whatever the machine does).
"""

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import machine_load  # noqa: E402

LINUX = Path("/proc/stat").exists()


def _point(name, steal, others):
    load = {"steal": steal, "others": others, "load_avg_start": 0.0, "load_avg_end": 0.0,
            "quiet": steal is not None and steal < machine_load.QUIET_STEAL
            and others < machine_load.QUIET_OTHERS}
    return {"dataset": name, "n": 1000, "info": {"machine load": load}}


@pytest.mark.skipif(not LINUX, reason="/proc/stat is Linux's")
def test_a_measurement_reads_shares_of_the_cpu_time():
    load = machine_load.MachineLoad()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:  # some CPU time of our own, which is not "others"
        pass
    res = load.result()
    assert 0.0 <= res["steal"] <= 1.0
    assert 0.0 <= res["others"]
    assert res["quiet"] == (res["steal"] < machine_load.QUIET_STEAL
                            and res["others"] < machine_load.QUIET_OTHERS)
    assert ("NOT quiet" in machine_load.sentence(res)) != res["quiet"]


def test_without_proc_stat_nothing_is_recorded_and_nothing_is_quiet(monkeypatch):
    monkeypatch.setattr(machine_load, "cpu_ticks", lambda: None)
    res = machine_load.MachineLoad().result()
    assert res["steal"] is None and res["others"] is None and res["quiet"] is False
    assert "not recorded" in machine_load.sentence(res)


def testcpu_ticks_follow_the_fields_of_proc_stat(monkeypatch, tmp_path):
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 5 20 700 10 1 4 60 30 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
    real_path = machine_load.Path
    monkeypatch.setattr(machine_load, "Path",
                        lambda p: stat if p == "/proc/stat" else real_path(p))
    total, steal, busy = machine_load.cpu_ticks()
    assert (total, steal, busy) == (900, 60, 130)  # guest time is inside user


def test_the_summary_names_every_point_that_was_not_quiet():
    quiet = [_point("mixture", 0.001, 0.01), _point("mnist", 0.0, 0.0)]
    assert "Machine load during the points: quiet" in machine_load.summary(quiet)
    noisy = quiet + [_point("loud", 0.05, 0.0), _point("busy", 0.0, 0.2)]
    text = machine_load.summary(noisy)
    assert "not quiet at loud n=1000, busy n=1000" in text
    assert "5.0% of the CPU time stolen" in text and "20.0% used by other processes" in text
    older = quiet + [{"dataset": "old", "n": 5, "info": {}}]
    assert "not recorded for every point" in machine_load.summary(older)
