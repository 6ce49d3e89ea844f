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


def test_engine_refuses_what_would_read_out_of_bounds():
    """The def boundary's checks the fuzzer relies on, one by one."""
    import numpy as np

    from eco import _cp_core

    rng = np.random.default_rng(0)
    store = _cp_core.KernelStore(2, "rbf", 0.5)
    store.append(rng.normal(size=(6, 2)))
    e = _cp_core.CPEngine(store)
    for s, yv in enumerate([1.0, -1.0, 1.0, -1.0, 1.0, -1.0]):
        e.learn(s, yv, 1.0)
    with pytest.raises(ValueError, match="twice"):
        e.unlearn(np.array([1, 1], dtype=np.intp))
    with pytest.raises(IndexError):
        e.unlearn(np.array([7], dtype=np.intp))
    with pytest.raises(ValueError, match="label"):
        e.learn(0, 0.5, 1.0)
    with pytest.raises(IndexError):
        store.ensure_rows(np.array([-1], dtype=np.intp))
    with pytest.raises(IndexError):
        e.alpha_of(np.array([6], dtype=np.intp))
    with pytest.raises(ValueError, match="unknown kernel"):
        _cp_core.KernelStore(2, "sigmoid")
    with pytest.raises(TypeError):
        _cp_core.CPEngine(None)
    state = e.get_state()
    bad = dict(state, sets=np.where(state["sets"] == 0, 9, state["sets"]).astype(np.int8))
    if np.any(state["sets"] == 0):
        with pytest.raises(ValueError, match="not a set"):
            e.restore(bad)
    # a store truncated under active slots: refused until a state is installed
    store.truncate(3)
    with pytest.raises(ValueError, match="truncated"):
        e.unlearn(np.array([0], dtype=np.intp))
    with pytest.raises(ValueError, match="truncated"):
        e.recompute_gradients()
    n = store.n_slots
    e.set_state(np.ones(n), np.ones(n), np.zeros(n), 0.0, np.full(n, -1, np.int8),
                np.zeros(0, np.int32), np.zeros(n))
    e.learn(0, 1.0, 1.0)
    assert e.n_active == 1
