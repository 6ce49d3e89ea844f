"""One model shared by several threads: no crash, no half-applied state, exact at the end.

Updates serialise on the model's lock and reads share it (see the "Threads"
paragraph of :class:`eco.CPSVM`). Every test runs under ``faulthandler`` with
a watchdog, so that a crash prints the threads' stacks and a hang fails.
"""

import faulthandler
import threading

import numpy as np
import pytest

import eco
from eco import CPSVM
from eco.testing import KKT_TOL, assert_exact
from exact_helpers import noisy_classes

WATCHDOG_S = 240


@pytest.fixture(autouse=True)
def watchdog():
    faulthandler.enable()
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _run_threads(targets):
    """Start one thread per callable, join them all; re-raise the first error of any."""
    errors = []
    barrier = threading.Barrier(len(targets))

    def wrap(fn):
        def run():
            try:
                barrier.wait()
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("repeat", range(2))
def test_mixed_threads_end_exact(n_classes, n_jobs, repeat, tmp_path):
    seed = 10 * repeat + n_classes
    X, y = noisy_classes(n=150, n_classes=n_classes, d=4, seed=seed)
    n0 = 100
    m = CPSVM(C=2.0, gamma=0.5, n_jobs=n_jobs).fit(X[:n0], y[:n0])
    rng = np.random.default_rng(seed)
    to_remove = rng.permutation(n0)[:40]
    parts = [to_remove[:20], to_remove[20:]]
    X_eval = X[:30]
    reads_done = []

    def decrementer(part, batch):
        def run():
            for k in range(0, len(part), 4):
                r = m.decrement(part[k:k + 4].tolist(), batch=batch, audit=True)
                assert r.kkt_violation < KKT_TOL
        return run

    def incrementer():
        for k in range(n0, 150, 10):
            m.increment(X[k:k + 10], y[k:k + 10], ids=list(range(k, k + 10)))

    def reader():
        for k in range(12):
            f = m.decision_function(X_eval)
            assert f.shape[0] == len(X_eval) and np.all(np.isfinite(f))
            assert set(np.unique(m.predict(X_eval))) <= set(m.classes_)
            report = m.verify()
            assert report.ok, report
            # ids and coefficients read together describe one state
            assert len(m.ids_) == m.n_active_
            reads_done.append(k)

    def saver():
        for k in range(6):
            path = tmp_path / f"m{k}.eco"
            m.save(path)
            loaded = eco.load(path)
            assert loaded.kkt_violation() < KKT_TOL

    _run_threads([decrementer(parts[0], True), decrementer(parts[1], False), incrementer,
                  reader, saver])
    assert len(reads_done) == 12
    final = np.setdiff1d(np.arange(150), to_remove)
    assert np.array_equal(np.sort(np.asarray(m.ids_)), final)
    assert_exact(m, X)


def test_saves_during_decrements_load_as_some_state(tmp_path):
    X, y = noisy_classes(n=120, seed=3)
    m = CPSVM(C=2.0, gamma=0.5).fit(X, y)
    digests = {m.state_digest()}
    done = threading.Event()
    paths = []

    def decrementer():
        try:
            for k in range(0, 60, 3):
                r = m.decrement([k, k + 1, k + 2], batch=False, audit=True)
                digests.add(r.digest_after)
        finally:
            done.set()

    def saver():
        k = 0
        while not done.is_set() or k < 3:
            path = tmp_path / f"s{k}.eco"
            m.save(path)
            paths.append(path)
            k += 1

    _run_threads([decrementer, saver])
    assert len(paths) >= 3
    for path in paths:
        loaded = eco.load(path)
        # every file is one of the states the model went through, whole
        assert loaded.state_digest() in digests
        assert loaded.kkt_violation() < KKT_TOL


@pytest.mark.parametrize("n_classes", [2, 3])
def test_predictions_during_loo_are_right(n_classes):
    X, y = noisy_classes(n=90, n_classes=n_classes, seed=4)
    m = CPSVM(C=1.0, n_jobs=2).fit(X, y)
    want = m.decision_function(X)
    digest = m.state_digest()
    loo = []
    wrong = []

    def looer():
        for _ in range(2):
            loo.append(m.loo_decision())

    def predictor():
        for _ in range(40):
            got = m.decision_function(X)
            if not np.array_equal(got, want):
                wrong.append(float(np.max(np.abs(got - want))))

    _run_threads([looer, predictor, predictor])
    assert wrong == []
    assert m.state_digest() == digest
    assert np.array_equal(loo[0], loo[1])


def test_two_decrementers_and_pickling():
    import copy
    import pickle

    X, y = noisy_classes(n=120, n_classes=3, seed=5)
    m = CPSVM(C=1.0).fit(X, y)
    copies = []

    def decrementer(ids):
        def run():
            for i in ids:
                m.decrement([int(i)])
        return run

    def copier():
        for _ in range(10):
            c = pickle.loads(pickle.dumps(m))
            copies.append(c)
            d = copy.deepcopy(m)
            assert d.kkt_violation() < KKT_TOL

    _run_threads([decrementer(range(0, 30, 2)), decrementer(range(1, 30, 2)), copier])
    assert m.n_active_ == 90
    for c in copies:
        assert c.kkt_violation() < KKT_TOL
        # a copy has its own lock and its own state
        c.decrement([int(c.ids_[0])])
    assert m.n_active_ == 90
    assert_exact(m, X)


def test_lock_is_reentrant_and_refuses_upgrade():
    from eco._concurrency import RWLock

    lock = RWLock()
    with lock.writing():
        with lock.writing():
            with lock.reading():
                pass
    with lock.reading():
        with lock.reading():
            pass
        with pytest.raises(RuntimeError):
            with lock.writing():
                pass
    # the lock is usable again by another thread
    got = []
    t = threading.Thread(target=lambda: got.append(lock.writing().__enter__() or 1))
    t.start()
    t.join(5)
    assert got == [1]


def test_interrupted_waiters_leak_no_share_of_the_lock():
    """A KeyboardInterrupt while waiting for the lock leaves it usable by everyone."""
    import signal
    import time

    X, y = noisy_classes(n=60, seed=6)
    m = CPSVM(C=1.0).fit(X, y)
    release = threading.Event()
    entered = threading.Event()

    def hold_a_read():
        with eco.testing.model_lock(m).reading():
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold_a_read)
    holder.start()
    entered.wait(10)
    timer = threading.Timer(0.05, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                              signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        m.decrement([0])  # waits for the reader, interrupted while waiting
    timer.join()
    release.set()
    holder.join()
    # nothing changed, and both kinds of access still work
    assert m.n_active_ == 60
    m.decrement([0])
    assert m.predict(X).shape == (60,)
    time.sleep(0)
