"""Degenerate inputs: duplicates, ties, one class or no example left, linearly
dependent margin vectors, zero sample weights. Each has a defined result (see
the Notes of eco.CPSVM) and must never crash or leave an inexact model."""

import numpy as np
import pytest

from eco import CPSVM
from eco.exceptions import InvalidInputError
from exact_helpers import (
    Ledger,
    assert_certified,
    assert_exact,
    assert_same_model,
    refit_from_scratch,
    synthetic,
    tracked_fit,
    tracked_increment,
)

KERNELS = ["linear", "rbf", "poly"]


def _grid(n_side=4, reps=2, seed=0):
    """Integer grid points, each given `reps` times, labels by a noisy rule.

    Integer coordinates make many kernel values and gradients tie exactly.
    """
    rng = np.random.default_rng(seed)
    g = np.arange(n_side, dtype=np.float64)
    pts = np.array([(a, b) for a in g for b in g])
    X = np.repeat(pts, reps, axis=0)
    y = (X[:, 0] + X[:, 1] > n_side - 1).astype(np.int64)
    flip = rng.random(len(y)) < 0.1
    y[flip] = 1 - y[flip]
    return X, y


# ----------------------------------------------------------------- duplicates


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_row_three_times(kernel):
    X0, y0 = synthetic(60, 3, seed=21)
    X0 = X0 / 2  # keeps poly kernel values small enough for float32 libsvm to be precise
    X, y = np.repeat(X0, 3, axis=0), np.repeat(y0, 3)  # ids 3k, 3k+1, 3k+2 share a row
    batch, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel, gamma=0.5), X, y)
    incr = CPSVM(C=1.0, kernel=kernel, gamma=0.5).fit(X, y, method="incremental")
    assert_same_model(batch, incr, X, 1e-9, "batch vs incremental")
    # the model of the thrice-given rows is the model of the rows with weight 3
    weighted = CPSVM(C=1.0, kernel=kernel, gamma=0.5).fit(X0, y0, sample_weight=np.full(60, 3.0))
    assert_same_model(batch, weighted, X, 1e-8, "three copies vs weight 3")
    assert_exact(batch, ledger)
    # remove one copy, then the two others, of several support rows
    rows = sorted({int(i) // 3 for i in batch.support_ids_})[:6]
    batch.decrement([3 * r for r in rows])
    assert_exact(batch, ledger)
    batch.decrement([3 * r + 1 for r in rows] + [3 * r + 2 for r in rows], batch=False)
    assert_exact(batch, ledger)


# ---------------------------------------------------------------------- ties


@pytest.mark.parametrize("kernel", KERNELS)
def test_integer_grid_ties(kernel):
    X, y = _grid()
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel, gamma=0.5, coef0=1.0), X, y)
    incr = CPSVM(C=1.0, kernel=kernel, gamma=0.5, coef0=1.0).fit(X, y, method="incremental")
    assert_same_model(model, incr, X, 1e-9, "batch vs incremental")
    assert_exact(model, ledger)
    rng = np.random.default_rng(3)
    extra_X, extra_y = _grid(seed=7)
    for step in range(8):
        ids = rng.choice(model.ids_, size=1 + step % 3, replace=False)
        model.decrement(ids, batch=bool(step % 2))
        assert_exact(model, ledger, svc=False)
        tracked_increment(model, ledger, extra_X[step:step + 1], extra_y[step:step + 1])
        assert_exact(model, ledger, svc=False)
    assert_exact(model, ledger)


# ------------------------------------------------------- one class, no class


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
def test_one_class_left_then_other_class_back(kernel, batch):
    X, y = synthetic(80, 3, seed=23)
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel), X, y)
    negatives = np.flatnonzero(y == 0)
    model.decrement(negatives, batch=batch)
    # documented: every alpha is 0 and the decision is that class (b = +1)
    assert model.n_active_ == int(np.sum(y == 1))
    np.testing.assert_array_equal(model.alpha_, 0.0)
    np.testing.assert_array_equal(model.intercept_, [1.0])
    np.testing.assert_array_equal(model.decision_function(X), 1.0)
    np.testing.assert_array_equal(model.predict(X), 1)
    assert len(model.margin_) == 0 and len(model.error_) == 0
    assert model.kkt_violation() == 0.0
    assert_exact(model, ledger)
    # unlearning within the remaining class keeps the constant model
    model.decrement(model.ids_[:3])
    np.testing.assert_array_equal(model.decision_function(X), 1.0)
    # one example of the other class comes back: exact again
    tracked_increment(model, ledger, X[negatives[:1]], y[negatives[:1]], ids=["neg0"])
    assert_exact(model, ledger)
    tracked_increment(model, ledger, X[negatives[1:]], y[negatives[1:]])
    assert_exact(model, ledger)


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
def test_no_example_left_then_relearn(kernel, batch):
    X, y = synthetic(60, 3, seed=29)
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel), X, y)
    gamma = model.gamma_
    receipt = model.decrement(model.ids_, batch=batch, audit=True)
    assert len(receipt.removed_ids) == 60
    assert receipt.kkt_violation == 0.0
    # documented: no example left -> decision 0, predict classes_[1] (SVC's
    # rule for a point on the boundary)
    assert model.n_active_ == 0 and len(model.ids_) == 0
    np.testing.assert_array_equal(model.decision_function(X), 0.0)
    np.testing.assert_array_equal(model.predict(X), 1)
    assert len(model.margin_) == len(model.error_) == len(model.reserve_) == 0
    assert model.kkt_violation() == 0.0
    assert model.gamma_ == gamma  # frozen
    # one example: one class, constant decision of that class
    tracked_increment(model, ledger, X[:1], y[:1], ids=["first"])
    np.testing.assert_array_equal(model.decision_function(X), 1.0 if y[0] == 1 else -1.0)
    # everything again, as one block: the model equals the original fit
    tracked_increment(model, ledger, X, y, ids=[f"again{k}" for k in range(60)])
    assert_exact(model, ledger)


def test_one_class_left_multiclass_head():
    X, y = synthetic(120, 4, seed=31, n_classes=3)
    model, ledger = tracked_fit(CPSVM(C=1.0), X, y)
    model.decrement(np.flatnonzero(y == 2))
    f = model.decision_function(X)
    # the head of the vanished class sees only negatives: constant -1
    np.testing.assert_array_equal(f[:, 2], -1.0)
    assert not np.any(model.predict(X) == 2)
    assert_exact(model, ledger)
    model.decrement(np.flatnonzero(y == 1))  # one class left in total
    f = model.decision_function(X)
    np.testing.assert_array_equal(f, np.tile([1.0, -1.0, -1.0], (len(y), 1)))
    np.testing.assert_array_equal(model.predict(X), 0)
    assert_exact(model, ledger)


# ----------------------------------------- linearly dependent margin vectors


def _on_margin_data(n_per_side=8, d=2, seed=0):
    """Points on the two margin hyperplanes x_0 = +-1 (and some beyond).

    The max-margin separator is w = e_0, b = 0, so every point on x_0 = +-1
    has y f(x) = 1 exactly: many more margin points than d + 1.
    """
    rng = np.random.default_rng(seed)
    on = rng.uniform(-3, 3, size=(2 * n_per_side, d))
    on[:n_per_side, 0] = 1.0
    on[n_per_side:, 0] = -1.0
    far = rng.uniform(-3, 3, size=(6, d))
    far[:3, 0] = rng.uniform(2, 4, 3)
    far[3:, 0] = -rng.uniform(2, 4, 3)
    X = np.vstack([on, far])
    y = np.concatenate([np.ones(n_per_side), -np.ones(n_per_side), [1, 1, 1, -1, -1, -1]])
    return X, y.astype(np.int64)


@pytest.mark.parametrize("method", ["batch", "incremental"])
def test_linear_more_margin_points_than_d_plus_1(method):
    """Many more points with y f(x) = 1 than d + 1 (dependent margin vectors).

    The solution is known in closed form, f(x) = x_0, which serves as the
    independent reference: libsvm at tol=1e-12 needs minutes on this flat
    problem (tens of millions of iterations), so it is not used here.
    """
    X, y = _on_margin_data()
    d = X.shape[1]
    model = CPSVM(C=1.0, kernel="linear").fit(X, y, method=method)
    ledger = Ledger(d)
    ledger.add(X, y)

    def check():
        f = model.decision_function(X)
        np.testing.assert_allclose(f, X[:, 0], rtol=0, atol=1e-9)
        assert_certified(model)

    check()
    f = model.decision_function(X)
    on_margin = np.abs(np.where(y == 1, f, -f) - 1.0) < 1e-9
    assert on_margin.sum() == 16 > d + 1
    assert len(model.margin_) <= d + 1  # at most d + 1 independent margin vectors
    # remove margin vectors one by one and in a batch; learn new on-margin points
    model.decrement(model.margin_[:1])
    check()
    model.decrement(model.margin_[:2], batch=True)
    check()
    X2, y2 = _on_margin_data(seed=1)
    model.increment(X2[:4], y2[:4])
    model.increment(X2[8:12], y2[8:12])
    check()


# ------------------------------------------------------- zero sample weights


@pytest.mark.parametrize("kernel", KERNELS)
def test_zero_weight_rows_are_absent_rows(kernel):
    X, y = synthetic(120, 4, seed=37)
    sw = np.ones(len(y))
    zero = np.arange(0, 120, 5)
    sw[zero] = 0.0
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel, gamma=0.4), X, y, sample_weight=sw)
    keep = np.setdiff1d(np.arange(120), zero)
    without = CPSVM(C=1.0, kernel=kernel, gamma=0.4).fit(X[keep], y[keep])
    assert_same_model(model, without, X, 1e-9, "zero weight vs absent")
    assert set(zero.tolist()) <= set(model.reserve_.tolist())
    assert_exact(model, ledger)
    # a zero-weight row is dropped without moving anything
    receipt = model.decrement(zero[:3])
    assert set(receipt.paths.values()) == {"reserve_drop"}
    assert_same_model(model, without, X, 0.0, "after dropping zero-weight rows")
    # a zero-weight increment changes no decision value
    tracked_increment(model, ledger, X[:5] + 0.5, 1 - y[:5], sample_weight=np.zeros(5))
    assert_same_model(model, without, X, 1e-12, "after a zero-weight increment")
    assert_exact(model, ledger)


def test_fit_all_zero_weights_raises():
    """scikit-learn's convention (SVC, check_all_zero_sample_weights_error)."""
    X, y = synthetic(30, 3, seed=41)
    with pytest.raises(InvalidInputError):
        CPSVM().fit(X, y, sample_weight=np.zeros(30))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_positive_weights_on_one_class_only(kernel):
    """Every row of one class has weight 0: as if that class were absent."""
    X, y = synthetic(40, 3, seed=43)
    sw = np.where(y == 0, 0.0, 1.0)
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel), X, y, sample_weight=sw)
    np.testing.assert_array_equal(model.decision_function(X), 1.0)
    assert_exact(model, ledger)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_decrement_leaving_only_zero_weight_rows_of_one_class(kernel):
    X, y = synthetic(40, 3, seed=47)
    sw = np.ones(40)
    sw[:10] = 0.0
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel), X, y, sample_weight=sw)
    # remove the positive-weight positives: the positives left weigh nothing
    model.decrement([i for i in range(10, 40) if y[i] == 1])
    np.testing.assert_array_equal(model.decision_function(X), -1.0)
    assert_exact(model, ledger)
    # remove every positive-weight row: no example constrains the model
    model.decrement([i for i in range(10, 40) if y[i] == 0])
    np.testing.assert_array_equal(model.decision_function(X), 0.0)
    assert_exact(model, ledger)


def test_refit_helper_matches_after_degenerate_sequence():
    """Grid data, a long mixed sequence: the final model equals a fresh fit."""
    X, y = _grid(n_side=5, reps=3, seed=2)
    model, ledger = tracked_fit(CPSVM(C=2.0, kernel="rbf", gamma=0.7), X, y)
    rng = np.random.default_rng(11)
    for _ in range(6):
        model.decrement(rng.choice(model.ids_, size=5, replace=False), batch=True)
        model.decrement(rng.choice(model.ids_, size=2, replace=False), batch=False)
    refit = refit_from_scratch(model, ledger)
    assert_same_model(model, refit, X, 1e-9, "sequence vs fresh fit")
    assert_exact(model, ledger)


def test_ledger_tracks_custom_ids():
    """The helpers follow custom (string) ids through updates."""
    X, y = synthetic(50, 3, seed=53)
    ids = [f"row{k}" for k in range(50)]
    model, ledger = tracked_fit(CPSVM(), X, y, ids=ids)
    assert isinstance(ledger, Ledger)
    model.decrement(["row3", "row7"])
    assert_exact(model, ledger)
    assert "row3" not in model.ids_.tolist()


@pytest.mark.parametrize("method", ["batch", "incremental"])
@pytest.mark.parametrize("C", [2.0, 3.0])
def test_linear_uniform_cube_does_not_cycle(method, C):
    """Regression: a linear kernel on 22 uniform points in 3-D once cycled among
    tied events until the step bound, and fit raised UnlearningError."""
    X = np.random.RandomState(0).uniform(size=(30, 3))[:22]
    y = (np.arange(22) % 3 == 0).astype(np.int64)
    model, ledger = tracked_fit(CPSVM(C=C, kernel="linear"), X, y, method=method)
    # svc=False: libsvm at tol=1e-12 needs seconds here; the reference has one run
    assert_exact(model, ledger, svc=False)
    model.decrement(model.margin_[:2])
    assert_exact(model, ledger, svc=False)


def test_digest_deterministic_with_empty_margin_set():
    """Regression: with no margin vector the digest hashed uninitialised memory
    (the 1x1 inverse bordered matrix), so equal models had different digests."""
    X = np.zeros((3, 2))
    y = np.array([0, 0, 1])

    def run():
        model = CPSVM(C=0.1, kernel="linear").fit(X, y)
        assert len(model.margin_) == 0
        first = model.state_digest()
        model.increment(np.array([[2.0, 0.0]]), np.array([0]))
        return model, (first, model.state_digest())

    # keep the models alive, so that each gets fresh memory
    runs = [run() for _ in range(3)]
    assert len({digests for _, digests in runs}) == 1


@pytest.mark.parametrize("method", ["batch", "incremental"])
def test_extreme_class_weights_linear_do_not_cycle(method):
    """Regression (from check_class_weight_classifiers): class weights 1000 and
    1e-4 on noisy blobs with a linear kernel cycle until the step bound and
    fit raises UnlearningError."""
    from sklearn.datasets import make_blobs
    from sklearn.model_selection import train_test_split

    X, y = make_blobs(centers=3, random_state=0, cluster_std=20)
    X, _, y, _ = train_test_split(X, y, test_size=0.5, random_state=0)
    y = (y == 0).astype(np.int64)
    model = CPSVM(kernel="linear", class_weight={1: 1000.0, 0: 1e-4})
    model.fit(X, y, method=method)
    ledger = Ledger(2)
    ledger.add(X, y)
    assert_exact(model, ledger, svc=False)
