"""Fuzzing kept in the suite: no call crashes the interpreter or hangs.

Two layers, each in a subprocess with a timeout so that a crash (a signal,
an abort) or a hang is reported as a failure with the seed of the scenario
that caused it (``tests/fuzz_driver.py`` prints each seed before running it):

- the public API: small awkward data sets (2 to 15 rows, 1 to 3 features,
  ties, scales from 1e-3 to 1e3, every kernel) and random sequences of every
  method; only eco's exceptions may escape;
- the engine's Python-visible API: random, often invalid, call sequences on
  the kernel store and the engines (truncated stores, bad slots, corrupted
  states); any Python exception is a refusal, nothing may abort.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

DRIVER = Path(__file__).with_name("fuzz_driver.py")
TIMEOUT_S = 180


def _run(kind, seed, count):
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    try:
        proc = subprocess.run([sys.executable, str(DRIVER), kind, str(seed), str(count)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        last = out.strip().splitlines()[-1:] or ["(nothing printed)"]
        pytest.fail(f"{kind} fuzzing hung past {TIMEOUT_S} s at {last[0]}")
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, (
        f"{kind} fuzzing ended with status {proc.returncode} at {lines[-1:]}:\n"
        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    assert lines[-1] == "all scenarios ended"
    assert sum(line.startswith("scenario ") for line in lines) == count


@pytest.mark.parametrize("seed", [1, 2])
def test_public_api_fuzz(seed):
    _run("api", seed, 40)


@pytest.mark.parametrize("seed", [1, 2])
def test_engine_api_fuzz(seed):
    _run("engine", seed, 300)
