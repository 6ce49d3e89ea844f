"""``CPSVM``: an SVM classifier that learns and unlearns examples exactly.

This module is the estimator's facade: it validates input
(:mod:`eco._validation`), freezes hyper-parameters, holds the fitted
attributes and delegates every update to the head set
(:class:`eco._headset.HeadSet`), which owns the kernel store, the compiled
engines (:mod:`eco._cp_core`) and the slot tables. One binary engine serves
two classes; more classes get one engine per class (one-versus-rest), all
sharing one kernel store. The model's state is defined in :mod:`eco.state`.
"""

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from . import _params, _updates
from . import _validation as V
from ._concurrency import interrupt_guard, reads, writes
from ._fitted import FittedAttributes
from ._kernels import cross_kernel
from .exceptions import InvalidInputError
from .persistence import write_state
from .state import state_digest

__all__ = ["CPSVM"]

# Parameters that define the fitted model: changing one on a fitted model
# un-fits it (see CPSVM.set_params). n_jobs and max_steps only say how the
# work is done; precompute only whether kernel rows are cached up front.
class CPSVM(FittedAttributes, ClassifierMixin, BaseEstimator):
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
        Kernel coefficient of ``rbf`` and ``poly`` (>= 0; 0 makes the kernel
        constant, as in scikit-learn). "scale" (``1 / (n_features *
        X.var())``) follows the active rows: after every update it is
        resolved again on the rows still active and the model re-solved with
        it, so that the model equals a refit on those rows (the receipt's
        ``hyper_paths`` says so). "auto" (``1 / n_features``) and a number
        never change. The value in use is ``gamma_``.
    degree : int, default=3
        Degree of the ``poly`` kernel.
    coef0 : float, default=0.0
        Independent term of the ``poly`` kernel.
    class_weight : dict, "balanced" or None, default=None
        Multiplies C per class. "balanced" (``n / (n_classes * count)``)
        follows the active rows: after every update the bounds move to the
        weights of the rows still active along an exact path in C. A dict may
        name labels absent from y (as in SVC). The weights in use are
        ``class_weight_``.
    precompute : bool, default=False
        Compute the full kernel matrix at ``fit`` (n^2 floats) instead of
        computing and caching kernel rows on demand.
    n_jobs : int or None, default=None
        Threads over the one-versus-rest heads (the engine releases the GIL).
        None means 1; -1 means all cores.
    max_steps : int or None, default=None
        Bound on the path steps of one update of one head; None means
        ``50 + 10 * n_active``. Past it the head is re-solved exactly.
    cache_size : float, default=200
        Megabytes of kernel rows kept between calls, least recently used
        evicted beyond it (the values of every row against the margin
        vectors are held apart, by the heads); as in SVC. Changes speed and
        memory, never a result.
    screening : bool, default=True
        Safe screening on the CP paths of ``increment`` and ``decrement``
        (and of the exact fit's repairs): per step, only the rows that a
        proven bound cannot exclude from the next event get exact gradient
        rates. The path takes the same events either way (same migrations,
        same sets, decision values equal to rounding); False follows every
        row at every step (the reference the tests compare it with). On
        MNIST at n = 10,000 a screened removal rates 5-18% of the rows per
        step and takes about half the time (``docs/cp-engine.md``, section
        10). An execution setting, like ``n_jobs``: it keeps the model
        fitted and saved files do not record it. Applies to the "threads"
        backend; Ray actors always screen (their engines' default), so that
        both backends reach the same state bit for bit by default.
    backend : {"threads", "ray"}, default="threads"
        Where the heads live. "threads": in this process, ``n_jobs``
        threads over them. "ray": in Ray actors, several heads per actor
        spread over the cluster (``n_jobs`` actors; None or -1: one per CPU
        of the cluster), connected to the running cluster when
        ``ray.init(address=...)`` was called, else to a local one; every
        request is all-or-nothing across the actors and survives their
        deaths. Both give the same model, digest for digest (with
        ``class_weight="balanced"`` and a fixed gamma: equal to rounding,
        Ray re-solving where threads take the bound path). An execution
        setting: saved files do not record it (``eco.load`` gives
        "threads"; see :meth:`with_backend`). Needs ``pip install eco[ray]``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    gamma_ : float
        The kernel coefficient in use (resolved on the active rows).
    class_weight_ : ndarray of shape (n_classes,)
        The class weights in use (resolved on the active rows).
    hyper_paths_ : dict
        How the last update moved the data-dependent hyper-parameters
        (see :class:`eco.receipt.UnlearningReceipt`); empty when none moved.
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
    head_set_ : eco._headset.HeadSet or eco._ray_backend.RayHeadSet
        The kernel store, the heads and the slot tables; what the estimator,
        :mod:`eco.loo`, :mod:`eco.audit` and :mod:`eco.testing` delegate to.

    Notes
    -----
    Degenerate outcomes are defined: with one class left every alpha is 0
    and the decision is that class everywhere (b = +1 or -1); with no
    example left the decision is 0, and ``predict`` follows its tie rule
    (``classes_[1]`` for two classes, as SVC on the boundary; ``classes_[0]``
    for more, the first of the tied heads).
    When no margin vector lies strictly inside its bounds, b is not unique
    and is set to the midpoint of its feasible interval, as libsvm does.

    Threads: a model may be shared by several threads. Updates (``fit``,
    ``increment``, ``decrement``, ``set_params``, ``loo_decision``,
    ``loo_error``) take the model's lock exclusively and run one at a time;
    reads (``predict``, ``decision_function``, ``score``, ``kkt_violation``,
    ``verify``, ``save``, ``state_digest``, ``to_state``, the fitted
    attributes, pickling and copying) share it and run concurrently with
    each other, never during an update, so they see the model before or
    after it, never half-way. ``n_jobs`` threads work inside one call.

    Interrupts and failures: an update is all or nothing. A failure, a
    ``MemoryError`` or a ``KeyboardInterrupt`` (however many, wherever they
    land) leaves the model exactly as it was before the call; while an
    update runs in the main thread, SIGINT is deferred to the next point
    where it can stop safely, and the rollback runs with further interrupts
    deferred. A call that returns has done all its work.

    Ids are matched by value and kind: a request names an id only if it is
    equal to it and of the same kind (bool, integer, float, or any other
    type). ``decrement([3.0])`` does not remove the id ``3``, nor
    ``decrement([True])`` the id ``1``; they raise ``UnknownIdError``. A new
    id equal to a known id of another kind is refused.

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
        cache_size=200,
        backend="threads",
        screening=True,
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
        self.cache_size = cache_size
        self.backend = backend
        self.screening = screening

    # -------------------------------------------------------------- pickling

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.pairwise = self.kernel == "precomputed"
        return tags

    # ------------------------------------------------------------------- fit

    @writes
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
        with interrupt_guard() as guard:
            try:
                return self._fit(X, y, sample_weight, ids, method)
            except BaseException:
                # leave a previously fitted model exactly as it was (the new
                # head set is only installed once solved)
                with guard.deferred():
                    self.__dict__.clear()
                    self.__dict__.update(saved)
                raise

    def _fit(self, X, y, sample_weight, ids, method):
        X, classes, labels, sw, ids, gamma, class_weight = V.check_fit(
            self, X, y, sample_weight, ids, method)
        n = X.shape[0]
        heads = self._head_set_type().from_data(
            X, kernel=self.kernel, gamma=gamma, degree=self.degree, coef0=self.coef0,
            precompute=self.precompute, n_heads=1 if len(classes) == 2 else len(classes),
            labels=labels, C=float(self.C) * class_weight[labels] * sw, ids=ids,
            max_steps=self.max_steps or 0, n_jobs=self.n_jobs, cache_size=self.cache_size)
        V.apply_screening(self, heads)
        heads.solve_all(np.arange(n, dtype=np.intp), "batch" if method == "auto" else method)
        self.classes_ = classes
        self.gamma_ = gamma
        self.class_weight_ = class_weight
        self.head_set_ = heads
        self.hyper_paths_ = {}
        return self

    # ------------------------------------------------------------ increment

    @writes
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
        X, labels, sw, ids = V.check_increment(self, X, y, ids, sample_weight)
        return _updates.learn(self, X, labels, sw, ids)

    # ------------------------------------------------------------ decrement

    @writes
    def decrement(self, ids, batch=True, *, audit=False):
        """Unlearn examples exactly.

        Parameters
        ----------
        ids : hashable or sequence of hashable
            Ids of active examples.
        batch : bool, default=True
            True: all the examples leave along one multi-point path (their
            coefficients move to zero together). False: one after the other.
            Both end in the same model.
        audit : bool, default=False
            True: recompute the KKT certificate from scratch and digest the
            state before and after for the receipt (O(n |SV|) work, often
            many times the path itself). False (the default): the call does
            no work beyond the path and the receipt has None in those
            fields; :meth:`verify` and :meth:`kkt_violation` audit the model
            on request.

        Returns
        -------
        receipt : UnlearningReceipt
            Built once the change is complete: a call that raises has
            changed nothing.

        Raises
        ------
        UnknownIdError
            An id the model never saw or has already removed.
        DuplicateIdError
            The same id twice in the request.
        """
        t0 = time.perf_counter()
        self._require_fitted()
        V.check_flag(batch, "batch")
        V.check_flag(audit, "audit")
        id_list = V.as_id_list(ids)
        if len(id_list) == 0:
            raise InvalidInputError("decrement: no ids given")
        slots = V.slots_of_request(self.head_set_, id_list)
        return _updates.unlearn(self, id_list, slots, batch, audit, t0)

    # ----------------------------------------------------------- parameters

    @writes
    def set_params(self, **params):
        """Set parameters; on a fitted model, changing one that defines it un-fits it.

        ``C``, ``kernel``, ``gamma``, ``degree``, ``coef0`` and
        ``class_weight`` define the fitted model: setting one of them to a
        different value (or type) on a fitted model removes the fitted state,
        so that ``predict``, ``increment``, ``verify`` ... raise
        ``NotFittedError`` until ``fit`` is called again, rather than mixing
        the new value with a model trained under the old one. ``n_jobs``,
        ``max_steps``, ``precompute`` and ``cache_size`` keep the model fitted (they change
        how the work is done, not its result): its state moves, bit for bit,
        to a head set built with the new settings. ``backend`` takes effect
        at the next ``fit``; :meth:`with_backend` moves a fitted model.

        Returns
        -------
        self : CPSVM
        """
        return _params.set_params(self, params, super().set_params)

    # ------------------------------------------------------------- state

    @reads
    def state_digest(self):
        """BLAKE2b digest of the model's primary state.

        Covers the hyper-parameters, the active ids, and for every head the
        labels, bounds, coefficients, bias, sets and margin order of the
        active examples; not the derived gradients and inverse bordered
        matrix, which a loaded model recomputes (equal up to the last bits).
        Two models with the same digest make the same predictions.
        """
        check_is_fitted(self)
        heads = self.head_set_
        with heads.digest_states() as states:
            return state_digest(self.get_params(), self.gamma_, self.classes_,
                                self.class_weight_, heads.slot_ids, states, heads.slot_given)

    # -------------------------------------------------------- certificates

    @reads
    def kkt_violation(self):
        """Largest KKT violation over every head, recomputed from scratch.

        Gradients ``g_i = y_i f(x_i) - 1`` are recomputed from the current
        alpha and b and the kernel rows (not taken from the incremental
        state). Each example's violation (``|g_i|`` when 0 < alpha_i < C_i,
        the wrong-signed part at a bound) is divided by
        ``1 + |b| + 1e-6 sum_j |alpha_j K_ij|``, which is absolute while the
        terms are of order one and invariant under rescaling of the
        features; ``|sum_i y_i alpha_i| / sum_i alpha_i`` and any
        coefficient outside its box (scored at least 1) count too. See
        ``docs/cp-engine.md`` section 5.

        Returns
        -------
        float
        """
        check_is_fitted(self)
        heads = self.head_set_
        return max(heads.violation(h) for h in range(heads.n_heads))

    # ------------------------------------------------------------- predict

    @reads
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
        X = V.check_features(self, X, "X")
        heads = self.head_set_
        coef = heads.coefficients()
        sv = np.flatnonzero(np.any(coef != 0.0, axis=1))
        if self.kernel == "precomputed":
            K = X[:, sv]
        else:
            K = cross_kernel(X, heads.features_of(sv), self.kernel,
                             self.gamma_, self.degree, self.coef0)
        f = K @ coef[sv] + heads.biases()
        return f[:, 0] if heads.n_heads == 1 else f

    @reads
    def score(self, X, y, sample_weight=None):
        """Mean accuracy of ``predict(X)`` against ``y``."""
        y_arr = np.asarray(y)
        n = np.shape(X)[0] if np.ndim(X) >= 1 else None
        if y_arr.ndim != 1 or (n is not None and y_arr.shape[0] != n):
            raise InvalidInputError(
                f"score: inconsistent numbers of samples: X has {n} rows, y has shape {y_arr.shape}")
        try:
            return super().score(X, y, sample_weight=sample_weight)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, (InvalidInputError, NotFittedError)):
                raise
            # scikit-learn's metric refuses the labels (a mix of strings and numbers)
            raise InvalidInputError(f"score: {exc}") from exc

    @reads
    def predict(self, X):
        """Class labels: the sign of the decision (two classes) or its argmax.

        Two classes: ``classes_[1]`` where the decision is >= 0, as
        :class:`~sklearn.svm.SVC` predicts (a point exactly on the boundary
        goes to ``classes_[1]``). More classes: the head with the largest
        decision (one-versus-rest); a tie goes to the first of the tied
        classes in ``classes_`` (``numpy.argmax``), which is also what SVC
        does with ``break_ties=True``; SVC's default one-versus-one vote can
        differ on such points.
        """
        f = self.decision_function(X)
        if f.ndim == 1:
            return self.classes_[(f >= 0).astype(np.int64)]
        return self.classes_[np.argmax(f, axis=1)]

    # ------------------------------------------- audit, persistence, LOO

    @reads
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

        V.check_flag(reference, "reference")
        return verify_model(self, reference=reference)

    @reads
    def save(self, path):
        """Save the model to `path` in eco's safe format (no pickle); see :mod:`eco.persistence`."""
        write_state(self.to_state(), path)

    @writes
    def loo_decision(self):
        """Exact leave-one-out decision values of the active examples; see :mod:`eco.loo`.

        The model serves as scratch space and is restored; it holds its lock
        exclusively meanwhile, so no concurrent read sees the scratch state.
        """
        from .loo import loo_decision

        return loo_decision(self)

    @writes
    def loo_error(self):
        """Exact leave-one-out error rate of the active examples; see :mod:`eco.loo`."""
        from .loo import loo_error

        return loo_error(self)
