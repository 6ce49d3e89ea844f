"""Hyper-parameters that follow the data: ``gamma="scale"`` and ``class_weight="balanced"``.

Both are computed from the training rows, so exact unlearning must move them
with the rows: after an update the model equals ``clone(model).fit(rows
still active)``, whose hyper-parameters are resolved on those rows. This
module resolves them on the rows an update leaves active and moves the
model to them:

- class weights change the per-example bounds ``C_i`` only; the heads move
  along the exact path in the bounds (:meth:`eco._cp_core.CPEngine.move_bounds`,
  the regularisation-parameter path of Diehl and Cauwenberghs, IJCNN 2003)
  after the rows have been learned or unlearned with the old weights. Receipt
  path ``"bound_path"``; a head whose path cannot finish is re-solved warm
  (``"bound_resolve"``).
- a gamma that changes changes the kernel itself: the store is rebuilt with
  the new gamma and every head re-solved exactly on the rows active after
  the update, the way ``fit`` solves (libsvm seed, bordered-system polish,
  CP repair); the learn or unlearn is folded into that solve instead of
  being run with the old kernel first. Receipt path ``"resolve_gamma"``.
  A warm start from the previous sets and coefficients (:func:`warm_solve`:
  the engine's settle, i.e. purify, polish on the previous margin set,
  repair with CP steps) was measured against it and is slower (digits, 3
  vs rest: as fast for one row removed, 6x slower for 60; MNIST features,
  n = 5000: 14x slower for one row, 13x for 60), so it serves only as the
  fallback of the bound path.

``gamma="auto"`` is ``1 / n_features`` and never changes; a numeric gamma and
explicit class weights never change: such models keep the fast paths and an
empty ``hyper_paths``.
"""

from dataclasses import dataclass, field

import numpy as np

from . import _cp_core
from ._kernels import resolve_gamma
from ._warmstart import head_violation
from .exceptions import EngineError

__all__ = ["HyperPlan", "plan_update", "commit", "follows_data", "PATH_BOUNDS",
           "PATH_BOUNDS_RESOLVE", "PATH_GAMMA"]

#: Class weights moved along the exact path in the bounds C_i.
PATH_BOUNDS = "bound_path"
#: The bound path could not finish in some head: that head was re-solved
#: exactly with the new bounds, warm-started from its sets.
PATH_BOUNDS_RESOLVE = "bound_resolve"
#: gamma changed: every head re-solved exactly with the new kernel (as fit solves).
PATH_GAMMA = "resolve_gamma"

_SET_INACTIVE = _cp_core.SET_INACTIVE
_SET_RESERVE = _cp_core.SET_RESERVE
_SET_MARGIN = _cp_core.SET_MARGIN
_SET_ERROR = _cp_core.SET_ERROR

# Acceptance of a warm solve: the certificate from scratch (as in _warmstart).
_FIT_TOL = 1e-8
# Gradients of error (reserve) examples may exceed 0 (fall below 0) by this
# much after the polish before they count as misplaced.
_POLISH_TOL = 1e-10


def follows_data(est):
    """True when a hyper-parameter of `est` is resolved from its rows and can change."""
    gamma_moves = est.gamma == "scale" and est.kernel in ("rbf", "poly")
    return gamma_moves or est.class_weight == "balanced"


def balanced_weights(labels, n_classes, previous):
    """``n / (n_present * count_c)`` per present class (as scikit-learn computes "balanced").

    Classes absent from `labels` keep their `previous` weight (no row uses it).
    """
    counts = np.bincount(labels, minlength=n_classes)
    present = counts > 0
    weights = np.array(previous, dtype=np.float64)
    if present.any():
        weights[present] = len(labels) / (present.sum() * counts[present].astype(np.float64))
    return weights


@dataclass
class HyperPlan:
    """The hyper-parameters an update leads to, and how the heads get there.

    Attributes
    ----------
    gamma, class_weight : float, ndarray
        Resolved on the rows active after the update.
    new_gamma : bool
        The kernel changes: the update is one warm re-solve.
    ratio : ndarray or None
        Per class, new weight over old (None when the weights do not change).
    active : ndarray of slots
        The slots active after the update.
    paths : dict
        Filled by :meth:`run`: ``{"gamma": ..., "class_weight": ...}`` for
        what moved (empty when nothing did).
    """

    gamma: float
    class_weight: np.ndarray
    new_gamma: bool
    ratio: np.ndarray | None
    active: np.ndarray
    paths: dict = field(default_factory=dict)

    @property
    def unchanged(self):
        return not self.new_gamma and self.ratio is None

    def run(self, heads, update):
        """Apply `update` (a callable doing the learn or unlearn) and move the hyper-parameters.

        Call inside the head set's transaction, which puts everything back
        (the kernel store and heads included) on any exception. `update` is skipped when the kernel
        changes (the re-solve on ``active`` includes it).
        """
        if self.new_gamma:
            return self._resolve(heads)
        result = update()
        if self.ratio is not None:
            self.paths["class_weight"] = move_class_weights(heads, self.ratio)
        return result

    def _resolve(self, heads):
        new_C = heads.slot_C if self.ratio is None else scaled_bounds(heads, self.ratio)
        heads.rekernel(self.gamma)
        heads.set_bounds(new_C)
        heads.solve_all(self.active, "batch")
        self.paths["gamma"] = PATH_GAMMA
        if self.ratio is not None:
            self.paths["class_weight"] = PATH_GAMMA
        return ()


def plan_update(est, heads, *, removed=None, added=None):
    """Resolve the data-dependent hyper-parameters on the rows active after an update.

    Parameters
    ----------
    est : eco.CPSVM
    heads : eco._headset.HeadSet
        Its head set; for an increment the new rows are already stored.
    removed, added : ndarray of slots, optional
        The slots the update removes or adds.

    Returns
    -------
    HyperPlan
    """
    if not follows_data(est):
        return HyperPlan(gamma=float(est.gamma_), class_weight=est.class_weight_,
                         new_gamma=False, ratio=None, active=None)
    active = heads.active_slots()
    if removed is not None:
        active = np.setdiff1d(active, removed)
    if added is not None:
        active = np.union1d(active, added)
    active = active.astype(np.intp)
    gamma, weights, ratio, new_gamma = float(est.gamma_), est.class_weight_, None, False
    if len(active) > 0:
        if est.gamma == "scale" and est.kernel in ("rbf", "poly"):
            gamma = resolve_gamma("scale", heads.features_of(active), est.kernel)
            new_gamma = gamma != float(est.gamma_)
        if est.class_weight == "balanced":
            weights = balanced_weights(heads.slot_labels[active], len(est.classes_),
                                       est.class_weight_)
            if not np.array_equal(weights, est.class_weight_):
                ratio = weights / np.asarray(est.class_weight_, dtype=np.float64)
    return HyperPlan(gamma=gamma, class_weight=np.asarray(weights, dtype=np.float64),
                     new_gamma=new_gamma, ratio=ratio, active=active)


def commit(est, plan):
    """Record on `est` the hyper-parameters `plan` moved the model to (after its transaction)."""
    est.gamma_ = plan.gamma
    est.class_weight_ = plan.class_weight
    est.hyper_paths_ = dict(plan.paths)


def scaled_bounds(heads, ratio):
    """Every slot's bound with its class weight replaced: ``C_i * new_w / old_w``."""
    return np.asarray(heads.slot_C) * ratio[heads.slot_labels]


def move_class_weights(heads, ratio):
    """Move every head's bounds to the new class weights along the exact path.

    A head whose path cannot finish, or ends with a certificate (from
    scratch) above the fit's acceptance bound, is re-solved exactly,
    warm-started from its sets. Returns the receipt path.
    """
    new_C = scaled_bounds(heads, ratio)
    active = heads.active_slots()

    def move(h):
        try:
            heads.engine(h).move_bounds(new_C)
        except EngineError:
            return False
        # a path on degenerate (rank-deficient) data can end slightly off the
        # KKT conditions: the certificate from scratch decides, never returned above it
        return heads.violation(h) <= _FIT_TOL

    moved = heads.map_heads(move)
    heads.set_bounds(new_C)
    for h, ok in enumerate(moved):
        if not ok:
            # from where the path stopped: its sets and coefficients are a close guess
            warm_solve(heads, h, active, heads.sets(h), heads.alphas()[h])
    return PATH_BOUNDS if all(moved) else PATH_BOUNDS_RESOLVE


def warm_solve(heads, head, active, guess, alpha=None):
    """Solve `head` exactly on `active`, starting from the sets `guess` (and coefficients `alpha`).

    The engine's ``settle`` (purify, bordered-system polish, CP repair) runs
    from the guess with the current kernel and bounds: error vectors at their
    bound, margin coefficients clipped into their box, the rest at 0. Slots of
    `active` that `guess` marks inactive start as reserve. Falls back to the
    solve from scratch (libsvm seed); returns False when it did.
    """
    if _settle_from(heads, head, active, guess, alpha) \
            and head_violation(heads.engine(head)) <= _FIT_TOL:
        return True
    heads.solve(head, active, "batch")
    return False


def _settle_from(heads, head, active, guess, alpha):
    engine = heads.engine(head)
    n = heads.n_slots
    y = heads.head_labels(head)
    C = np.asarray(heads.slot_C, dtype=np.float64)
    # slots stored after the guess was taken (an increment's) are not in it
    g = np.full(n, _SET_INACTIVE, dtype=np.int8)
    g[:len(guess)] = guess
    sets = np.full(n, _SET_INACTIVE, dtype=np.int8)
    sets[active] = np.where(g[active] == _SET_INACTIVE, _SET_RESERVE, g[active])
    sets[active[C[active] <= 0]] = _SET_RESERVE
    if len(np.unique(y[active[C[active] > 0]])) < 2:
        return False  # one class or none: the solve from scratch defines it
    a = np.zeros(n)
    if alpha is not None:
        a[:len(alpha)] = alpha
    a = np.where(sets == _SET_MARGIN, np.clip(a, 0.0, C), 0.0)
    a[sets == _SET_ERROR] = C[sets == _SET_ERROR]
    try:
        engine.settle(y, C, a, engine.b, sets, _POLISH_TOL)
    except EngineError:
        return False
    return True
