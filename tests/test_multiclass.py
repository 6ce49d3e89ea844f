"""More than two classes: one-versus-rest heads sharing one kernel store.

Each head must be the binary SVM of its class against the rest, trained from
scratch, after fit and after every update; threads over the heads must not
change a single bit of the state.
"""

import numpy as np
import pytest
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from eco import CPSVM
from exact_helpers import (
    assert_close,
    assert_exact,
    assert_same_model,
    model_decisions,
    synthetic,
    tracked_fit,
    tracked_increment,
)

KERNELS = ["linear", "rbf", "poly"]


def _digits_4(digits, n=360):
    """Digits 0 to 3 (about 90 of each): a small 4-class problem."""
    X, y = digits
    keep = np.flatnonzero(y < 4)[:n]
    return np.array(X[keep]), np.array(y[keep])


def _assert_heads_are_binary_models(model, X_act, y_act, X_eval, tol=1e-9):
    """Each head equals a binary CPSVM fitted on the one-vs-rest labels."""
    f = model_decisions(model, X_eval)
    assert f.shape[1] == len(model.classes_)
    for h, c in enumerate(model.classes_):
        yb = (y_act == c).astype(np.int64)
        if len(np.unique(yb)) < 2:
            expected = np.full(len(X_eval), 1.0 if yb[0] == 1 else -1.0)
        else:
            binary = CPSVM(C=model.C, kernel=model.kernel, gamma=model.gamma_,
                           degree=model.degree, coef0=model.coef0).fit(X_act, yb)
            expected = binary.decision_function(X_eval)
        assert_close(f[:, h], expected, tol, f"head {h} (class {c}) vs binary model")


@pytest.mark.parametrize("kernel", KERNELS)
def test_heads_equal_binary_models_after_fit_and_decrements(digits, kernel):
    X, y = _digits_4(digits)
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel), X, y)
    assert model.intercept_.shape == (4,) and model.alpha_.shape == (4, len(y))
    assert_exact(model, ledger)
    _assert_heads_are_binary_models(model, X, y, X)
    rng = np.random.default_rng(0)
    for step in range(4):
        # support vectors of one head are often reserve vectors of another
        head = step % 4
        ids = np.concatenate([model.margin_[head][:2], model.error_[head][:1],
                              rng.choice(model.reserve_[head], 2, replace=False)])
        model.decrement(ids, batch=bool(step % 2))
        assert_exact(model, ledger, svc=(step == 3))
    active = model.ids_
    _assert_heads_are_binary_models(model, X[active], y[active], X)
    # a batch that is all of one class, then increments that bring it back
    model.decrement(np.intersect1d(active, np.flatnonzero(y == 2)))
    assert_exact(model, ledger)
    np.testing.assert_array_equal(model.decision_function(X)[:, 2], -1.0)
    Xn, yn = digits
    extra = np.flatnonzero(np.asarray(yn) < 4)[400:420]
    tracked_increment(model, ledger, np.array(Xn[extra]), np.array(yn[extra]),
                      ids=[f"new{k}" for k in extra])
    assert_exact(model, ledger)


@pytest.mark.parametrize("n_classes", [3, 5])
def test_synthetic_multiclass_sequence(n_classes):
    X, y = synthetic(150, 5, seed=61, n_classes=n_classes)
    model, ledger = tracked_fit(CPSVM(C=0.5), X[:130], y[:130])
    assert_exact(model, ledger, X)
    model.decrement(model.support_ids_[:10], batch=True)
    assert_exact(model, ledger, X)
    model.decrement(model.support_ids_[:5], batch=False)
    assert_exact(model, ledger, X)
    tracked_increment(model, ledger, X[130:], y[130:])
    assert_exact(model, ledger, X)


def test_support_ids_is_the_union_over_heads():
    X, y = synthetic(100, 4, seed=67, n_classes=3)
    model = CPSVM(C=1.0).fit(X, y)
    union = set()
    for m, e in zip(model.margin_, model.error_):
        union |= set(m.tolist()) | set(e.tolist())
    assert sorted(model.support_ids_.tolist()) == sorted(union)


def test_digits_accuracy_close_to_svc(digits):
    """Whole digits, 75/25 split: within half a point of SVC with the same gamma.

    SVC is one-versus-one and CPSVM one-versus-rest, so the models differ;
    the check is that the heads are good classifiers, not identical ones.
    """
    X, y = digits
    X_tr, X_te, y_tr, y_te = train_test_split(np.array(X), np.array(y), test_size=0.25,
                                              random_state=0, stratify=y)
    model = CPSVM(C=1.0).fit(X_tr, y_tr)
    svc = SVC(C=1.0, gamma=model.gamma_).fit(X_tr, y_tr)
    ours, theirs = model.score(X_te, y_te), svc.score(X_te, y_te)
    assert theirs > 0.95
    assert abs(ours - theirs) <= 0.005, (ours, theirs)
    assert model.kkt_violation() < 1e-8
    # and after unlearning 10% of the training rows
    rng = np.random.default_rng(1)
    gone = rng.choice(len(y_tr), size=len(y_tr) // 10, replace=False)
    model.decrement(gone)
    keep = np.setdiff1d(np.arange(len(y_tr)), gone)
    svc = SVC(C=1.0, gamma=model.gamma_).fit(X_tr[keep], y_tr[keep])
    assert abs(model.score(X_te, y_te) - svc.score(X_te, y_te)) <= 0.005
    assert model.kkt_violation() < 1e-8


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_n_jobs_2_equals_n_jobs_1(digits, kernel):
    X, y = _digits_4(digits, n=300)
    one = CPSVM(C=1.0, kernel=kernel, n_jobs=1).fit(X, y)
    two = CPSVM(C=1.0, kernel=kernel, n_jobs=2).fit(X, y)
    assert one.state_digest() == two.state_digest()
    ids = np.concatenate([one.margin_[0][:3], one.error_[1][:2], one.reserve_[2][:3]])
    for m in (one, two):
        m.decrement(ids)
    assert one.state_digest() == two.state_digest()
    for m in (one, two):
        m.decrement(m.support_ids_[:4], batch=False)
        m.increment(X[:7] * 0.9, y[:7])
    assert one.state_digest() == two.state_digest()
    assert_same_model(one, two, X, 0.0, "n_jobs=1 vs n_jobs=2")
    all_cores = CPSVM(C=1.0, kernel=kernel, n_jobs=-1).fit(X, y)
    assert all_cores.state_digest() == CPSVM(C=1.0, kernel=kernel).fit(X, y).state_digest()
