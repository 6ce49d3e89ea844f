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
  path ``"bound_path"``; a head whose path cannot finish is re-solved
  exactly from scratch (``"bound_resolve"``), as is every head on a backend
  without the bound path.
- a gamma that changes changes the kernel itself: a new head set over the
  same stored rows, with the new gamma, is solved exactly on the rows active after
  the update, the way ``fit`` solves (libsvm seed, bordered-system polish,
  CP repair); the learn or unlearn is folded into that solve instead of
  being run with the old kernel first. Receipt path ``"resolve_gamma"``.
  A warm start from the previous sets and coefficients (the engine's
  settle: purify, polish on the previous margin set, repair with CP steps)
  was measured against it and is slower (digits, 3 vs rest: as fast for one
  row removed, 6x slower for 60; MNIST features, n = 5000: 14x slower for
  one row, 13x for 60), so it is not used.

``gamma="auto"`` is ``1 / n_features`` and never changes; a numeric gamma and
explicit class weights never change: such models keep the fast paths and an
empty ``hyper_paths``.
"""

from dataclasses import dataclass, field

import numpy as np

from ._kernels import resolve_gamma

__all__ = ["HyperPlan", "plan_update", "commit", "follows_data", "PATH_BOUNDS",
           "PATH_BOUNDS_RESOLVE", "PATH_GAMMA"]

#: Class weights moved along the exact path in the bounds C_i.
PATH_BOUNDS = "bound_path"
#: The bound path could not finish in some head (or the backend has none):
#: that head was re-solved exactly from scratch with the new bounds.
PATH_BOUNDS_RESOLVE = "bound_resolve"
#: gamma changed: every head re-solved exactly with the new kernel (as fit solves).
PATH_GAMMA = "resolve_gamma"

# A head is accepted after the bound path when its certificate from scratch
# is below this (the acceptance bound of a fit, as in _warmstart).
_FIT_TOL = 1e-8


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
        The kernel changes: the update is one exact solve on a new head set.
    ratio : ndarray or None
        Per class, new weight over old (None when the weights do not change).
    active : ndarray of slots
        The slots active after the update.
    head_set : head set or None
        Set by :meth:`run` when the kernel changed: the new head set to install.
    paths : dict
        Filled by :meth:`run`: ``{"gamma": ..., "class_weight": ...}`` for
        what moved (empty when nothing did).
    """

    gamma: float
    class_weight: np.ndarray
    new_gamma: bool
    ratio: np.ndarray | None
    active: np.ndarray | None
    head_set: object = None
    paths: dict = field(default_factory=dict)

    @property
    def unchanged(self):
        return not self.new_gamma and self.ratio is None

    def run(self, est, heads, update):
        """Apply `update` (a callable doing the learn or unlearn) and move the hyper-parameters.

        Call inside the head set's transaction (on any exception it puts the
        head set back). When the kernel changes, `update` is skipped: a new
        head set over the same stored rows is solved exactly on ``active``
        (the update included) and left in ``head_set``; `heads` is not
        modified beyond what the caller did. Returns what `update` returned
        (``()`` when it was skipped).
        """
        if self.new_gamma:
            C = heads.slot_C if self.ratio is None else scaled_bounds(heads, self.ratio)
            self.head_set = solved_anew(est, heads, self.gamma, C, self.active)
            self.paths["gamma"] = PATH_GAMMA
            if self.ratio is not None:
                self.paths["class_weight"] = PATH_GAMMA
            return ()
        result = update()
        if self.ratio is not None:
            new_C = scaled_bounds(heads, self.ratio)
            if hasattr(heads, "move_bounds"):
                self.paths["class_weight"] = move_class_weights(heads, new_C)
            else:
                # a backend without the bound path: one exact solve with the new bounds
                self.head_set = solved_anew(est, heads, est.gamma_, new_C, heads.active_slots())
                self.paths["class_weight"] = PATH_BOUNDS_RESOLVE
        return result


def plan_update(est, heads, *, removed=None, added=None):
    """Resolve the data-dependent hyper-parameters on the rows active after an update.

    Parameters
    ----------
    est : eco.CPSVM
    heads : head set
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
    """Record on `est` what `plan` moved the model to (after its transaction succeeded)."""
    if plan.head_set is not None:
        est.head_set_ = plan.head_set
    est.gamma_ = plan.gamma
    est.class_weight_ = plan.class_weight
    est.hyper_paths_ = dict(plan.paths)


def scaled_bounds(heads, ratio):
    """Every slot's bound with its class weight replaced: ``C_i * new_w / old_w``."""
    return np.asarray(heads.slot_C) * ratio[heads.slot_labels]


def solved_anew(est, heads, gamma, C, active):
    """A new head set of the same backend over the same stored rows, solved exactly on `active`.

    Same slots, ids and labels; kernel coefficient `gamma` and bounds `C`.
    The solve is the one ``fit`` runs (libsvm seed, polish, CP repair).
    """
    new = type(heads).from_data(
        heads.stored_data(), kernel=est.kernel, gamma=gamma, degree=est.degree,
        coef0=est.coef0, precompute=est.precompute, n_heads=heads.n_heads,
        labels=heads.slot_labels, C=C, ids=list(heads.slot_ids), max_steps=est.max_steps or 0,
        n_jobs=est.n_jobs, cache_size=est.cache_size)
    # erased slots stay erased, default ids and digests continue as before
    new.adopt_layout(heads.slot_given, heads.n_given)
    new.solve_all(np.asarray(active, dtype=np.intp), "batch")
    return new


def move_class_weights(heads, new_C):
    """Move every head's bounds to `new_C` along the exact path; returns the receipt path.

    A head whose path cannot finish, or ends with a certificate (from
    scratch) above the fit's acceptance bound, is re-solved exactly from
    scratch on its rows (``"bound_resolve"``).
    """
    failed = set(heads.move_bounds(new_C))
    # a path on degenerate (rank-deficient) data can end slightly off the
    # KKT conditions: the certificate from scratch decides, never returned above it
    failed |= {h for h in range(heads.n_heads) if h not in failed
               and heads.violation(h) > _FIT_TOL}
    if not failed:
        return PATH_BOUNDS
    active = heads.active_slots()
    for h in sorted(failed):
        heads.solve(h, active, "batch")
    return PATH_BOUNDS_RESOLVE
