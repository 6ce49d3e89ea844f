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
from .exceptions import (DuplicateIdError, InvalidInputError, InvalidTypeError, UnknownIdError,
                         UnseenLabelError)

# The engine holds the degree in a C int; a polynomial of higher degree
# overflows float64 for any |gamma <x, x'> + coef0| != 1 anyway.
_MAX_DEGREE = 2 ** 31 - 1
# Largest |K_ij - K_ji| accepted in a precomputed kernel, relative to max |K|
# (X @ X.T computed by BLAS is symmetric only to rounding).
_SYMMETRY_RTOL = 1e-12


def _foreign(what, exc):
    """A scikit-learn/NumPy input error (sparse input, dtype promotion) as eco's.

    A ``TypeError`` stays one (:class:`InvalidTypeError`), as callers of
    scikit-learn estimators expect.
    """
    cls = InvalidTypeError if isinstance(exc, TypeError) else InvalidInputError
    return cls(f"{what}: {exc}" if what else str(exc))


def id_kind(i):
    """The kind of an id: ids match only when equal and of the same kind.

    bool, integer (Python or NumPy), float, or the exact type of anything
    else: 3.0 names no id 3, True names no id 1.
    """
    if isinstance(i, (bool, np.bool_)):
        return "bool"
    if isinstance(i, (int, np.integer)):
        return "int"
    if isinstance(i, (float, np.floating)):
        return "float"
    return type(i)


def check_symmetric(K, what):
    """Refuse a precomputed kernel block that is not symmetric (up to rounding)."""
    scale = float(np.max(np.abs(K))) if K.size else 0.0
    if K.size and float(np.max(np.abs(K - K.T))) > _SYMMETRY_RTOL * max(scale, 1e-300):
        raise InvalidInputError(
            f"{what}: a precomputed kernel must be symmetric "
            f"(largest |K_ij - K_ji| is {float(np.max(np.abs(K - K.T))):.3g})")


def check_flag(value, name):
    """A boolean flag: True or False only (``"no"`` or ``1`` is a mistake, not a flag)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def apply_screening(est, heads):
    """Switch the engines of `heads` to the estimator's ``screening`` (local heads only)."""
    flag = check_flag(getattr(est, "screening", True), "screening")
    configure = getattr(heads, "set_screening", None)
    if configure is not None:
        configure(flag)


def check_tolerance(value, name):
    """A tolerance: a finite number >= 0 (NaN would make every comparison pass or fail)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Real) \
            or not np.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_params(est):
    if isinstance(est.C, bool) or not isinstance(est.C, Real) or not np.isfinite(est.C) \
            or est.C <= 0:
        raise InvalidInputError(f"C must be a positive finite number, got {est.C!r}")
    check_kernel_params(est.kernel, est.degree, est.coef0)
    if isinstance(est.degree, Integral) and est.degree > _MAX_DEGREE:
        raise InvalidInputError(f"degree must be at most {_MAX_DEGREE}, got {est.degree!r}")
    check_flag(est.precompute, "precompute")
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
    check_flag(getattr(est, "screening", True), "screening")
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
    except (ValueError, TypeError, OverflowError) as exc:
        raise _foreign(what, exc) from exc
    return X


def check_X(X, *, n_columns, what):
    """Validate a 2-D finite float array with `n_columns` columns."""
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise InvalidTypeError(f"{what}: sparse input is not supported; pass a dense array")
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
            f"{what}: expected a 2-D array of shape (n_samples, {n_columns}), got shape "
            f"{X.shape}. Reshape your data either using array.reshape(-1, 1) if your data has "
            "a single feature or array.reshape(1, -1) if it contains a single sample.")
    if X.shape[0] == 0:
        raise InvalidInputError(f"{what}: no rows given (shape {X.shape})")
    try:
        X = np.ascontiguousarray(X, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"{what}: expected numeric values ({exc})") from exc
    # non-finite values first, as scikit-learn reports them (the columns of a
    # precomputed kernel are a count of examples, not features)
    if not np.all(np.isfinite(X)):
        kind = "NaN" if np.isnan(X).any() else "infinite"
        raise InvalidInputError(f"{what}: input contains {kind} values")
    if X.shape[1] != n_columns:
        raise InvalidInputError(
            f"{what}: expected {n_columns} columns, got {X.shape[1]} (shape {X.shape}): "
            f"X has {X.shape[1]} features, but CPSVM is expecting {n_columns} features as input "
            "(kernel values against every example given so far)")
    return X


def check_sample_weight(sample_weight, n):
    if sample_weight is None:
        return np.ones(n)
    if hasattr(sample_weight, "toarray"):
        raise InvalidTypeError("sample_weight: sparse input is not supported")
    try:
        sw = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
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
    if not any(issubclass(t, float) for t in set(map(type, ids))) and len(set(ids)) == len(ids):
        return ids  # no float id that could be NaN, none repeated: the common case in C
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
    if dtype.kind in "USVmM":
        names = {"U": "strings", "S": "byte strings", "V": "structured values",
                 "m": "time deltas", "M": "dates"}
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
    except (ValueError, TypeError, OverflowError) as exc:
        # TypeError: sparse input; DTypePromotionError (a TypeError): mixed dtypes
        raise _foreign("", exc) from exc
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
    if est.kernel == "precomputed":
        check_symmetric(X, "X")
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
        check_symmetric(X[:, n_given:], "increment X (its block of the new rows)")
    else:
        X = check_features(est, X, "increment X")
    m = X.shape[0]
    if m == 0:
        raise InvalidInputError("increment: no rows given")
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != m:
        raise InvalidInputError(f"increment: y must have shape ({m},), got {y.shape}")
    try:
        labels = np.searchsorted(est.classes_, y)
        labels = np.clip(labels, 0, len(est.classes_) - 1)
        unseen = np.asarray(est.classes_[labels] != y, dtype=bool).reshape(m)
    except (TypeError, ValueError) as exc:  # DTypePromotionError: labels of another type
        raise UnseenLabelError(
            f"increment: labels of dtype {y.dtype} cannot be compared with the classes "
            f"seen in fit {est.classes_.tolist()} ({exc})") from exc
    if np.any(unseen):
        raise UnseenLabelError(
            f"increment: label {y[unseen][0]!r} is not one of the classes seen in fit "
            f"{est.classes_.tolist()}")
    sw = check_sample_weight(sample_weight, m)
    ids = check_new_ids(ids, m, n_given)
    for i in ids:
        s = heads.slot_of(i)
        if s is None:
            continue
        known = heads.slot_ids[s]
        if id_kind(known) != id_kind(i):
            raise DuplicateIdError(
                f"increment: id {i!r} is equal to the id {known!r} of another kind; "
                "ids must differ by value")
        if heads.is_active(s):
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
        if s is None or not heads.is_active(s) or id_kind(heads.slot_ids[s]) != id_kind(i):
            # a removed example's id is erased with it: the two cases look
            # alike; 3.0 does not name the id 3, True not the id 1 (id_kind)
            raise UnknownIdError(f"decrement: unknown id {i!r} (never given, or already removed)")
        slots[k] = s
    return slots
