"""The compiled engine under memory exhaustion, and what it leaves in released memory.

Every allocation of :mod:`eco._cp_core` goes through one wrapper with a test
hook (:func:`eco.testing.engine_alloc_fault`): here the k-th allocation of
fit, increment, decrement (batch and one by one, with erasure and slot
compaction) fails, for every k the call reaches, on binary and multi-class
models. The call must raise (MemoryError, or UnlearningError/EngineError as
the package reports a failed engine operation) and leave the model exactly
as it was (digest, KKT certificate), or, where a fallback absorbed the
failure, complete exactly; the same call then succeeds. Released buffers are
zeroed before they are freed (:func:`eco.testing.released_buffers`).
"""

import copy
import re
from pathlib import Path

import numpy as np
import pytest

from eco import CPSVM
from eco.exceptions import UnlearningError
from eco.testing import (DECISION_TOL, KKT_TOL, assert_exact, engine_alloc_fault,
                         engine_allocations, released_buffers)
from exact_helpers import noisy_classes


def _data(n_classes, n=48, seed=0):
    return noisy_classes(n=n, n_classes=n_classes, d=3, noise=0.7, seed=seed)


def _base(n_classes):
    X, y = _data(n_classes)
    X_new, y_new = _data(n_classes, n=8, seed=1)
    # cache_size small enough that rows are evicted (trim) and recomputed
    m = CPSVM(C=2.0, gamma=0.5, cache_size=0.002).fit(X[:40], y[:40])
    return m, X, y, X_new, y_new


def _ops(X, y, X_new, y_new):
    return {
        "fit": lambda m: m.fit(X[8:], y[8:]),
        "increment": lambda m: m.increment(X_new, y_new, ids=[f"n{k}" for k in range(8)]),
        "decrement_batch": lambda m: m.decrement([0, 3, 5, 11, 17], batch=True),
        "decrement_single": lambda m: m.decrement([2, 7, 13], batch=False),
        # enough removed that the erased slots are compacted away
        "decrement_compacting": lambda m: m.decrement(list(range(0, 36)), batch=True),
    }


def _decisions(m, X):
    return np.asarray(m.decision_function(X))


def _check_faults(base, op, X_eval, prepare=lambda m: m):
    """Fail the k-th allocation of `op` for every k it reaches; returns the outcomes.

    `prepare` is applied to every copy of `base` before `op` runs on it.
    """
    want = prepare(copy.deepcopy(base))
    with engine_allocations() as counted:
        op(want)
    assert counted.count > 0
    digest0, f_want = base.state_digest(), _decisions(want, X_eval)
    outcomes = {"raised": 0, "absorbed": 0}
    k = 1
    while True:
        m = prepare(copy.deepcopy(base))
        err = None
        with engine_alloc_fault(k) as fault:
            try:
                op(m)
            except (MemoryError, UnlearningError) as exc:
                err = exc
        if not fault.fired:
            assert err is None, f"k={k}: {err!r} without a fault"
            break
        if err is not None:
            outcomes["raised"] += 1
            assert m.state_digest() == digest0, f"k={k}: the model changed after {err!r}"
            assert m.kkt_violation() < KKT_TOL, f"k={k}"
            op(m)  # the same call now succeeds
        else:
            outcomes["absorbed"] += 1
        # done, whichever way: the same model as without any fault
        assert np.array_equal(np.asarray(m.ids_), np.asarray(want.ids_)), f"k={k}"
        assert m.kkt_violation() < KKT_TOL, f"k={k}"
        gap = np.max(np.abs(_decisions(m, X_eval) - f_want) / np.maximum(1.0, np.abs(f_want)))
        assert gap <= DECISION_TOL, f"k={k}: decision values differ by {gap:.3g}"
        k += 1
    assert k - 1 == outcomes["raised"] + outcomes["absorbed"]
    return k - 1, outcomes


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("name", ["fit", "increment", "decrement_batch", "decrement_single",
                                  "decrement_compacting"])
def test_every_allocation_failure_leaves_the_model_unchanged(n_classes, name):
    base, X, y, X_new, y_new = _base(n_classes)
    op = _ops(X, y, X_new, y_new)[name]
    n_faults, outcomes = _check_faults(base, op, np.vstack([X, X_new]))
    assert n_faults >= 1


@pytest.mark.parametrize("name", ["decrement_batch", "decrement_single", "increment"])
def test_allocation_failures_around_screening_restarts(name):
    # a restart after every step that followed a new row (screening_restart
    # = 0): a restart may fetch kernel rows (of the driven rows, and of moved
    # rows for the refresh), and every allocation of the call may fail
    # (mid-path: the path goes on unscreened, or the call fails and the
    # model is as it was)
    base, X, y, X_new, y_new = _base(3)
    op = _ops(X, y, X_new, y_new)[name]

    def restarting(m):
        for h in range(m.head_set_.n_heads):
            m.head_set_.engine(h).screening_restart = 0.0
        return m

    probe = restarting(copy.deepcopy(base))
    op(probe)
    assert sum(probe.head_set_.engine(h).n_screen_restarts
               for h in range(probe.head_set_.n_heads)) > 0
    n_faults, outcomes = _check_faults(base, op, np.vstack([X, X_new]), restarting)
    assert n_faults >= 1


def test_fault_hook_is_disarmed_after_the_block():
    base, X, y, X_new, y_new = _base(2)
    with engine_alloc_fault(10 ** 9) as fault:
        base.decrement([1])
    assert not fault.fired and 0 < fault.count < 10 ** 9
    base.increment(X_new, y_new)  # nothing fails any more
    assert_exact(base)
    with pytest.raises(ValueError):
        with engine_alloc_fault(0):
            pass


@pytest.mark.parametrize("kernel", ["rbf", "precomputed"])
def test_released_buffers_are_zeroed(kernel):
    """Growth, eviction, erasure and compaction release buffers: every one is zeros."""
    X, y = _data(3, n=120, seed=4)
    data = X @ X.T if kernel == "precomputed" else X
    with released_buffers() as report:
        m = CPSVM(C=2.0, kernel=kernel, gamma=0.5, cache_size=0.01)
        if kernel == "precomputed":
            m.fit(data[:20, :20], y[:20])
            for a in range(20, 120, 20):  # the store and the engines grow
                m.increment(data[a:a + 20, :a + 20], y[a:a + 20])
        else:
            m.fit(data[:20], y[:20])
            for a in range(20, 120, 20):
                m.increment(data[a:a + 20], y[a:a + 20])
        m.decrement(list(range(0, 90, 2)))               # erasure, then compaction
        m.decrement(list(range(1, 60, 2)), batch=False)
        assert_exact(m)
        del m
        n, nbytes, dirty = report()
    assert n > 20 and nbytes > 0
    assert dirty == 0, f"{dirty} of {n} released buffers still hold data"


def test_engine_allocates_only_through_its_wrapper():
    """No bare malloc/realloc/free in the engine outside the wrapper (so every
    allocation can be failed by the hook and every release is zeroed)."""
    src = Path(__file__).resolve().parents[1] / "src" / "eco" / "_cp_core.pyx"
    if not src.exists():
        pytest.skip("the engine's source is not installed alongside the tests")
    text = src.read_text()
    start = text.index("cdef void* _xmalloc")
    end = text.index("def set_alloc_fault")
    # code only: comments dropped
    outside = "\n".join(line.split("#")[0] for line in (text[:start] + text[end:]).splitlines())
    bare = [m.group(0) for m in re.finditer(r"(?<![\w.])(malloc|realloc|calloc|free)\(", outside)]
    # the quarantine's own release (test hook) is the one exception
    assert bare == ["free("], bare
