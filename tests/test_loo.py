"""Exact leave-one-out decisions against brute-force refits."""

import numpy as np
import pytest

from eco import CPSVM
from eco.reference import reference_kernel, reference_solve
from eco.testing import active_data, fail_on_call, path_fault
from exact_helpers import noisy_classes


def _data(n, n_classes=2, d=4, seed=0):
    return noisy_classes(n=n, n_classes=n_classes, d=d, noise=0.8, seed=seed)


def _brute_force_reference(model):
    """LOO decisions by reference_solve on the active rows without each one in turn."""
    rows, labels, C = active_data(model)
    if model.kernel == "precomputed":
        K = rows
    else:
        K = reference_kernel(rows, rows, model.kernel, model.gamma_, model.degree, model.coef0)
    n_heads = 1 if len(model.classes_) == 2 else len(model.classes_)
    active = np.arange(len(labels))
    out = np.empty((len(active), n_heads))
    for h in range(n_heads):
        y = np.where(labels == model.classes_[1 if n_heads == 1 else h], 1.0, -1.0)
        for i in range(len(active)):
            keep = np.delete(np.arange(len(active)), i)
            sol = reference_solve(K[np.ix_(keep, keep)], y[keep], C[keep])
            out[i, h] = K[i, keep] @ (sol.alpha * y[keep]) + sol.b
    return out[:, 0] if n_heads == 1 else out


def _brute_force_refit(model, X, y, sw=None, rows=None):
    """LOO decisions by CPSVM fits from scratch with the frozen hyper-parameters."""
    rows = np.arange(len(y)) if rows is None else rows
    cw = dict(zip(model.classes_.tolist(), model.class_weight_.tolist()))
    out = []
    for i in rows:
        keep = np.delete(np.arange(len(y)), i)
        m = CPSVM(C=model.C, kernel=model.kernel, gamma=model.gamma_, degree=model.degree,
                  coef0=model.coef0, class_weight=cw)
        m.fit(X[keep], y[keep], sample_weight=None if sw is None else sw[keep])
        out.append(m.decision_function(X[i:i + 1])[0])
    return np.array(out)


@pytest.mark.parametrize("kernel, C", [("rbf", 1.0), ("rbf", 20.0), ("linear", 0.5),
                                       ("poly", 1.0)])
def test_binary_matches_reference_refits(kernel, C):
    X, y = _data(80, seed=1)
    m = CPSVM(C=C, kernel=kernel, degree=2, coef0=1.0).fit(X, y)
    digest = m.state_digest()
    f = m.loo_decision()
    assert f.shape == (80,)
    assert m.state_digest() == digest
    ref = _brute_force_reference(m)
    assert np.max(np.abs(f - ref)) < 1e-9
    # the LOO values differ from the training decisions for support vectors
    train = m.decision_function(X)
    assert np.max(np.abs(f - train)) > 1e-3
    err = m.loo_error()
    assert err == np.mean(np.where(ref > 0, 1, 0) != y)


def test_binary_matches_cpsvm_refits_with_sample_weights():
    X, y = _data(60, seed=2)
    sw = np.random.default_rng(2).uniform(0.2, 3.0, size=60)
    sw[[4, 9]] = 0.0  # zero bound: alpha is 0 whatever happens
    m = CPSVM(C=2.0, class_weight="balanced").fit(X, y, sample_weight=sw)
    f = m.loo_decision()
    ref = _brute_force_refit(m, X, y, sw)
    assert np.max(np.abs(f - ref)) < 1e-9


@pytest.mark.parametrize("n_classes, kernel, seed", [
    (3, "rbf", 3), (4, "rbf", 3), (3, "poly", 3),
    # a quadratic kernel in 4 dimensions has rank 10: more margin vectors
    # than that are linearly dependent (the degenerate case of the CP note)
    (4, "poly", 3),
])
def test_multiclass_matches_reference_refits(n_classes, kernel, seed):
    X, y = _data(60, n_classes=n_classes, seed=seed)
    m = CPSVM(C=2.0, kernel=kernel, degree=2).fit(X, y)
    digest = m.state_digest()
    f = m.loo_decision()
    assert f.shape == (60, n_classes)
    assert m.state_digest() == digest
    if kernel == "poly":
        # libsvm needs minutes per solve on these rank-deficient problems;
        # fits from scratch (batch seed + polish, no decrement) stand in.
        # With dependent margin vectors the engine ignores gradient rates at
        # the level of rounding noise, so both sides are exact to their
        # certificate (< 1e-8), and their decision values agree to that scale
        ref = _brute_force_refit(m, X, y)
        tol = 1e-7
    else:
        ref = _brute_force_reference(m)
        tol = 1e-9
    assert np.max(np.abs(f - ref)) < tol
    assert m.loo_error() == np.mean(m.classes_[np.argmax(ref, axis=1)] != y)


def test_multiclass_matches_cpsvm_refits():
    X, y = _data(60, n_classes=3, seed=4)
    m = CPSVM(C=1.0).fit(X, y)
    rows = np.arange(0, 60, 7)
    f = m.loo_decision()[rows]
    ref = _brute_force_refit(m, X, y, rows=rows)
    assert np.max(np.abs(f - ref)) < 1e-9


def test_precomputed_kernel():
    X, y = _data(70, seed=5)
    K = reference_kernel(X, X, "rbf", 0.4, 3, 0.0)
    m = CPSVM(C=3.0, kernel="precomputed").fit(K, y)
    mf = CPSVM(C=3.0, gamma=0.4).fit(X, y)
    f = m.loo_decision()
    assert np.max(np.abs(f - _brute_force_reference(m))) < 1e-9
    assert np.max(np.abs(f - mf.loo_decision())) < 1e-9


def test_after_updates_rows_follow_ids():
    """Inactive slots are skipped; rows are in ids_ order."""
    X, y = _data(120, n_classes=3, seed=6)
    # numeric gamma: loo_decision holds gamma_ fixed, a decrement with
    # gamma="scale" re-resolves it on the remaining rows
    m = CPSVM(C=1.5, gamma=0.3).fit(X[:90], y[:90], ids=[f"a{i}" for i in range(90)])
    m.increment(X[90:], y[90:], ids=[f"b{i}" for i in range(30)])
    m.decrement([f"a{i}" for i in range(0, 90, 6)], batch=True)
    m.decrement(["b3", "b7"], batch=False)
    f = m.loo_decision()
    assert f.shape == (m.n_active_, 3)
    assert np.max(np.abs(f - _brute_force_reference(m))) < 1e-9
    # row k belongs to ids_[k]: compare one row with a decrement of that id
    k = 11
    target = m.ids_[k]
    X_target = active_data(m)[0][k:k + 1]
    m.decrement([target])
    assert np.max(np.abs(m.decision_function(X_target)[0] - f[k])) < 1e-9


def test_no_margin_vector_inside_box():
    """Tiny C: every alpha at a bound, b is an interval midpoint that reserve drops can move."""
    X, y = _data(60, seed=7)
    m = CPSVM(C=1e-3).fit(X, y)
    f = m.loo_decision()
    assert np.max(np.abs(f - _brute_force_reference(m))) < 1e-9


def test_later_updates_unaffected_by_loo():
    X, y = _data(100, n_classes=3, seed=8)
    a = CPSVM(C=1.0).fit(X[:80], y[:80])
    b = CPSVM(C=1.0).fit(X[:80], y[:80])
    assert a.state_digest() == b.state_digest()
    a.loo_decision()
    rng = np.random.default_rng(0)
    for step in range(5):
        ids = rng.choice(a.ids_, 3, replace=False)
        assert a.decrement(ids, audit=True).digest_after == b.decrement(ids, audit=True).digest_after
    a.increment(X[80:], y[80:])
    b.increment(X[80:], y[80:])
    assert a.state_digest() == b.state_digest()


def test_path_failure_falls_back_to_exact_resolve():
    """With the engine's fault hook on, LOO re-solves from scratch and stays exact."""
    X, y = _data(50, seed=9)
    m = CPSVM(C=1.0).fit(X, y)
    digest = m.state_digest()
    expected = m.loo_decision()
    with path_fault(m, 0, 0):
        f = m.loo_decision()
    assert np.max(np.abs(f - expected)) < 1e-9
    assert m.state_digest() == digest


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupt_leaves_model_unchanged(exc):
    X, y = _data(60, n_classes=3, seed=10)
    m = CPSVM(C=1.0).fit(X, y)
    digest = m.state_digest()
    # head 1 takes the re-solve branch; its third re-solve is interrupted
    with path_fault(m, 1, 1), fail_on_call(m, "solve", 3, exc("stop")) as calls:
        with pytest.raises(exc):
            m.loo_decision()
    assert len(calls) == 3
    assert m.state_digest() == digest
    assert m.kkt_violation() < 1e-8


def test_n_jobs_gives_the_same_values():
    X, y = _data(60, n_classes=3, seed=11)
    f1 = CPSVM(C=1.0).fit(X, y).loo_decision()
    f2 = CPSVM(C=1.0, n_jobs=2).fit(X, y).loo_decision()
    assert np.array_equal(f1, f2)


def test_loo_error_counts_a_zero_decision_as_the_second_class_as_predict_does():
    """Two rows at 0 of each class, one of each other: the LOO decision of a row at 0
    is exactly 0, which predict (and so a refit without it) calls classes_[1].
    loo_error once counted it as classes_[0]: 0.4 where the refits give 0.8."""
    X = np.array([[-1.0], [1.0], [0.0], [0.0], [0.0]])
    y = np.array([0, 1, 0, 1, 0])
    m = CPSVM(kernel="linear").fit(X, y)
    f = m.loo_decision()
    errors = 0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        refit = CPSVM(kernel="linear").fit(X[keep], y[keep])
        assert abs(refit.decision_function(X[i:i + 1])[0] - f[i]) < 1e-12
        errors += int(refit.predict(X[i:i + 1])[0] != y[i])
    assert np.any(f == 0.0)  # the tie is there
    assert m.loo_error() == pytest.approx(errors / len(y))
