"""The summary, targets, tables and plots of the experiment, on synthetic measurements."""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from eco.nn.experiment import AcceptanceTargets, check_targets, markdown_table, summarise  # noqa: E402
from eco.nn.experiment.report import targets_markdown  # noqa: E402
from eco.nn.experiment.plots import clipped_error_bars, write_plots  # noqa: E402

pytestmark = pytest.mark.torch


def _measurements(rng, trials=4, sizes=(5, 50)):
    rows = []
    for trial in range(trials):
        for size in sizes:
            nr_time = rng.uniform(1.0, 3.0)
            for method, time_s in (("NR", nr_time), ("ECO", rng.uniform(1e-3, 3e-2)), ("ECO_i", 0.02), ("head-NR", 0.1)):
                row = {"trial": trial, "scenario": "random", "size": size, "method": method, "time_s": time_s,
                       "test_accuracy": min(1.0, rng.uniform(0.97, 1.01)), "forget_accuracy": rng.choice([0.8, 1.0]),
                       "mia_forget": rng.uniform(0.4, 1.0), "mia_test": rng.uniform(0.3, 0.6)}
                row["mia_gap"] = abs(row["mia_forget"] - row["mia_test"])
                rows.append(row)
            for row in rows[-3:]:
                row["speedup"] = nr_time / row["time_s"]
    return rows


def test_summary_is_keyed_and_targets_follow_the_one_rule():
    rows = _measurements(np.random.default_rng(0))
    summary = summarise(rows)
    eco_speedups = [r["speedup"] for r in rows if r["method"] == "ECO" and r["size"] == 50]
    entry = summary.get("random", 50, "ECO", "speedup")
    assert entry["mean"] == pytest.approx(np.mean(eco_speedups)) and entry["n"] == 4
    assert entry["min"] == min(eco_speedups) and entry["max"] == max(eco_speedups)
    assert summary.get("random", 50, "ECO", "max_decision_diff") is None
    lenient = check_targets(summary, AcceptanceTargets(min_speedup=1.0, max_mia_gap=1.0))
    strict = check_targets(summary, AcceptanceTargets(min_speedup=1e9, max_mia_gap=0.0))
    assert lenient["speedup_at_size"]["speedup"] == pytest.approx(np.mean(eco_speedups))  # mean of ratios
    assert lenient["speedup_at_size"]["met"] and not strict["speedup_at_size"]["met"]
    assert lenient["mia_gap"]["ECO"]["met"] and not strict["mia_gap"]["ECO"]["met"]
    # the MIA rule: the signed gap pooled over every forgotten example, then its absolute value
    signed = {s: np.mean([r["mia_forget"] - r["mia_test"] for r in rows if r["method"] == "ECO" and r["size"] == s])
              for s in (5, 50)}
    pooled = (5 * signed[5] + 50 * signed[50]) / 55
    assert lenient["mia_gap"]["ECO"]["pooled_signed"] == pytest.approx(pooled)
    assert lenient["mia_gap"]["ECO"]["pooled"] == pytest.approx(abs(pooled))
    assert lenient["mia_gap"]["NR"]["pooled"] == pytest.approx(abs(np.average(
        [np.mean([r["mia_forget"] - r["mia_test"] for r in rows if r["method"] == "NR" and r["size"] == s])
         for s in (5, 50)], weights=[5, 50])))
    assert lenient["mia_control_original"] is None  # no "original" rows here
    assert lenient["exactness"]["max_decision_diff"] is None and not lenient["exactness"]["met"]
    table = markdown_table(summary, "speedup", ["random"], [5, 50])
    assert "per-trial values" in table and table.count("**") >= 2


def test_exactness_and_attack_power_are_checked_from_the_measurements():
    rows = _measurements(np.random.default_rng(2))
    for row in rows:
        if row["method"] in ("ECO", "ECO_i"):
            row["max_decision_diff"] = 1e-13 if row["size"] == 5 else 3e-9
    # the original model still holds D_f: an attack with power calls D_f members
    for trial in range(4):
        for size in (5, 50):
            rows.append({"trial": trial, "scenario": "random", "size": size, "method": "original",
                         "test_accuracy": 0.98, "forget_accuracy": 1.0, "mia_forget": 0.9, "mia_test": 0.5,
                         "mia_gap": 0.4})
    summary = summarise(rows)
    met = check_targets(summary, AcceptanceTargets(min_speedup=1.0, max_decision_diff=1e-8))
    assert met["exactness"]["max_decision_diff"] == pytest.approx(3e-9) and met["exactness"]["met"]
    assert not check_targets(summary, AcceptanceTargets(min_speedup=1.0, max_decision_diff=1e-9))["exactness"]["met"]
    control = met["mia_control_original"]
    assert control["pooled_signed"] == pytest.approx(0.4) and not control["met"]
    assert control["n_examples"] == 4 * 55 and control["noise"] == pytest.approx(0.5 / np.sqrt(220))
    text = targets_markdown(met)
    assert "Attack power" in text and "the attack detects membership" in text and "Exactness" in text


def test_error_bars_stay_within_the_trials():
    values = [{"mean": 0.99, "std": 0.05, "min": 0.9, "max": 1.0}, {"mean": 1e-3, "std": 5e-3, "min": 2e-4, "max": 1e-2}]
    means, yerr = clipped_error_bars(values)
    assert (yerr >= 0).all()
    np.testing.assert_allclose(means + yerr[1], [1.0, 6e-3])  # not past 100%
    np.testing.assert_allclose(means - yerr[0], [0.94, 2e-4])  # positive on a log axis


def test_plots_are_written(tmp_path):
    summary = summarise(_measurements(np.random.default_rng(1)))
    write_plots(summary, {"dataset": "digits", "trials": 4, "scenarios": ["random"], "sizes": [5, 50]}, tmp_path)
    for name in ("time.png", "accuracy.png", "mia.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
