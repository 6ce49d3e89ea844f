"""``CPSVM``: an SVM classifier that learns and unlearns examples exactly.

This module validates input, freezes hyper-parameters, owns the fitted
attributes and delegates every numeric step to the compiled engine
(:mod:`eco._cp_core`). One binary engine serves two classes; more classes get
one engine per class (one-versus-rest), all sharing one kernel store.
"""

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.svm import SVC
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from threadpoolctl import ThreadpoolController

from . import _cp_core
from ._kernels import check_kernel_params, cross_kernel, resolve_gamma
from .exceptions import (
    DuplicateIdError,
    InvalidInputError,
    UnknownIdError,
    UnlearningError,
    UnseenLabelError,
)
from .receipt import PATH_RESERVE_DROP, PATH_RESOLVE, PATH_STEPS, UnlearningReceipt

__all__ = ["CPSVM"]

_SET_INACTIVE = _cp_core.SET_INACTIVE
_SET_RESERVE = _cp_core.SET_RESERVE
_SET_MARGIN = _cp_core.SET_MARGIN
_SET_ERROR = _cp_core.SET_ERROR

# Gradients of error (reserve) examples may exceed 0 (fall below 0) by this
# much after the polish of a batch solution before they count as violators.
_POLISH_TOL = 1e-10
# Tolerance of the libsvm solve that seeds the exact fit. Its sets only need
# to be nearly right: the polish makes the coefficients exact and CP steps
# repair the few examples it misplaced.
_SEED_TOL = 1e-4
# A solve from scratch is accepted when its certificate, recomputed from
# scratch, is below this.
_FIT_TOL = 1e-8
# Repair rounds (purify, polish, CP steps) after a path that could not finish.
_REPAIR_ROUNDS = 4
# Iteration cap of the libsvm seed: on rank-deficient or badly scaled
# problems libsvm can run for minutes; a rough seed is enough.
_SEED_MAX_ITER = 200000


_BLAS_CONTROLLER = None


def _one_blas_thread():
    """Context in which BLAS runs on one thread.

    The engine's products (one margin-row matrix-vector product per step) are
    too small to gain from BLAS threads, and on busy cores those threads spin
    waiting for each other: measured at n = 5000, a decrement took 10-20x
    longer with two OpenBLAS threads on a loaded 2-core machine. Heads run
    in parallel through ``n_jobs`` instead.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        # created after _cp_core has loaded SciPy's BLAS, so that it is seen
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


class CPSVM(ClassifierMixin, BaseEstimator):
    """Support vector classifier with exact incremental and decremental learning.

    The model is the C-SVM of scikit-learn's :class:`~sklearn.svm.SVC`, trained
    and updated with the Cauwenberghs-Poggio algorithm: after any sequence of
    ``fit``, ``increment`` and ``decrement`` calls it equals the SVM trained
    from scratch on the examples still active, with the same frozen
    hyper-parameters. Every example carries a stable id.

    Parameters
    ----------
    C : float, default=1.0
        Regularisation parameter; each example's box bound is
        ``C * class_weight[class] * sample_weight``.
    kernel : {"rbf", "linear", "poly", "precomputed"}, default="rbf"
        Kernels as scikit-learn defines them. With ``"precomputed"``, ``fit``
        takes the square Gram matrix of its rows, ``increment`` the kernel
        rows of the new examples against every example given so far (removed
        ones included, in the order they were given) followed by the new
        examples themselves, and ``decision_function`` kernel rows against
        every example given so far.
    gamma : {"scale", "auto"} or float, default="scale"
        Kernel coefficient of ``rbf`` and ``poly``. "scale" and "auto" are
        resolved once, at ``fit``, and frozen in ``gamma_``.
    degree : int, default=3
        Degree of the ``poly`` kernel.
    coef0 : float, default=0.0
        Independent term of the ``poly`` kernel.
    class_weight : dict, "balanced" or None, default=None
        Multiplies C per class; "balanced" is resolved at ``fit`` and frozen
        in ``class_weight_``.
    precompute : bool, default=False
        Compute the full kernel matrix at ``fit`` (n^2 floats) instead of
        computing and caching kernel rows on demand.
    n_jobs : int or None, default=None
        Threads over the one-versus-rest heads (the engine releases the GIL).
        None means 1; -1 means all cores.
    max_steps : int or None, default=None
        Bound on the path steps of one update of one head; None means
        ``50 + 10 * n_active``. Past it the head is re-solved exactly.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    gamma_ : float
        The frozen kernel coefficient.
    class_weight_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    ids_ : ndarray of shape (n_active,)
        Ids of the active examples, in the order they were given.
    n_active_ : int
    alpha_ : ndarray of shape (n_active,) or (n_heads, n_active)
        Dual coefficients (0 <= alpha <= C_i) of the active examples, per head.
    intercept_ : ndarray of shape (n_heads,)
        The bias b of every head (one head for two classes).
    margin_, error_, reserve_ : ndarray of ids, or list of them per head
        The margin (0 <= alpha <= C, y f(x) = 1), error (alpha = C) and
        reserve (alpha = 0) examples.
    support_ids_ : ndarray
        Ids that are margin or error vectors of any head.

    Notes
    -----
    Degenerate outcomes are defined: with one class left every alpha is 0
    and the decision is that class everywhere (b = +1 or -1); with no
    example left the decision is 0 (``predict`` returns ``classes_[0]``).
    When no margin vector lies strictly inside its bounds, b is not unique
    and is set to the midpoint of its feasible interval, as libsvm does.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from eco import CPSVM
    >>> X, y = load_digits(return_X_y=True)
    >>> X, y = X[:200] / 16, (y[:200] == 3)
    >>> clf = CPSVM(C=1.0).fit(X, y)
    >>> receipt = clf.decrement([0, 5, 7])
    >>> clf.n_active_
    197
    >>> clf.kkt_violation() < 1e-8
    True
    """

    def __init__(
        self,
        *,
        C=1.0,
        kernel="rbf",
        gamma="scale",
        degree=3,
        coef0=0.0,
        class_weight=None,
        precompute=False,
        n_jobs=None,
        max_steps=None,
    ):
        self.C = C
        self.kernel = kernel
        self.gamma = gamma
        self.degree = degree
        self.coef0 = coef0
        self.class_weight = class_weight
        self.precompute = precompute
        self.n_jobs = n_jobs
        self.max_steps = max_steps

    # -------------------------------------------------------------- pickling

    # The compiled state cannot be pickled as such; in memory (copy, joblib)
    # the model travels as the plain arrays of _export_state. Files are
    # written by save() in eco's own format, never with pickle.
    _INTERNALS = ("_store", "_engines", "_slot_labels", "_slot_C", "_slot_ids", "_slot_of")

    def __getstate__(self):
        state = super().__getstate__()
        if "_engines" in state:
            state = {k: v for k, v in state.items() if k not in self._INTERNALS}
            state["_eco_exported"] = self._export_state()
        return state

    def __setstate__(self, state):
        state = dict(state)
        exported = state.pop("_eco_exported", None)
        super().__setstate__(state)
        if exported is not None:
            rebuilt = type(self)._from_state(*exported)
            for key in self._INTERNALS:
                setattr(self, key, getattr(rebuilt, key))

    # ------------------------------------------------------------------ tags

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags

    # ------------------------------------------------------------ validation

    def _check_params(self):
        if isinstance(self.C, bool) or not isinstance(self.C, Real) or not np.isfinite(self.C) \
                or self.C <= 0:
            raise InvalidInputError(f"C must be a positive finite number, got {self.C!r}")
        check_kernel_params(self.kernel, self.degree, self.coef0)
        if isinstance(self.gamma, str):
            if self.gamma not in ("scale", "auto"):
                raise InvalidInputError(
                    f"gamma must be 'scale', 'auto' or a positive float, got {self.gamma!r}")
        else:
            resolve_gamma(self.gamma, None, "rbf")
        if self.n_jobs is not None and (isinstance(self.n_jobs, bool)
                                        or not isinstance(self.n_jobs, Integral)
                                        or self.n_jobs == 0):
            raise InvalidInputError(f"n_jobs must be None or a non-zero integer, got {self.n_jobs!r}")
        if self.max_steps is not None and (isinstance(self.max_steps, bool)
                                           or not isinstance(self.max_steps, Integral)
                                           or self.max_steps < 1):
            raise InvalidInputError(f"max_steps must be None or a positive integer, got {self.max_steps!r}")
        if not (self.class_weight is None or self.class_weight == "balanced"
                or isinstance(self.class_weight, dict)):
            raise InvalidInputError(
                f"class_weight must be None, 'balanced' or a dict, got {self.class_weight!r}")

    def _check_features(self, X, what):
        """Validate new feature rows against the fitted ones (scikit-learn's checks and messages)."""
        if self.kernel == "precomputed":
            return self._check_X(X, n_columns=self._store.n_slots, what=what)
        _reject_non_numeric(X, what)
        try:
            X = validate_data(self, X, dtype=np.float64, order="C", reset=False)
        except ValueError as exc:
            raise InvalidInputError(f"{what}: {exc}") from exc
        return X

    def _check_X(self, X, *, n_columns, what):
        """Validate a 2-D finite float array with `n_columns` columns."""
        try:
            X = np.asarray(X)
        except Exception as exc:  # ragged input and the like
            raise InvalidInputError(f"{what}: could not convert to an array ({exc})") from exc
        _reject_non_numeric(X, what)
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

    def _check_sample_weight(self, sample_weight, n):
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

    @staticmethod
    def _as_id_list(ids, what="ids"):
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

    def _check_new_ids(self, ids, n, default_start):
        if ids is None:
            ids = list(range(default_start, default_start + n))
        else:
            ids = self._as_id_list(ids)
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

    # ------------------------------------------------------------------- fit

    def fit(self, X, y, sample_weight=None, ids=None, method="auto"):
        """Fit the SVM exactly on ``X``, ``y``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training vectors; the square Gram matrix for ``kernel="precomputed"``.
        y : array-like of shape (n_samples,)
            Labels; at least two classes.
        sample_weight : array-like of shape (n_samples,), default=None
            Per-example multipliers of C (non-negative).
        ids : sequence of hashable, default=None
            Stable ids of the rows; default ``0 .. n_samples - 1``.
        method : {"auto", "batch", "incremental"}, default="auto"
            "batch" seeds the exact solution with a libsvm solve, makes it
            exact by solving the bordered system on the margin vectors and
            repairs any misplaced example with CP steps; "incremental" learns
            the rows one after the other with CP steps. Both give the same
            model. "auto" is "batch".

        Returns
        -------
        self : CPSVM
        """
        saved = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight, ids, method)
        except BaseException:
            # leave a previously fitted model exactly as it was
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    def _fit(self, X, y, sample_weight, ids, method):
        self._check_params()
        if method not in ("auto", "batch", "incremental"):
            raise InvalidInputError(f"method must be 'auto', 'batch' or 'incremental', got {method!r}")
        _reject_non_numeric(X, "X")
        try:
            X, y = validate_data(self, X, y, dtype=np.float64, order="C", reset=True)
            check_classification_targets(y)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from exc
        if self.kernel == "precomputed" and X.shape[0] != X.shape[1]:
            raise InvalidInputError(
                f"a precomputed kernel must be a square Gram matrix, got shape {X.shape}")
        classes, labels = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise InvalidInputError(
                f"The number of classes has to be greater than one; got {len(classes)} class")
        n = X.shape[0]
        sw = self._check_sample_weight(sample_weight, n)
        if not np.any(sw > 0):
            raise InvalidInputError("sample_weight: all weights are zero; nothing to learn from")
        ids = self._check_new_ids(ids, n, 0)
        gamma = resolve_gamma(self.gamma, X, self.kernel)
        class_weight = self._resolve_class_weight(classes, labels)

        store = _cp_core.KernelStore(
            0 if self.kernel == "precomputed" else X.shape[1],
            self.kernel, gamma, int(self.degree), float(self.coef0), bool(self.precompute))
        store.append(X)
        n_heads = 1 if len(classes) == 2 else len(classes)
        engines = [_cp_core.CPEngine(store, self.max_steps or 0) for _ in range(n_heads)]

        self.classes_ = classes
        self.gamma_ = gamma
        self.class_weight_ = class_weight
        self._store = store
        self._engines = engines
        self._slot_labels = labels.astype(np.int64)
        self._slot_C = float(self.C) * class_weight[labels] * sw
        self._slot_ids = _id_array(ids)
        self._slot_of = {i: s for s, i in enumerate(ids)}
        active = np.arange(n, dtype=np.int64)
        method = "batch" if method == "auto" else method
        with _one_blas_thread():
            self._map_heads(lambda h: self._solve_head(h, active, method))
        return self

    def _resolve_class_weight(self, classes, labels):
        weights = np.ones(len(classes))
        if self.class_weight is None:
            return weights
        if self.class_weight == "balanced":
            counts = np.bincount(labels, minlength=len(classes))
            return len(labels) / (len(classes) * counts.astype(np.float64))
        for cls, w in self.class_weight.items():
            match = np.flatnonzero(classes == cls)
            if len(match) == 0:
                raise InvalidInputError(f"class_weight names class {cls!r}, which is not in y")
            if isinstance(w, bool) or not isinstance(w, Real) or not np.isfinite(w) or w < 0:
                raise InvalidInputError(f"class_weight[{cls!r}] must be a non-negative number")
            weights[match[0]] = float(w)
        return weights

    # ---------------------------------------------------------------- heads

    def _head_y(self, head):
        """Labels (+1/-1) of every stored slot for one head."""
        positive = 1 if len(self._engines) == 1 else head
        return np.where(self._slot_labels == positive, 1.0, -1.0)

    def _map_heads(self, fn, heads=None):
        heads = range(len(self._engines)) if heads is None else heads
        heads = list(heads)
        n_jobs = 1 if self.n_jobs is None else self.n_jobs
        if n_jobs < 0:
            n_jobs = os.cpu_count() or 1
        n_jobs = min(n_jobs, len(heads))
        if n_jobs <= 1:
            return [fn(h) for h in heads]
        with ThreadPoolExecutor(max_workers=n_jobs) as pool:
            return list(pool.map(fn, heads))

    def _solve_head(self, head, active, method):
        """Solve one head exactly from scratch on the `active` slots."""
        engine = self._engines[head]
        engine.sync_capacity()
        n = self._store.n_slots
        y = self._head_y(head)
        C = self._slot_C
        empty = np.full(n, _SET_INACTIVE, dtype=np.int8)
        engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
        best = None
        if method == "batch" and self._seed_and_polish(engine, active, y, C):
            violation = self._head_violation(engine)
            if violation <= _FIT_TOL:
                return
            best = (violation, engine.get_state())
        # incremental: learn the rows one after the other; a path that cannot
        # finish leaves an approximate state that the repair below makes exact
        engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
        complete = True
        for s in active:
            if engine.learn(int(s), y[s], C[s]) != _cp_core.STATUS_OK:
                complete = False
                break
        for _ in range(_REPAIR_ROUNDS):
            # rows the path never reached are not in the certificate yet
            violation = self._head_violation(engine) if complete else np.inf
            if best is None or violation < best[0]:
                best = (violation, engine.get_state())
            if violation <= _FIT_TOL:
                return
            # repair: purify (null-direction pivots), polish, CP steps. Rows
            # the path never reached enter at alpha = 0; a coefficient the
            # path left mid-drive counts as free
            sets = engine.sets_all
            alpha = engine.alpha_all
            todo = active[sets[active] == _SET_INACTIVE]
            alpha[todo] = 0.0
            sets[todo] = _SET_RESERVE
            sets[sets == _cp_core.SET_DRIVEN] = _SET_MARGIN
            complete = engine.settle(y, C, alpha, engine.b, sets,
                                     _POLISH_TOL) == _cp_core.STATUS_OK
        violation = self._head_violation(engine) if complete else np.inf
        if violation > best[0]:
            engine.restore(best[1])
            violation = best[0]
        if violation > _FIT_TOL:
            raise UnlearningError(
                f"exact solve failed: KKT violation {violation:.3g} after repair")

    @staticmethod
    def _head_violation(engine):
        # relative to the size of the terms of every gradient (scale-free)
        return engine.certificate()

    def _seed_and_polish(self, engine, active, y, C):
        """Exact fit seeded by libsvm; returns False when the seed cannot be made exact."""
        n = self._store.n_slots
        weighted = active[C[active] > 0]
        sets = np.full(n, _SET_INACTIVE, dtype=np.int8)
        sets[active] = _SET_RESERVE
        if len(np.unique(y[weighted])) < 2:
            # nothing to solve: every alpha is 0; finish() sets the canonical b
            engine.set_state(y, C, np.zeros(n), 0.0, sets, np.zeros(0, np.int32), np.zeros(n), None)
            engine.finish()
            return True
        keep = active[C[active] > 0]  # libsvm rejects zero weights; their alpha is 0
        if self.kernel == "precomputed":
            K = self._store.kernel_block(keep)[:, keep]
            svc = SVC(C=1.0, kernel="precomputed", tol=_SEED_TOL, shrinking=True)
            svc.fit(K, y[keep], sample_weight=C[keep])
        else:
            Xs = self._store.features()[keep]
            svc = SVC(C=1.0, kernel=self.kernel, gamma=self.gamma_, degree=self.degree,
                      coef0=self.coef0, tol=_SEED_TOL, shrinking=True, cache_size=500,
                      max_iter=_SEED_MAX_ITER)
            import warnings
            from sklearn.exceptions import ConvergenceWarning
            with warnings.catch_warnings():
                # a seed cut short by max_iter is still a seed
                warnings.simplefilter("ignore", ConvergenceWarning)
                svc.fit(Xs, y[keep], sample_weight=C[keep])
        alpha = np.zeros(n)
        alpha[keep[svc.support_]] = np.abs(svc.dual_coef_[0])
        upper = alpha >= C * (1 - 1e-12)
        free = (alpha > 0) & ~upper
        alpha[keep[upper[keep]]] = C[keep[upper[keep]]]
        sets[keep[upper[keep]]] = _SET_ERROR
        sets[keep[free[keep]]] = _SET_MARGIN
        # the free set of a rank-deficient kernel is dependent: settle pivots
        # it to an independent one, polishes and repairs with CP steps
        return engine.settle(y, C, alpha, float(svc.intercept_[0]), sets,
                             _POLISH_TOL) == _cp_core.STATUS_OK

    # ------------------------------------------------------------ increment

    def increment(self, X, y, ids=None, sample_weight=None):
        """Learn new examples exactly.

        Parameters
        ----------
        X : array-like of shape (n_new, n_features)
            For ``kernel="precomputed"``: shape ``(n_new, n_given + n_new)``,
            the kernel rows against every example given so far, then the new
            ones.
        y : array-like of shape (n_new,)
            Labels, each one of ``classes_``.
        ids : sequence of hashable, default=None
            Ids of the new rows; default: their positions among all rows ever
            given (``n_given, n_given + 1, ...``).
        sample_weight : array-like of shape (n_new,), default=None

        Returns
        -------
        ids : ndarray
            The ids of the new rows.
        """
        check_is_fitted(self)
        n_given = self._store.n_slots
        if self.kernel == "precomputed":
            y_arr = np.asarray(y)
            if y_arr.ndim != 1:
                raise InvalidInputError(f"increment: y must be 1-D, got shape {y_arr.shape}")
            X = self._check_X(X, n_columns=n_given + y_arr.shape[0], what="increment X")
        else:
            X = self._check_features(X, "increment X")
        m = X.shape[0]
        if m == 0:
            raise InvalidInputError("increment: no rows given")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != m:
            raise InvalidInputError(f"increment: y must have shape ({m},), got {y.shape}")
        labels = np.searchsorted(self.classes_, y)
        labels = np.clip(labels, 0, len(self.classes_) - 1)
        unseen = self.classes_[labels] != y
        if np.any(unseen):
            raise UnseenLabelError(
                f"increment: label {y[unseen][0]!r} is not one of the classes seen in fit "
                f"{self.classes_.tolist()}")
        sw = self._check_sample_weight(sample_weight, m)
        ids = self._check_new_ids(ids, m, n_given)
        for i in ids:
            s = self._slot_of.get(i)
            if s is not None and self._is_active(s):
                raise DuplicateIdError(f"increment: id {i!r} is already active")

        snapshot = self._snapshot()
        saved = (self._slot_labels, self._slot_C, self._slot_ids, dict(self._slot_of))
        old_active = self._active_slots()
        try:
            slots = self._store.append(X)
            target_active = np.concatenate([old_active, slots]).astype(np.int64)
            self._slot_labels = np.concatenate([self._slot_labels, labels.astype(np.int64)])
            self._slot_C = np.concatenate(
                [self._slot_C, float(self.C) * self.class_weight_[labels] * sw])
            self._slot_ids = _id_array(list(self._slot_ids) + ids)
            for s, i in zip(slots, ids):
                self._slot_of[i] = int(s)

            def learn_all(h):
                engine = self._engines[h]
                engine.sync_capacity()
                y_h = self._head_y(h)
                for s in slots:
                    status = engine.learn(int(s), y_h[s], self._slot_C[s])
                    if status != _cp_core.STATUS_OK:
                        # the path could not finish: re-solve this head exactly
                        self._solve_head(h, target_active, "batch")
                        return
            with _one_blas_thread():
                self._map_heads(learn_all)
        except BaseException:
            # the rows never happened: forget them in the store too
            self._store.truncate(n_given)
            self._slot_labels, self._slot_C, self._slot_ids, self._slot_of = saved
            self._restore(snapshot)
            raise
        return _id_array(ids)

    # ------------------------------------------------------------ decrement

    def decrement(self, ids, batch=True, *, audit=True):
        """Unlearn examples exactly.

        Parameters
        ----------
        ids : hashable or sequence of hashable
            Ids of active examples.
        batch : bool, default=True
            True: all the examples leave along one multi-point path (their
            coefficients move to zero together). False: one after the other.
            Both end in the same model.
        audit : bool, default=True
            Recompute the KKT certificate from scratch and digest the state
            before and after for the receipt. False skips that work (the
            receipt then has None in those fields).

        Returns
        -------
        receipt : UnlearningReceipt

        Raises
        ------
        UnknownIdError
            An id the model never saw or has already removed.
        DuplicateIdError
            The same id twice in the request.
        """
        t0 = time.perf_counter()
        self._require_fitted()
        id_list = self._as_id_list(ids)
        if len(id_list) == 0:
            raise InvalidInputError("decrement: no ids given")
        slots = self._slots_of_request(id_list)
        digest_before = self.state_digest() if audit else None
        engines = self._engines
        resolved = []
        if _cp_core.all_reserve(engines, slots):
            # alpha = 0 in every head: drop them in one uninterruptible call
            _cp_core.drop_reserve(engines, slots)
            reserve = [True] * len(slots)
            n_steps = n_migrations = 0
        else:
            reserve = [bool(r) for r in np.all([e.alpha_of(slots) == 0.0 for e in engines], axis=0)]
            steps0 = sum(e.n_steps for e in engines)
            migr0 = sum(e.n_migrations for e in engines)
            snapshot = self._snapshot()
            try:
                def unlearn(h):
                    e = engines[h]
                    if batch:
                        status = e.unlearn(slots)
                    else:
                        status = _cp_core.STATUS_OK
                        for k in range(len(slots)):
                            status = e.unlearn(slots[k:k + 1])
                            if status != _cp_core.STATUS_OK:
                                break
                    if status != _cp_core.STATUS_OK:
                        # the path could not finish: re-solve this head exactly
                        remaining = np.setdiff1d(
                            np.flatnonzero(snapshot[h]["sets"] != _SET_INACTIVE), slots)
                        self._solve_head(h, remaining.astype(np.int64), "batch")
                        return h
                    if self._test_hook_after_head is not None:
                        self._test_hook_after_head(h)
                    return None
                with _one_blas_thread():
                    resolved = [h for h in self._map_heads(unlearn) if h is not None]
            except BaseException:
                self._restore(snapshot)
                raise
            n_steps = sum(e.n_steps for e in engines) - steps0
            n_migrations = sum(e.n_migrations for e in engines) - migr0
        paths = {}
        for i, r in zip(id_list, reserve):
            paths[i] = PATH_RESERVE_DROP if r else (PATH_RESOLVE if resolved else PATH_STEPS)
        return UnlearningReceipt(
            removed_ids=tuple(id_list),
            paths=paths,
            batch=bool(batch),
            n_migrations=n_migrations,
            n_steps=n_steps,
            kkt_violation=self.kkt_violation() if audit else None,
            digest_before=digest_before,
            digest_after=self.state_digest() if audit else None,
            wall_time_s=time.perf_counter() - t0,
            resolved_heads=tuple(resolved),
        )

    def _slots_of_request(self, id_list):
        """Slots of the active examples named by `id_list` (validated)."""
        slots = np.empty(len(id_list), dtype=np.int64)
        seen = set()
        first_set = self._engines[0].set_of
        for k, i in enumerate(id_list):
            if i in seen:
                raise DuplicateIdError(f"decrement: id {i!r} appears more than once")
            seen.add(i)
            s = self._slot_of.get(i)
            if s is None:
                raise UnknownIdError(f"decrement: unknown id {i!r}")
            if first_set(s) == _SET_INACTIVE:
                raise UnknownIdError(f"decrement: id {i!r} has already been removed")
            slots[k] = s
        return slots

    # Set by tests to inject a fault after a head has been updated.
    _test_hook_after_head = None

    # --------------------------------------------------------- state helpers

    def _is_active(self, slot):
        return self._engines[0].set_of(slot) != _SET_INACTIVE

    def _active_slots(self):
        return np.flatnonzero(self._engines[0].sets_all != _SET_INACTIVE).astype(np.int64)

    def _snapshot(self):
        return [e.get_state() for e in self._engines]

    def _restore(self, snapshot):
        n = self._store.n_slots
        for e, state in zip(self._engines, snapshot):
            e.sync_capacity()
            state = _pad_state(state, n)
            e.restore(state)

    def state_digest(self):
        """BLAKE2b digest of the whole model state.

        Covers the hyper-parameters, the active ids, and for every head the
        labels, bounds, coefficients, bias, gradients, sets, margin order and
        the inverse bordered matrix of the active examples. Two models with
        the same digest make the same predictions and the same future updates.
        """
        check_is_fitted(self)
        h = hashlib.blake2b(digest_size=32)
        h.update(repr((self.C, self.kernel, self.gamma_, self.degree, self.coef0,
                       self.classes_.tolist(), self.class_weight_.tolist())).encode())
        active = self._active_slots()
        h.update(repr(self._slot_ids[active].tolist()).encode())
        for e in self._engines:
            st = e.get_state()
            for key in ("y", "C", "alpha", "g", "sets"):
                h.update(np.ascontiguousarray(st[key][active]).tobytes())
            h.update(np.float64(st["b"]).tobytes())
            h.update(np.ascontiguousarray(st["margin_order"]).tobytes())
            h.update(np.ascontiguousarray(st["Rinv"]).tobytes())
        return h.hexdigest()

    # -------------------------------------------------------- certificates

    def kkt_violation(self):
        """Largest KKT violation, recomputed from scratch.

        Gradients ``g_i = y_i f(x_i) - 1`` are recomputed from the current
        alpha and b and the kernel (not taken from the incremental state).
        The result is the largest of: ``|g_i|`` for 0 < alpha_i < C_i,
        ``max(0, -g_i)`` for alpha_i = 0, ``max(0, g_i)`` for alpha_i = C_i,
        bound violations and ``|sum_i y_i alpha_i|`` (both divided by max C_i),
        over every head.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        return max(self._head_violation(e) for e in self._engines)

    # ------------------------------------------------------------- predict

    def decision_function(self, X):
        """Decision values ``f(x) = sum_j alpha_j y_j K(x_j, x) + b``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            For ``kernel="precomputed"``: kernel rows against every example
            given so far, shape ``(n_samples, n_given)``.

        Returns
        -------
        ndarray of shape (n_samples,) for two classes, else (n_samples, n_classes)
        """
        check_is_fitted(self)
        X = self._check_features(X, "X")
        coef = np.stack([e.alpha_all * e.y_all for e in self._engines], axis=1)
        sv = np.flatnonzero(np.any(coef != 0.0, axis=1))
        b = np.array([e.b for e in self._engines])
        if self.kernel == "precomputed":
            K = X[:, sv]
        else:
            K = cross_kernel(X, self._store.features_of(sv.astype(np.int64)), self.kernel,
                             self.gamma_, self.degree, self.coef0)
        f = K @ coef[sv] + b
        return f[:, 0] if len(self._engines) == 1 else f

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against ``y``."""
        y_arr = np.asarray(y)
        n = np.shape(X)[0] if np.ndim(X) >= 1 else None
        if y_arr.ndim != 1 or (n is not None and y_arr.shape[0] != n):
            raise InvalidInputError(
                f"score: inconsistent numbers of samples: X has {n} rows, y has shape {y_arr.shape}")
        return super().score(X, y, sample_weight=sample_weight)

    def predict(self, X):
        """Class labels: the sign of the decision (two classes) or its argmax."""
        f = self.decision_function(X)
        if f.ndim == 1:
            return self.classes_[(f > 0).astype(np.int64)]
        return self.classes_[np.argmax(f, axis=1)]

    # ------------------------------------------- audit, persistence, LOO

    def verify(self, reference=False):
        """Audit the model: the KKT certificate and, optionally, a solve from scratch.

        Parameters
        ----------
        reference : bool, default=False
            Also solve every head from scratch on the active rows with an
            independent solver (:mod:`eco.reference`) and compare decision
            values on the active rows.

        Returns
        -------
        eco.audit.VerificationReport
        """
        from .audit import verify_model

        return verify_model(self, reference=reference)

    def save(self, path):
        """Save the model to `path` in eco's safe format (no pickle); see :mod:`eco.persistence`."""
        from .persistence import save_model

        save_model(self, path)

    def loo_decision(self):
        """Exact leave-one-out decision values of the active examples; see :mod:`eco.loo`."""
        from .loo import loo_decision

        return loo_decision(self)

    def loo_error(self):
        """Exact leave-one-out error rate of the active examples; see :mod:`eco.loo`."""
        from .loo import loo_error

        return loo_error(self)

    def _export_state(self):
        """Everything that defines the model, as plain numbers, strings and arrays.

        Returns
        -------
        meta : dict
            JSON-able hyper-parameters and fitted scalars.
        arrays : dict of ndarray
            Stored data (features, or the kernel for ``precomputed``), the
            per-slot labels, bounds and ids, and every head's state.
        """
        check_is_fitted(self)
        store = self._store
        meta = {
            "params": self.get_params(),
            "gamma_": float(self.gamma_),
            "n_features_in_": int(self.n_features_in_),
            "n_heads": len(self._engines),
            "b": [float(e.b) for e in self._engines],
            "updates_since_check": [e.get_state()["updates_since_check"] for e in self._engines],
        }
        arrays = {
            "classes_": np.asarray(self.classes_),
            "class_weight_": np.asarray(self.class_weight_, dtype=np.float64),
            "slot_labels": np.asarray(self._slot_labels, dtype=np.int64),
            "slot_C": np.asarray(self._slot_C, dtype=np.float64),
            "slot_ids": self._slot_ids,
        }
        if self.kernel == "precomputed":
            arrays["kernel"] = store.kernel_block(np.arange(store.n_slots, dtype=np.int64))
        else:
            arrays["features"] = store.features()
        if hasattr(self, "feature_names_in_"):
            arrays["feature_names_in_"] = np.asarray(self.feature_names_in_)
        for h, e in enumerate(self._engines):
            st = e.get_state()
            for key in ("y", "C", "alpha", "g", "sets", "margin_order", "Rinv"):
                arrays[f"head{h}_{key}"] = st[key]
        return meta, arrays

    @classmethod
    def _from_state(cls, meta, arrays):
        """Rebuild a model from :meth:`_export_state` output, bit for bit."""
        model = cls(**meta["params"])
        model._check_params()
        model.classes_ = arrays["classes_"]
        model.gamma_ = float(meta["gamma_"])
        model.class_weight_ = arrays["class_weight_"]
        model.n_features_in_ = int(meta["n_features_in_"])
        if "feature_names_in_" in arrays:
            model.feature_names_in_ = arrays["feature_names_in_"]
        data = arrays["kernel"] if model.kernel == "precomputed" else arrays["features"]
        store = _cp_core.KernelStore(
            0 if model.kernel == "precomputed" else data.shape[1], model.kernel, model.gamma_,
            int(model.degree), float(model.coef0), bool(model.precompute))
        store.append(np.ascontiguousarray(data, dtype=np.float64))
        model._store = store
        model._slot_labels = arrays["slot_labels"]
        model._slot_C = arrays["slot_C"]
        ids = arrays["slot_ids"]
        model._slot_ids = _id_array(ids.tolist())
        model._slot_of = {}
        engines = []
        counters = meta.get("updates_since_check", [0] * int(meta["n_heads"]))
        for h in range(int(meta["n_heads"])):
            e = _cp_core.CPEngine(store, model.max_steps or 0)
            try:
                e.restore({
                    "y": arrays[f"head{h}_y"], "C": arrays[f"head{h}_C"],
                    "alpha": arrays[f"head{h}_alpha"], "b": float(meta["b"][h]),
                    "sets": arrays[f"head{h}_sets"].astype(np.int8),
                    "margin_order": arrays[f"head{h}_margin_order"].astype(np.int32),
                    "g": arrays[f"head{h}_g"], "Rinv": arrays[f"head{h}_Rinv"],
                    "updates_since_check": int(counters[h]),
                })
            except RuntimeError as exc:
                raise UnlearningError(f"head {h}: {exc}") from exc
            engines.append(e)
        model._engines = engines
        # an id maps to its latest slot (a removed id may have been given again)
        for s, i in enumerate(model._slot_ids.tolist()):
            if i not in model._slot_of or model._is_active(s):
                model._slot_of[i] = s
        return model

    # --------------------------------------------------- fitted attributes

    def __sklearn_is_fitted__(self):
        return hasattr(self, "_engines")

    def _per_head(self, fn):
        values = [fn(e) for e in self._engines]
        return values[0] if len(values) == 1 else values

    @property
    def ids_(self):
        self._require_fitted()
        return self._slot_ids[self._active_slots()]

    @property
    def n_active_(self):
        self._require_fitted()
        return int(self._engines[0].n_active)

    @property
    def alpha_(self):
        self._require_fitted()
        active = self._active_slots()
        a = np.stack([e.alpha_all[active] for e in self._engines])
        return a[0] if len(self._engines) == 1 else a

    @property
    def intercept_(self):
        self._require_fitted()
        return np.array([e.b for e in self._engines])

    def _ids_in(self, code):
        return self._per_head(lambda e: self._slot_ids[np.flatnonzero(e.sets_all == code)])

    @property
    def margin_(self):
        self._require_fitted()
        return self._ids_in(_SET_MARGIN)

    @property
    def error_(self):
        self._require_fitted()
        return self._ids_in(_SET_ERROR)

    @property
    def reserve_(self):
        self._require_fitted()
        return self._ids_in(_SET_RESERVE)

    @property
    def support_ids_(self):
        self._require_fitted()
        mask = np.zeros(self._store.n_slots, dtype=bool)
        for e in self._engines:
            sets = e.sets_all
            mask |= (sets == _SET_MARGIN) | (sets == _SET_ERROR)
        return self._slot_ids[mask]

    def _require_fitted(self):
        if not hasattr(self, "_engines"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")


def _id_array(ids):
    """Ids as an int64 array when they are all integers that fit, else an object array."""
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        try:
            return np.asarray(ids, dtype=np.int64).reshape(-1)
        except OverflowError:
            pass
    arr = np.empty(len(ids), dtype=object)
    arr[:] = list(ids)
    return arr


def _reject_non_numeric(X, what):
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


def _pad_state(state, n):
    """Extend a snapshot taken before slots were appended (new slots inactive)."""
    m = len(state["y"])
    if m == n:
        return state
    pad = n - m
    out = dict(state)
    for key in ("y", "C", "alpha", "g"):
        out[key] = np.concatenate([state[key], np.zeros(pad)])
    out["sets"] = np.concatenate([state["sets"], np.full(pad, _SET_INACTIVE, dtype=np.int8)])
    return out


def _kkt_violation(alpha, y, C, sets, g):
    active = (sets != _SET_INACTIVE)
    if not active.any():
        return 0.0
    a, y, C, g = alpha[active], y[active], C[active], g[active]
    c_scale = max(float(C.max()), np.finfo(float).tiny)
    worst = abs(float(np.dot(y, a))) / c_scale
    worst = max(worst, float(np.max(np.maximum(-a, 0.0))) / c_scale,
                float(np.max(np.maximum(a - C, 0.0))) / c_scale)
    bounded = C > 0
    a, C, g = a[bounded], C[bounded], g[bounded]
    if len(a) == 0:
        return worst
    free = (a > 0) & (a < C)
    at_zero = a <= 0
    at_c = a >= C
    if free.any():
        worst = max(worst, float(np.max(np.abs(g[free]))))
    if at_zero.any():
        worst = max(worst, float(np.max(np.maximum(-g[at_zero], 0.0))))
    if at_c.any():
        worst = max(worst, float(np.max(np.maximum(g[at_c], 0.0))))
    return worst
