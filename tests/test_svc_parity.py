"""Drop-in parity with scikit-learn's SVC at the edges.

Ported from scikit-learn's own ``sklearn/svm/tests/test_svm.py`` (test_weight,
test_auto_weight, test_gamma_scale) and extended to the edges where eco and
SVC used to disagree: points exactly on the boundary, class weights naming
labels absent from y, and ``gamma=0`` (a constant kernel).
"""

import numpy as np
import pytest
from sklearn import metrics
from sklearn.datasets import load_iris, make_classification
from sklearn.svm import SVC

from eco import CPSVM
from eco.exceptions import InvalidInputError

# scikit-learn's toy sample
X_TOY = np.array([[-2, -1], [-1, -1], [-1, -2], [1, 1], [1, 2], [2, 1]], dtype=float)
Y_TOY = np.array([1, 1, 1, 2, 2, 2])

# symmetric integer data: the boundary passes through the test points
X_SYM = np.array([[-1, 0], [1, 0], [0, 1], [0, -1]], dtype=float)
Y_SYM = np.array([0, 1, 0, 1])
T_SYM = np.array([[0, 0], [1, 1], [-1, -1], [2, 2]], dtype=float)


def _svc_like(model):
    weights = dict(zip(model.classes_.tolist(), model.class_weight_.tolist()))
    return SVC(C=model.C, kernel=model.kernel, gamma=model.gamma_, degree=model.degree,
               coef0=model.coef0, class_weight=weights, tol=1e-12, shrinking=False)


# ----------------------------------------------------------- ported from sklearn


def test_weight():
    # sklearn: a small weight on class 1 makes every prediction class 2
    clf = CPSVM(class_weight={1: 0.1}).fit(X_TOY, Y_TOY)
    np.testing.assert_array_equal(clf.predict(X_TOY), [2] * 6)
    X, y = make_classification(n_samples=200, n_features=10, weights=[0.833, 0.167],
                               random_state=2)
    clf = CPSVM(class_weight={0: 0.1, 1: 10}).fit(X[:100], y[:100])
    assert metrics.f1_score(y[100:], clf.predict(X[100:])) > 0.3


def test_auto_weight():
    # sklearn: "balanced" does better on an unbalanced 2-D projection of iris
    X, y = load_iris(return_X_y=True)
    X, y = X[:, :2], y + 1
    unbalanced = np.delete(np.arange(y.size), np.where(y > 2)[0][::2])
    clf = CPSVM(kernel="linear")
    y_pred = clf.fit(X[unbalanced], y[unbalanced]).predict(X)
    clf.set_params(class_weight="balanced")
    y_pred_balanced = clf.fit(X[unbalanced], y[unbalanced]).predict(X)
    assert (metrics.f1_score(y, y_pred, average="macro")
            <= metrics.f1_score(y, y_pred_balanced, average="macro"))


def test_gamma_scale():
    clf = CPSVM().fit([[0.0], [1.0]], [0, 1])
    assert clf.gamma_ == pytest.approx(4.0)


# --------------------------------------------------------------- the boundary


@pytest.mark.parametrize("kernel", ["linear", "rbf", "poly"])
def test_points_on_the_boundary_follow_svc(kernel):
    clf = CPSVM(kernel=kernel, gamma=0.5, coef0=1.0, degree=2).fit(X_SYM, Y_SYM)
    svc = _svc_like(clf).fit(X_SYM, Y_SYM)
    f, f_svc = clf.decision_function(T_SYM), svc.decision_function(T_SYM)
    np.testing.assert_allclose(f, f_svc, atol=1e-6)
    assert np.all(np.abs(f) < 1e-9)  # the symmetric points lie on the boundary
    # where a decision is exactly 0, both predict classes_[1]; elsewhere the
    # sign of rounding noise decides, and each follows its own sign
    np.testing.assert_array_equal(clf.predict(T_SYM), np.where(f >= 0, 1, 0))
    np.testing.assert_array_equal(svc.predict(T_SYM), np.where(f_svc >= 0, 1, 0))
    if kernel == "linear":
        np.testing.assert_array_equal(f, 0.0)
        np.testing.assert_array_equal(clf.predict(T_SYM), svc.predict(T_SYM))


def test_exact_zero_decision_predicts_classes_1():
    # constant X: every decision is exactly 0 and SVC predicts classes_[1]
    X = np.ones((6, 2))
    y = np.array(["a", "a", "a", "b", "b", "b"])
    clf = CPSVM(kernel="linear").fit(X, y)
    svc = SVC(kernel="linear").fit(X, y)
    np.testing.assert_array_equal(clf.decision_function(X), 0.0)
    np.testing.assert_array_equal(clf.predict(X), svc.predict(X))
    np.testing.assert_array_equal(clf.predict(X), "b")


def test_poly_of_degree_zero_is_constant():
    clf = CPSVM(kernel="poly", degree=0).fit(X_SYM, Y_SYM)
    svc = SVC(kernel="poly", degree=0).fit(X_SYM, Y_SYM)
    np.testing.assert_allclose(clf.decision_function(T_SYM), svc.decision_function(T_SYM),
                               atol=1e-9)
    np.testing.assert_array_equal(clf.predict(T_SYM), svc.predict(T_SYM))


def test_multiclass_tie_goes_to_the_first_tied_class():
    # one-versus-rest argmax: ties go to the first class in classes_, as SVC
    # with break_ties=True; documented in CPSVM.predict
    X = np.ones((6, 2))
    y = np.array([0, 0, 1, 1, 2, 2])
    clf = CPSVM(kernel="linear").fit(X, y)
    f = clf.decision_function(X)
    assert np.all(f == f[:, :1])
    np.testing.assert_array_equal(clf.predict(X), 0)
    svc = SVC(kernel="linear", break_ties=True).fit(X, y)
    np.testing.assert_array_equal(clf.predict(X), svc.predict(X))


def test_empty_and_one_class_models_follow_the_rule():
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    clf = CPSVM(gamma=0.3).fit(X, y)
    clf.decrement(np.flatnonzero(y == 0).tolist())
    np.testing.assert_array_equal(clf.decision_function(X), 1.0)  # one class: +1
    np.testing.assert_array_equal(clf.predict(X), 1)
    clf.decrement(clf.ids_.tolist())
    np.testing.assert_array_equal(clf.decision_function(X), 0.0)  # no example: 0
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[1])
    X3, y3 = make_classification(n_samples=60, n_features=4, n_informative=3, n_redundant=0,
                                 n_classes=3, random_state=0)
    multi = CPSVM(gamma=0.3).fit(X3, y3)
    multi.decrement(multi.ids_.tolist())
    np.testing.assert_array_equal(multi.predict(X3), multi.classes_[0])


# -------------------------------------------------------------- class weights


def test_class_weight_naming_an_absent_label_is_accepted():
    # a fixed dict across cross-validation folds where a fold lacks a class
    weights = {1: 0.5, 2: 2.0, 3: 7.0}
    clf = CPSVM(class_weight=weights, gamma=0.5).fit(X_TOY, Y_TOY)
    same = CPSVM(class_weight={1: 0.5, 2: 2.0}, gamma=0.5).fit(X_TOY, Y_TOY)
    np.testing.assert_array_equal(clf.class_weight_, [0.5, 2.0])
    np.testing.assert_array_equal(clf.decision_function(X_TOY), same.decision_function(X_TOY))
    svc = SVC(class_weight=weights, gamma=0.5).fit(X_TOY, Y_TOY)  # SVC accepts it too
    np.testing.assert_array_equal(clf.predict(X_TOY), svc.predict(X_TOY))


def test_class_weight_missing_a_class_gets_one():
    clf = CPSVM(class_weight={2: 3.0}, gamma=0.5).fit(X_TOY, Y_TOY)
    np.testing.assert_array_equal(clf.class_weight_, [1.0, 3.0])


def test_class_weight_raises_when_a_present_class_has_no_weight():
    # an absent label and a present class without weight: probably mistyped;
    # SVC raises too
    weights = {1: 0.5, 3: 7.0}
    with pytest.raises(ValueError):
        SVC(class_weight=weights).fit(X_TOY, Y_TOY)
    clf = CPSVM(class_weight=weights)
    with pytest.raises(InvalidInputError, match=r"\[3\] \(not in y\).*\[2\]"):
        clf.fit(X_TOY, Y_TOY)
    assert not hasattr(clf, "classes_")


def test_class_weight_must_be_a_non_negative_number():
    for bad in ({1: -1.0}, {1: np.nan}, {1: "heavy"}, {7: -1.0}):
        with pytest.raises(InvalidInputError, match="class_weight"):
            CPSVM(class_weight=bad).fit(X_TOY, Y_TOY)


# ------------------------------------------------------------------- gamma = 0


@pytest.mark.parametrize("kernel, coef0", [("rbf", 0.0), ("poly", 1.0), ("poly", 2.0)])
def test_gamma_zero_is_a_constant_kernel(kernel, coef0):
    X, y = make_classification(n_samples=30, n_features=3, n_informative=2, n_redundant=0,
                               random_state=1)
    clf = CPSVM(kernel=kernel, gamma=0, coef0=coef0).fit(X, y)
    assert clf.gamma_ == 0.0
    assert clf.kkt_violation() < 1e-8
    svc = SVC(kernel=kernel, gamma=0, coef0=coef0, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(clf.decision_function(X), svc.decision_function(X), atol=1e-6)
    np.testing.assert_array_equal(clf.predict(X), svc.predict(X))
    # and stays exact through updates
    clf.decrement([0, 1, 2])
    clf.increment(X[:2], y[:2], ids=["a", "b"])
    assert clf.kkt_violation() < 1e-8


def test_negative_gamma_is_refused():
    with pytest.raises(InvalidInputError, match="non-negative"):
        CPSVM(gamma=-0.1).fit(X_TOY, Y_TOY)
