"""The helper thread of the row products: the same bits with or without it.

A screened step's row products are cut into chunks of rows that the calling
thread and one helper thread claim (``eco._cp_core.set_parallel_min_work``
decides from which size). Every row is computed by the same call over the
same chunk whoever runs it, so a model must come out bit for bit the same
with the helper on every product (0) and off (inf): fit, increments, batch
and one-by-one decrements, screened and not, heads one at a time and in
parallel, and in a forked child.
"""

import multiprocessing
from contextlib import contextmanager

import numpy as np
import pytest
from sklearn.datasets import load_digits

from eco import CPSVM, _cp_core


@contextmanager
def _helper(on):
    """The helper on every product of two chunks or more (True) or off (False)."""
    old = _cp_core.set_parallel_min_work(0.0 if on else float("inf"))
    first = _cp_core.set_helper_first(on)
    try:
        yield
    finally:
        _cp_core.set_helper_first(first)
        _cp_core.set_parallel_min_work(old)


@pytest.fixture
def helper_on_every_product():
    with _helper(True):
        yield


def _digits(n=600):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n]


def _run(X, y, screening, n_jobs, batch):
    """fit on most rows, add the rest, remove margin, error and reserve ids; every digest."""
    n0 = len(y) - 40
    model = CPSVM(C=10.0, gamma=0.05, screening=screening, n_jobs=n_jobs)
    model.fit(X[:n0], y[:n0], ids=list(range(n0)))
    digests = [model.state_digest()]
    model.increment(X[n0:], y[n0:], ids=list(range(n0, len(y))))
    digests.append(model.state_digest())
    rng = np.random.default_rng(0)
    for _ in range(3):
        ids = [int(i) for i in rng.choice(np.asarray(model.ids_), 12, replace=False)]
        model.decrement(ids, batch=batch)
        digests.append(model.state_digest())
    for kind in ("margin_", "error_"):
        pool = np.asarray(getattr(model, kind)[0])  # the first head's
        if len(pool):
            model.decrement(int(pool[0]))
            digests.append(model.state_digest())
    return digests, model


@pytest.mark.parametrize("screening", [True, False])
@pytest.mark.parametrize("batch", [True, False])
def test_same_bits_with_the_helper_on_every_product(screening, batch):
    X, y = _digits()
    old = _cp_core.set_parallel_min_work(float("inf"))
    try:
        alone, _ = _run(X, y, screening, 1, batch)
        _cp_core.set_parallel_min_work(0.0)
        first = _cp_core.set_helper_first(True)
        before = _cp_core.helper_chunks()
        helped, model = _run(X, y, screening, 1, batch)
        by_helper = _cp_core.helper_chunks() - before
    finally:
        _cp_core.set_helper_first(first)
        _cp_core.set_parallel_min_work(old)
    assert by_helper > 0  # the comparison is not vacuous
    assert helped == alone
    assert model.kkt_violation() < 1e-8


def test_heads_in_parallel_share_one_helper(helper_on_every_product):
    # two heads at a time: one gets the helper, the other computes alone
    X, y = _digits()
    parallel, _ = _run(X, y, True, 2, True)
    old = _cp_core.set_parallel_min_work(float("inf"))
    try:
        alone, _ = _run(X, y, True, 1, True)
    finally:
        _cp_core.set_parallel_min_work(old)
    assert parallel == alone


def _child_digest(queue):
    X, y = _digits()
    before = _cp_core.helper_chunks()
    digests = _run(X, y, True, 1, True)[0]
    queue.put((digests, _cp_core.helper_chunks() - before))


def test_a_forked_child_starts_its_own_helper(helper_on_every_product):
    # the parent's helper exists (and its locks may be anywhere) at the fork
    X, y = _digits()
    parent, _ = _run(X, y, True, 1, True)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_digest, args=(queue,))
    child.start()
    try:
        got = queue.get(timeout=300)
    finally:
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    digests, by_helper = got
    assert by_helper > 0  # the child's own helper ran
    assert digests == parent


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear"])
def test_kernel_rows_are_the_same_bits_with_the_helper(kernel):
    # tiles of 512 columns shared with the helper; appended rows extend the
    # cached ones from a column that is not a tile boundary
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1400, 9))
    slots = np.array([0, 7, 700, 1399], dtype=np.intp)

    def rows(on):
        with _helper(on):
            store = _cp_core.KernelStore(X.shape[1], kernel, 0.1, 3, 0.5)
            store.append(X[:1100])
            store.ensure_rows(slots[:3])         # cached, then extended by the append
            store.append(X[1100:])
            return [store.get_row(int(s)) for s in slots]

    before = _cp_core.helper_chunks()
    helped = rows(True)
    assert _cp_core.helper_chunks() > before
    alone = rows(False)
    for a, b in zip(helped, alone):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear"])
def test_many_rows_are_one_shared_job_with_the_same_bits(kernel):
    # more than eight missing rows are one job of blocks of eight times tiles
    # (_fill_task): a last block of five, a slot asked for twice and a
    # row already cached must give the rows that one-at-a-time computation gives
    rng = np.random.default_rng(2)
    X = rng.normal(size=(1300, 7))
    cached = 11
    request = np.array([3, 900, 3, 1299, cached, 512, 511, 0, 64, 1000, 7, 8, 9, 10,
                        12, 13, 14, 15, 16, 17, 18, 19, 1100], dtype=np.intp)

    def rows(on):
        with _helper(on):
            store = _cp_core.KernelStore(X.shape[1], kernel, 0.1, 3, 0.5)
            store.append(X)
            store.get_row(cached)
            computed = store.n_rows_computed
            store.ensure_rows(request)
            # every distinct missing slot once, the cached one not again
            assert store.n_rows_computed - computed == len(set(request.tolist()) - {cached})
            return [store.get_row(int(s)) for s in request]

    one_at_a_time = _cp_core.KernelStore(X.shape[1], kernel, 0.1, 3, 0.5)
    one_at_a_time.append(X)
    single = [one_at_a_time.get_row(int(s)) for s in request]
    before = _cp_core.helper_chunks()
    helped = rows(True)
    assert _cp_core.helper_chunks() > before
    alone = rows(False)
    for a, b, c in zip(helped, alone, single):
        assert a.tobytes() == b.tobytes() == c.tobytes()
