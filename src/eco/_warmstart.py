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
# Repair rounds (purify, polish, CP steps) after a path that could not finish.
_REPAIR_ROUNDS = 4
# Iteration cap of the libsvm seed: on rank-deficient or badly scaled
# problems libsvm can run for minutes; a rough seed is enough.
_SEED_MAX_ITER = 200000


def solve_head(heads, head, active, method):
    """Solve one head exactly from scratch on the `active` slots.

    The batch method seeds with libsvm and settles (purify, polish, CP
    repair); when that is not certified, the rows are learned one by one and
    any state a path left astray is repaired by up to ``_REPAIR_ROUNDS``
    settles. Only complete states count; the best certified one is kept.
    """
    engine = heads.engine(head)
    n = heads.store.n_slots
    y = heads.head_labels(head)
    C = heads.slot_C
    empty = np.full(n, _SET_INACTIVE, dtype=np.int8)
    engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
    best = None
    if method == "batch" and seed_and_polish(heads.store, engine, active, y, C):
        violation = head_violation(engine)
        if violation <= _FIT_TOL:
            return
        best = (violation, engine.get_state())
    # incremental: learn the rows one after the other; a path that cannot
    # finish leaves an approximate state that the repair below makes exact
    engine.set_state(y, C, np.zeros(n), 0.0, empty, np.zeros(0, np.int32), np.zeros(n), None)
    complete = _learn_all(engine, active, y, C)
    for _ in range(_REPAIR_ROUNDS):
        # rows the path never reached are not in the certificate yet
        violation = head_violation(engine) if complete else np.inf
        if best is None or violation < best[0]:
            best = (violation, engine.get_state())
        if violation <= _FIT_TOL:
            return
        complete = _repair(engine, active, y, C)
    violation = head_violation(engine) if complete else np.inf
    if violation > best[0]:
        engine.restore(best[1])
        violation = best[0]
    if violation > _FIT_TOL:
        raise UnlearningError(
            f"exact solve failed: KKT violation {violation:.3g} after repair")


def _learn_all(engine, active, y, C):
    """Learn `active` one by one; False when a path could not finish."""
    for s in active:
        try:
            engine.learn(int(s), y[s], C[s])
        except EngineError:
            return False
    return True


def _repair(engine, active, y, C):
    """One settle of the engine's current state; False when a step failed.

    Rows the path never reached enter at alpha = 0; a coefficient the path
    left mid-drive counts as free (purify, polish and CP steps sort it out).
    """
    sets = engine.sets_all
    alpha = engine.alpha_all
    if not (np.all(np.isfinite(alpha)) and np.isfinite(engine.b)):
        # a step that broke down (overflow, a singular solve) left no
        # approximate solution to settle: this round cannot repair it
        return False
    todo = active[sets[active] == _SET_INACTIVE]
    alpha[todo] = 0.0
    sets[todo] = _SET_RESERVE
    sets[sets == _cp_core.SET_DRIVEN] = _SET_MARGIN
    try:
        engine.settle(y, C, alpha, engine.b, sets, _POLISH_TOL)
    except (EngineError, ValueError):
        # ValueError: the installed state was refused (non-finite values)
        return False
    return True


def head_violation(engine):
    """KKT certificate of one engine recomputed from scratch, relative to the size of its terms."""
    return engine.certificate()


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
                  max_iter=_SEED_MAX_ITER)
        Xs = K
    else:
        Xs = store.features()[keep]
        svc = SVC(C=1.0, kernel=store.kernel, gamma=store.gamma, degree=store.degree,
                  coef0=store.coef0, tol=_SEED_TOL, shrinking=True, cache_size=500,
                  max_iter=_SEED_MAX_ITER)
    with warnings.catch_warnings():
        # a seed cut short by max_iter is still a seed: settle makes it exact
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            svc.fit(Xs, y[keep], sample_weight=C[keep])
        except ValueError:
            # libsvm's float64 solve overflowed (kernel values of 1e36 and
            # more: "dual coefficients or intercepts are not finite"): no
            # seed; the caller learns the rows one by one instead
            return False
    alpha = np.zeros(n)
    alpha[keep[svc.support_]] = np.abs(svc.dual_coef_[0])
    upper = alpha >= C * (1 - 1e-12)
    free = (alpha > 0) & ~upper
    alpha[keep[upper[keep]]] = C[keep[upper[keep]]]
    sets[keep[upper[keep]]] = _SET_ERROR
    sets[keep[free[keep]]] = _SET_MARGIN
    # the free set of a rank-deficient kernel is dependent: settle pivots it
    # to an independent one, polishes and repairs with CP steps
    try:
        engine.settle(y, C, alpha, float(svc.intercept_[0]), sets, _POLISH_TOL)
    except EngineError:
        return False
    return True
