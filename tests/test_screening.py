"""Safe screening of the CP path takes exactly the unscreened path's events.

Each case fits one model, copies it (pickle: the same state bit for bit),
switches screening off in one copy and on in the other, runs the same update
on both with the engines' migration log on, and asserts the same migrations
(slot, from set, to set, in order), the same final sets and the same decision
values within 1e-12 relative. The screened copy must also have computed fewer
gradient rates (``n_rated_rows``): a screening that silently did nothing would
pass the equalities and fail there.

Exact duplicates (same features, same label) are interchangeable: when two of
them tie for an event, the smallest slot wins only if their gradients agree to
the last bit, and a screened row's gradient is summed in another order than
an unscreened one's. The logs are therefore compared with every slot replaced
by the first slot of its duplicate group; everything else is compared as is.
"""

import os
import pickle

import numpy as np
import pytest

from eco import CPSVM
from eco.datasets import load_digits, load_mnist

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")
if not os.path.isdir(MNIST_DIR):
    MNIST_DIR = "/work/shared/data/mnist"

REL_TOL = 1e-12


def _digits():
    X, y = load_digits()
    return X, (y % 2 == 0).astype(int)


def _mnist(n=2000):
    if not os.path.isdir(MNIST_DIR):
        pytest.skip("MNIST files not available")
    X, y = load_mnist(MNIST_DIR, n=n)
    X = X.reshape(len(X), -1).astype(float) / 255.0
    # a fixed random projection to 40 dimensions (PCA would do as well)
    P = np.random.default_rng(0).normal(size=(X.shape[1], 40)) / np.sqrt(X.shape[1])
    return X @ P * 4.0, (y % 2 == 0).astype(int)


def _mixture(n=1200, d=12, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=1.5, size=(6, d))
    comp = rng.integers(0, 6, size=n)
    X = centers[comp] + rng.normal(size=(n, d))
    y = ((comp % 2 == 0) ^ (rng.random(n) < 0.1)).astype(int)
    return X, y


def _rank_deficient(n=500, seed=1):
    # 3 latent dimensions embedded in 10, every tenth row duplicated
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 3))
    X = Z @ rng.normal(size=(3, 10))
    X[::10] = X[1::10][: len(X[::10])]
    y = (Z[:, 0] + 0.7 * rng.normal(size=n) > 0).astype(int)
    return X, y


DATA = {"digits": _digits, "mnist": _mnist, "mixture": _mixture, "rankdef": _rank_deficient}


def _model(X, kernel):
    kw = {"kernel": kernel, "C": 1.0}
    if kernel == "rbf":
        kw["gamma"] = 1.0 / (X.shape[1] * X.var())  # fixed: "scale" would re-solve
    if kernel == "poly":
        kw.update(degree=2, coef0=1.0, gamma=1.0 / (X.shape[1] * X.var()))
    return CPSVM(**kw)


def _run(model, screening, update, restart=None):
    model.set_params(screening=screening)
    engine = model.head_set_.engine(0)
    if restart is not None:
        engine.screening_restart = restart
    engine.record_migrations = True
    engine.migration_log()
    rated, restarts = engine.n_rated_rows, engine.n_screen_restarts
    update(model)
    return (engine.migration_log(), engine.n_rated_rows - rated,
            engine.n_screen_restarts - restarts)


def _updates(model, X, y):
    sets = model.head_set_.engine(0).sets_all
    rng = np.random.default_rng(3)
    out = {}
    for code, name in ((1, "margin"), (2, "error")):
        slots = np.flatnonzero(sets == code)
        if len(slots):
            i = int(rng.choice(slots))
            out[name] = lambda m, i=i: m.decrement([i])
    batch = [int(i) for i in rng.choice(len(y), 40, replace=False)]
    out["batch"] = lambda m: m.decrement(batch)
    new = rng.choice(len(y), 6, replace=False)
    # near copies with the other label: each is learned along a path
    out["increment"] = lambda m: m.increment(X[new] * 1.001, 1 - y[new],
                                             ids=list(range(10**6, 10**6 + 6)))
    return out


def _duplicate_groups(X, y):
    """Slot -> first slot with the same features and label (slots = rows of X)."""
    keyed = np.column_stack([X, y])
    _, first, inverse = np.unique(keyed, axis=0, return_index=True, return_inverse=True)
    return first[inverse.ravel()]


def _canonical(log, first):
    out = log.copy()
    inside = out[:, 0] < len(first)
    out[inside, 0] = first[out[inside, 0]]
    return out


def _same_path(X, y, kernel, restart=None):
    """Run each update screened and unscreened; returns (rates saved, migrations, restarts).

    `restart`: the screened engine's ``screening_restart`` (None: its default).
    """
    first = _duplicate_groups(X, y)
    fitted = _model(X, kernel).fit(X, y)
    blob = pickle.dumps(fitted)
    saved = 0
    moved = 0
    restarts = 0
    for name, update in _updates(fitted, X, y).items():
        off, on = pickle.loads(blob), pickle.loads(blob)
        log_off, rated_off, _ = _run(off, False, update)
        log_on, rated_on, restarted = _run(on, True, update, restart)
        restarts += restarted
        assert log_on.shape == log_off.shape, name
        np.testing.assert_array_equal(_canonical(log_on, first), _canonical(log_off, first),
                                      err_msg=name)
        np.testing.assert_array_equal(on.head_set_.engine(0).sets_all,
                                      off.head_set_.engine(0).sets_all, err_msg=name)
        d_off, d_on = off.decision_function(X), on.decision_function(X)
        gap = np.max(np.abs(d_on - d_off)) / np.max(np.abs(d_off))
        assert gap <= REL_TOL, (name, gap)
        assert on.kkt_violation() < 1e-8
        assert rated_on <= rated_off
        saved += rated_off - rated_on
        moved += len(log_off)
    return saved, moved, restarts


@pytest.mark.parametrize("data, kernel", [
    ("digits", "rbf"), ("digits", "linear"), ("digits", "poly"),
    ("mnist", "rbf"), ("mixture", "rbf"), ("mixture", "poly"),
    ("rankdef", "linear"), ("rankdef", "poly"),
])
def test_screened_path_takes_the_same_events(data, kernel):
    X, y = DATA[data]()
    saved, moved, _ = _same_path(X, y, kernel)
    assert moved > 0  # the updates did take migrations
    assert saved > 0  # and screening spared gradient rates on the way


@pytest.mark.parametrize("data, kernel", [
    ("digits", "rbf"), ("mnist", "rbf"), ("mixture", "rbf"), ("mixture", "poly"),
    ("rankdef", "linear"),
])
def test_screening_restarted_at_every_step_takes_the_same_events(data, kernel):
    # screening_restart = 0: the screening starts again after every step that
    # followed a new row (every screened gradient brought up to date, every
    # key taken anew), the most restarts a path can take
    X, y = DATA[data]()
    saved, moved, restarts = _same_path(X, y, kernel, restart=0.0)
    assert moved > 0
    assert restarts > 0  # the restarts did happen


def test_screening_keeps_unlearning_exact():
    # one after the other, screened: the model equals a refit on what remains
    X, y = _mixture(n=600, seed=4)
    m = _model(X, "rbf").set_params(screening=True).fit(X, y)
    gone = [int(i) for i in np.random.default_rng(5).choice(600, 25, replace=False)]
    m.decrement(gone, batch=False)
    keep = np.setdiff1d(np.arange(600), gone)
    fresh = _model(X, "rbf").set_params(gamma=m.gamma_).fit(X[keep], y[keep])
    gap = np.max(np.abs(m.decision_function(X) - fresh.decision_function(X)))
    assert gap <= 1e-7 * np.max(np.abs(fresh.decision_function(X)))


def test_migration_log_lists_each_migration():
    X, y = _mixture(n=400, seed=2)
    m = _model(X, "rbf").fit(X, y)
    engine = m.head_set_.engine(0)
    engine.record_migrations = True
    engine.migration_log()
    receipt = m.decrement([int(i) for i in range(0, 400, 10)])
    log = engine.migration_log()
    # no null pivot on this full-rank problem: one entry per migration of
    # the receipt, each moving a row between two distinct sets
    assert log.shape == (receipt.n_migrations, 3) and len(log) > 0
    assert np.all(log[:, 1] != log[:, 2])
    assert set(log[:, 1]) | set(log[:, 2]) <= {0, 1, 2, 3}
    assert len(engine.migration_log()) == 0  # reading clears it


def test_estimator_parameter_switches_screening():
    X, y = _mixture(n=500, seed=6)
    gamma = 1.0 / (X.shape[1] * X.var())
    gone = [int(i) for i in range(0, 500, 25)]
    models = []
    for flag in (True, False):
        m = CPSVM(gamma=gamma, screening=flag).fit(X, y)
        before = m.head_set_.engine(0).n_rated_rows
        m.decrement(gone)
        models.append((m, m.head_set_.engine(0).n_rated_rows - before))
    (on, rated_on), (off, rated_off) = models
    assert rated_on < rated_off
    d_on, d_off = on.decision_function(X), off.decision_function(X)
    assert np.max(np.abs(d_on - d_off)) <= REL_TOL * np.max(np.abs(d_off))
    # an execution setting: switching it keeps the model fitted, and it
    # travels with a pickled model
    on.set_params(screening=False)
    assert pickle.loads(pickle.dumps(on)).screening is False
    assert CPSVM().screening is True  # the default
    np.testing.assert_array_equal(on.decision_function(X), d_on)


def test_bad_screening_value_is_refused_and_changes_nothing():
    from eco.exceptions import InvalidInputError
    X, y = _mixture(n=200, seed=7)
    with pytest.raises(InvalidInputError, match="screening"):
        CPSVM(screening="yes").fit(X, y)
    m = CPSVM(gamma=0.1).fit(X, y)
    assert m.screening is True  # the default
    digest = m.state_digest()
    m.screening = 1
    with pytest.raises(InvalidInputError, match="screening"):
        m.decrement([3])
    assert m.state_digest() == digest


def test_screened_request_computes_no_kernel_row_of_the_margin_set():
    # the heads hold every row's values against S (KS): a screened request
    # needs the kernel row of a member only once the member has left S, so
    # with a cache too small for S's rows it computes a few rows (the driven
    # one, the joining ones, the leaving ones), not |S| of them as a path
    # that fetched every member's row did (seconds per request at 10^5 rows)
    X, y = _mixture(n=600, seed=8)
    m = _model(X, "rbf").set_params(cache_size=0.005).fit(X, y)  # about one row of 600
    ref = _model(X, "rbf").set_params(screening=False).fit(X, y)
    store, engine = m.head_set_.store, m.head_set_.engine(0)
    n_margin = engine.n_margin
    assert n_margin >= 40
    for i in [int(i) for i in np.asarray(m.margin_)[:3]] + [int(np.asarray(m.error_)[0])]:
        rows0, migr0 = store.n_rows_computed, engine.n_migrations
        m.decrement(i)
        ref.decrement(i)
        computed = store.n_rows_computed - rows0
        migrations = engine.n_migrations - migr0
        assert computed <= 2 * migrations + 4 and computed < n_margin // 2, (computed, migrations)
    gap = np.max(np.abs(m.decision_function(X) - ref.decision_function(X)))
    assert gap <= REL_TOL * np.max(np.abs(ref.decision_function(X)))
