"""Exact solve of one head from scratch: libsvm seed, polish, repair.

Moved from ``svm.py`` as whole units (``_solve_head``, ``_seed_and_polish``,
``_head_violation``); the bodies are kept as they were, with ``self`` replaced
by the head set (:class:`eco._headset.HeadSet`) and its kernel store.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import SVC

from . import _cp_core
from .exceptions import EngineError, UnlearningError

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


def seed_max_iter(n):
    """Bound on libsvm's iterations for the seed of `n` rows.

    libsvm has no bound of its own (``max_iter=-1``) and can run for hours
    on badly scaled data (features of 1e6 with a linear kernel, weights of
    1e300). A seed stopped at this bound is still a seed: the polish and
    the CP repair make it exact, or the solve falls back to learning the
    rows one by one, itself bounded by the engine's step limit.
    """
    return max(100_000, 50 * int(n))


def _fit_seed(svc, X, y, sample_weight):
    # the bound is expected to bite on hard data: that is not the caller's concern
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svc.fit(X, y, sample_weight=sample_weight)


def solve_head(heads, head, active, method):
    """Solve one head exactly from scratch on the `active` slots."""
    engine = heads.engine(head)
    n = heads.store.n_slots
    y = heads.head_labels(head)
    C = heads.slot_C
    empty = np.full(n, _SET_INACTIVE, dtype=np.int8)
    engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
    if (method == "batch" and seed_and_polish(heads.store, engine, active, y, C)
            and head_violation(engine) <= _FIT_TOL):
        return
    # incremental: learn the rows one after the other
    engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
    for s in active:
        try:
            engine.learn(int(s), y[s], C[s])
        except EngineError as exc:
            raise UnlearningError(
                f"exact solve failed on example {heads.slot_ids[s]!r}: {exc.message}") from exc
    violation = head_violation(engine)
    if violation > _FIT_TOL:
        raise UnlearningError(
            f"exact solve failed: KKT violation {violation:.3g} after fitting "
            "(degenerate, rank-deficient data)")


def head_violation(engine):
    """Largest KKT violation of one engine, gradients recomputed from scratch."""
    return kkt_violation(engine.alpha_all, engine.y_all, engine.C_all, engine.sets_all,
                         engine.recompute_gradients())


def seed_and_polish(store, engine, active, y, C):
    """Exact fit seeded by libsvm; returns False when the seed cannot be made exact."""
    n = store.n_slots
    weighted = active[C[active] > 0]
    sets = np.full(n, _SET_INACTIVE, dtype=np.int8)
    sets[active] = _SET_RESERVE
    if len(np.unique(y[weighted])) < 2:
        # nothing to solve: every alpha is 0; finish() sets the canonical b
        try:
            engine.set_state(y, C, np.zeros(n), 0.0, sets, np.zeros(0, np.int32), np.zeros(n),
                             None)
            engine.finish()
        except EngineError:
            return False
        return True
    keep = active[C[active] > 0]  # libsvm rejects zero weights; their alpha is 0
    if store.kernel == "precomputed":
        K = store.kernel_block(keep)[:, keep]
        svc = SVC(C=1.0, kernel="precomputed", tol=_SEED_TOL, shrinking=True,
                  max_iter=seed_max_iter(len(keep)))
        _fit_seed(svc, K, y[keep], C[keep])
    else:
        Xs = store.features()[keep]
        svc = SVC(C=1.0, kernel=store.kernel, gamma=store.gamma, degree=store.degree,
                  coef0=store.coef0, tol=_SEED_TOL, shrinking=True, cache_size=500,
                  max_iter=seed_max_iter(len(keep)))
        _fit_seed(svc, Xs, y[keep], C[keep])
    alpha = np.zeros(n)
    alpha[keep[svc.support_]] = np.abs(svc.dual_coef_[0])
    upper = alpha >= C * (1 - 1e-12)
    free = (alpha > 0) & ~upper
    sets[keep[upper[keep]]] = _SET_ERROR
    sets[keep[free[keep]]] = _SET_MARGIN
    # polish; margin vectors pushed outside their box move to that bound
    for _ in range(20):
        try:
            engine.polish(y, C, sets)
        except EngineError:
            return False
        if engine.drift() > 1e-8:
            return False
        a = engine.alpha_all
        low = (sets == _SET_MARGIN) & (a < 0)
        high = (sets == _SET_MARGIN) & (a > C)
        if not (low.any() or high.any()):
            break
        sets[low] = _SET_RESERVE
        sets[high] = _SET_ERROR
    else:
        return False
    try:
        engine.finish()
    except EngineError:
        return False
    # examples whose gradient has the wrong sign for their set: unlearn
    # them together, then learn them one by one (both exact CP moves)
    g = engine.g_all
    sets = engine.sets_all
    bad = np.flatnonzero(
        (C > 0) & (((sets == _SET_ERROR) & (g > _POLISH_TOL))
                   | ((sets == _SET_RESERVE) & (g < -_POLISH_TOL))))
    if len(bad):
        try:
            engine.unlearn(bad.astype(np.intp))
            for s in bad:
                engine.learn(int(s), y[s], C[s])
        except EngineError:
            return False
    return True


def kkt_violation(alpha, y, C, sets, g):
    """KKT certificate of one head from its arrays (`g` recomputed by the caller)."""
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
