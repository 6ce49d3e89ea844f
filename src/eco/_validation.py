"""Validation of the estimator's parameters and inputs (scikit-learn's checks, eco's exceptions).

Functions take the estimator where a check depends on its parameters or
fitted attributes; none changes it, except ``validate_data`` with
``reset=True`` at fit (which sets ``n_features_in_``).
"""

from numbers import Integral, Real

import numpy as np
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ._kernels import check_kernel_params, resolve_gamma
from .exceptions import DuplicateIdError, InvalidInputError, UnknownIdError, UnseenLabelError


def check_params(est):
    if isinstance(est.C, bool) or not isinstance(est.C, Real) or not np.isfinite(est.C) \
            or est.C <= 0:
        raise InvalidInputError(f"C must be a positive finite number, got {est.C!r}")
    check_kernel_params(est.kernel, est.degree, est.coef0)
    if isinstance(est.gamma, str):
        if est.gamma not in ("scale", "auto"):
            raise InvalidInputError(
                f"gamma must be 'scale', 'auto' or a non-negative float, got {est.gamma!r}")
    else:
        resolve_gamma(est.gamma, None, "rbf")
    if est.n_jobs is not None and (isinstance(est.n_jobs, bool)
                                    or not isinstance(est.n_jobs, Integral)
                                    or est.n_jobs == 0):
        raise InvalidInputError(f"n_jobs must be None or a non-zero integer, got {est.n_jobs!r}")
    if est.max_steps is not None and (isinstance(est.max_steps, bool)
                                       or not isinstance(est.max_steps, Integral)
                                       or est.max_steps < 1):
        raise InvalidInputError(f"max_steps must be None or a positive integer, got {est.max_steps!r}")
    if not (est.class_weight is None or est.class_weight == "balanced"
            or isinstance(est.class_weight, dict)):
        raise InvalidInputError(
            f"class_weight must be None, 'balanced' or a dict, got {est.class_weight!r}")


def check_features(est, X, what):
    """Validate new feature rows against the fitted ones (scikit-learn's checks and messages)."""
    if est.kernel == "precomputed":
        return check_X(X, n_columns=est.head_set_.n_slots, what=what)
    reject_non_numeric(X, what)
    try:
        X = validate_data(est, X, dtype=np.float64, order="C", reset=False)
    except ValueError as exc:
        raise InvalidInputError(f"{what}: {exc}") from exc
    return X


def check_X(X, *, n_columns, what):
    """Validate a 2-D finite float array with `n_columns` columns."""
    try:
        X = np.asarray(X)
    except Exception as exc:  # ragged input and the like
        raise InvalidInputError(f"{what}: could not convert to an array ({exc})") from exc
    reject_non_numeric(X, what)
    if X.dtype == object:
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{what}: expected numeric values ({exc})") from exc
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise InvalidInputError(f"{what}: expected numeric values, got dtype {X.dtype}")
    if np.iscomplexobj(X):
        raise InvalidInputError(f"{what}: complex values are not supported")
    if X.ndim != 2:
        raise InvalidInputError(
            f"{what}: expected a 2-D array of shape (n_samples, {n_columns}), got shape {X.shape}")
    if X.shape[0] == 0:
        raise InvalidInputError(f"{what}: no rows given (shape {X.shape})")
    if X.shape[1] != n_columns:
        raise InvalidInputError(
            f"{what}: expected {n_columns} columns, got {X.shape[1]} (shape {X.shape})")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        kind = "NaN" if np.isnan(X).any() else "infinite"
        raise InvalidInputError(f"{what}: input contains {kind} values")
    return X


def check_sample_weight(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    try:
        sw = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"sample_weight must be numeric ({exc})") from exc
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.shape != (n,):
        raise InvalidInputError(f"sample_weight must have shape ({n},), got {sw.shape}")
    if not np.all(np.isfinite(sw)):
        raise InvalidInputError("sample_weight contains NaN or infinite values")
    if np.any(sw < 0):
        raise InvalidInputError("sample_weight must be non-negative")
    return sw


def as_id_list(ids, what="ids"):
    """A list of hashable Python ids (numpy scalars turned into Python ones).

    A list, tuple, range or array is a sequence of ids (to name a single
    id that is itself a tuple, wrap it in a list); anything else is one id.
    """
    if type(ids) is int or type(ids) is str:  # the common single-id request
        return [ids]
    if isinstance(ids, np.ndarray):
        if ids.ndim > 1:
            raise InvalidInputError(f"{what}: expected a 1-D sequence of ids, got shape {ids.shape}")
        items = ids.tolist() if ids.ndim == 1 else [ids.item()]
    elif isinstance(ids, (list, tuple, range)):
        items = list(ids)
    else:
        items = [ids]
    result = []
    for i in items:
        if isinstance(i, np.generic):
            i = i.item()
        try:
            hash(i)
        except TypeError as exc:
            raise InvalidInputError(f"{what}: id {i!r} is not hashable") from exc
        result.append(i)
    return result


def check_new_ids(ids, n, default_start):
    if ids is None:
        ids = list(range(default_start, default_start + n))
    else:
        ids = as_id_list(ids)
    if len(ids) != n:
        raise InvalidInputError(f"ids must have one entry per row: {len(ids)} ids for {n} rows")
    seen = set()
    for i in ids:
        if isinstance(i, float) and np.isnan(i):
            raise InvalidInputError("ids must not be NaN")
        if i in seen:
            raise DuplicateIdError(f"id {i!r} appears more than once")
        seen.add(i)
    return ids


def resolve_class_weight(est, classes, labels):
    """Weight of every class, as scikit-learn's ``compute_class_weight`` gives it to SVC.

    "balanced": ``n / (n_classes * count)``. A dict: the weight it names for
    each class of y, 1 for a class it does not name. Labels absent from y
    are accepted (a fixed dict across cross-validation folds where a fold
    lacks a class), unless a class of y is also left without a weight:
    then the dict is probably mistyped, and scikit-learn raises too.
    """
    weights = np.ones(len(classes))
    if est.class_weight is None:
        return weights
    if est.class_weight == "balanced":
        counts = np.bincount(labels, minlength=len(classes))
        return len(labels) / (len(classes) * counts.astype(np.float64))
    for cls, w in est.class_weight.items():
        if isinstance(w, bool) or not isinstance(w, Real) or not np.isfinite(w) or w < 0:
            raise InvalidInputError(f"class_weight[{cls!r}] must be a non-negative number")
    named = 0
    unweighted = []
    for k, cls in enumerate(classes.tolist()):
        if cls in est.class_weight:
            weights[k] = float(est.class_weight[cls])
            named += 1
        else:
            unweighted.append(cls)
    if unweighted and named != len(est.class_weight):
        absent = [c for c in est.class_weight if c not in set(classes.tolist())]
        raise InvalidInputError(
            f"class_weight names {absent} (not in y) and gives no weight to the classes "
            f"{unweighted} of y")
    return weights


def reject_non_numeric(X, what):
    """Strings, bytes and objects are refused rather than parsed as numbers."""
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        try:
            dtype = np.asarray(X).dtype
        except Exception:  # ragged input: let the array check explain
            return
    if dtype.kind in "USV":
        names = {"U": "strings", "S": "byte strings", "V": "structured values"}
        raise InvalidInputError(
            f"{what}: expected numeric values, got {names[dtype.kind]} (dtype {dtype})")


def check_fit(est, X, y, sample_weight, ids, method):
    """Validate the input of ``fit``; returns X, classes, labels, sample weights, ids,
    the resolved gamma and class weights."""
    check_params(est)
    if method not in ("auto", "batch", "incremental"):
        raise InvalidInputError(f"method must be 'auto', 'batch' or 'incremental', got {method!r}")
    reject_non_numeric(X, "X")
    try:
        X, y = validate_data(est, X, y, dtype=np.float64, order="C", reset=True)
        check_classification_targets(y)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from exc
    if est.kernel == "precomputed" and X.shape[0] != X.shape[1]:
        raise InvalidInputError(
            f"a precomputed kernel must be a square Gram matrix, got shape {X.shape}")
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InvalidInputError(
            f"The number of classes has to be greater than one; got {len(classes)} class")
    n = X.shape[0]
    sw = check_sample_weight(sample_weight, n)
    if not np.any(sw > 0):
        raise InvalidInputError("sample_weight: all weights are zero; nothing to learn from")
    ids = check_new_ids(ids, n, 0)
    gamma = resolve_gamma(est.gamma, X, est.kernel)
    class_weight = resolve_class_weight(est, classes, labels)
    return X, classes, labels, sw, ids, gamma, class_weight


def check_increment(est, X, y, ids, sample_weight):
    """Validate the input of ``increment``; returns X, class indices, sample weights, ids."""
    heads = est.head_set_
    n_given = heads.n_given
    if est.kernel == "precomputed":
        y_arr = np.asarray(y)
        if y_arr.ndim != 1:
            raise InvalidInputError(f"increment: y must be 1-D, got shape {y_arr.shape}")
        X = check_X(X, n_columns=n_given + y_arr.shape[0], what="increment X")
    else:
        X = check_features(est, X, "increment X")
    m = X.shape[0]
    if m == 0:
        raise InvalidInputError("increment: no rows given")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != m:
        raise InvalidInputError(f"increment: y must have shape ({m},), got {y.shape}")
    labels = np.searchsorted(est.classes_, y)
    labels = np.clip(labels, 0, len(est.classes_) - 1)
    unseen = est.classes_[labels] != y
    if np.any(unseen):
        raise UnseenLabelError(
            f"increment: label {y[unseen][0]!r} is not one of the classes seen in fit "
            f"{est.classes_.tolist()}")
    sw = check_sample_weight(sample_weight, m)
    ids = check_new_ids(ids, m, n_given)
    for i in ids:
        s = heads.slot_of(i)
        if s is not None and heads.is_active(s):
            raise DuplicateIdError(f"increment: id {i!r} is already active")
    return X, labels, sw, ids


def slots_of_request(heads, id_list):
    """Slots of the active examples named by `id_list` (validated)."""
    slots = np.empty(len(id_list), dtype=np.intp)
    seen = set()
    for k, i in enumerate(id_list):
        if i in seen:
            raise DuplicateIdError(f"decrement: id {i!r} appears more than once")
        seen.add(i)
        s = heads.slot_of(i)
        if s is None or not heads.is_active(s):
            # a removed example's id is erased with it: the two cases look alike
            raise UnknownIdError(f"decrement: unknown id {i!r} (never given, or already removed)")
        slots[k] = s
    return slots
