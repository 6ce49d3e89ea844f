"""Ctrl-C during a request on the Ray backend: the model ends exactly as before or as after.

As ``tests/test_interrupts.py`` does for the threads backend: a helper
thread sends SIGINT to the driver (once, twice or three times, 0.5 ms apart)
at a random moment of a ``decrement(batch=False)`` or an ``increment``,
binary and multi-class, on two actors. Each trial must end in the old state
(its digest) or in the new one (the digest of the same request run without
interruption, which equals the threads backend's), with no actor left
holding an uncommitted request: the model keeps working, and an actor killed
afterwards is revived at the state the driver committed. Interrupts
through a request that fails on one actor leave the old state, whether
every actor rolls back (two phases) or the actors that had committed their
part of a removal's one message are restarted at the committed state.
"""

import faulthandler
import signal
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

from eco import CPSVM  # noqa: E402
from eco.testing import DECISION_TOL, KKT_TOL, InjectedFault, local_ray_cluster  # noqa: E402
from exact_helpers import noisy_classes  # noqa: E402
from interrupt_harness import run_interrupted  # noqa: E402
from test_interrupts import _interrupted_run  # noqa: E402
from test_ray import _kill_and_wait  # noqa: E402

N_FIT, N_NEW, N_REMOVE = 120, 60, 60


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local cluster whose workers import the same eco as this process."""
    with local_ray_cluster():
        yield


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.enable()
    faulthandler.dump_traceback_later(600, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _decrement(m, X, y, audit=False):
    m.decrement(list(range(N_REMOVE)), batch=False, audit=audit)


def _increment(m, X, y):
    m.increment(X[N_FIT:], y[N_FIT:], ids=list(range(N_FIT, N_FIT + N_NEW)))


def _copy(m):
    return m.with_backend("ray")


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("op", [_decrement, _increment], ids=["decrement", "increment"])
def test_interrupts_leave_old_or_new_on_ray(op, n_classes):
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    X, y = noisy_classes(n=N_FIT + N_NEW, n_classes=n_classes, d=5, seed=n_classes)
    local = CPSVM(C=2.0, gamma=0.5).fit(X[:N_FIT], y[:N_FIT])
    base = local.with_backend("ray")  # one actor per CPU of the cluster, at most one per head
    assert len(base.head_set_.actors) == min(2, 1 if n_classes == 2 else n_classes)
    old = base.state_digest()
    assert old == local.state_digest()
    done = _copy(base)
    t0 = time.perf_counter()
    op(done, X, y)
    duration = time.perf_counter() - t0
    new = done.state_digest()
    op(local, X, y)
    assert new == local.state_digest() and new != old  # the threads backend's new state
    rng = np.random.default_rng(n_classes + 100 * (op is _increment))
    outcomes = []
    for count in (1, 2, 3):
        m = _copy(base)
        assert m.state_digest() == old
        interrupted = _interrupted_run(op, m, X, y, rng.uniform(0, 1.2 * duration), count)
        digest = m.state_digest()
        assert digest in (old, new), f"{count} interrupt(s): a mixed state"
        if not interrupted:
            assert digest == new, (f"{count} interrupt(s): the call returned, yet the "
                                   f"model is {'old' if digest == old else 'mixed'}")
        assert m.kkt_violation() < KKT_TOL
        outcomes.append("old" if digest == old else "new")
        # no actor holds an uncommitted request: one killed now is revived at
        # the committed state, and the request then completes from there
        heads = m.head_set_
        _kill_and_wait(heads.actors[-1])  # dead before the next call reaches it
        if digest == old:
            op(m, X, y)
        else:
            m.decision_function(X[:3])
            heads.ping()  # a call to every actor: the killed one is restarted
        assert heads.n_revivals == 1, f"{count} interrupt(s): {heads.n_revivals} revivals"
        assert m.state_digest() == new
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("audit", [False, True], ids=["one message", "two phases"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_interrupts_through_a_failing_request_leave_old(n_classes, audit):
    X, y = noisy_classes(n=N_FIT + N_NEW, n_classes=n_classes, d=5, seed=n_classes + 7)
    m = CPSVM(C=2.0, gamma=0.5, n_jobs=2, backend="ray").fit(X[:N_FIT], y[:N_FIT])
    old = m.state_digest()
    local = m.with_backend("threads")
    t0 = time.perf_counter()
    _decrement(local, X, y)
    duration = time.perf_counter() - t0
    heads = m.head_set_
    # the request fails on the last actor after its heads changed: every
    # actor then has to roll back, under interrupts (in one message, an
    # actor that committed its part is restarted at the committed state)
    heads.arm_fault(len(heads.actors) - 1, "unlearn", after=True)
    # three interrupts 0.5 ms apart (as tests/test_interrupts.py sends): more,
    # at random places, would also land in finalizers and the test runner
    error = run_interrupted(lambda: _decrement(m, X, y, audit), 0.2 * duration, 3,
                            catch=(InjectedFault,))
    raised = type(error).__name__ if error is not None else "none"
    assert raised in ("KeyboardInterrupt", "InjectedFault")
    assert m.state_digest() == old
    assert m.kkt_violation() < KKT_TOL
    # and it works afterwards, on every actor, as the threads backend does
    # (the fault fires once: at the next request if interrupts stopped this one first)
    try:
        _decrement(m, X, y, audit)
    except InjectedFault:
        assert raised == "KeyboardInterrupt" and m.state_digest() == old
        _decrement(m, X, y, audit)
    if heads.n_revivals == 0:  # every actor rolled back from its snapshot: bit for bit
        assert m.state_digest() == local.state_digest()
    else:  # restarted heads recompute their derived arrays: equal up to rounding
        assert not audit
        gap = np.max(np.abs(m.decision_function(X) - local.decision_function(X)))
        assert gap <= DECISION_TOL, f"decision values differ by {gap:.3g}"
    assert m.kkt_violation() < KKT_TOL
