"""The update flows of :class:`eco.CPSVM`: learn and unlearn, all or nothing.

The estimator validates a request and hands it here; this module runs it on
the head set: inside one transaction, with the data-dependent
hyper-parameters moved along (:mod:`eco._hyper`), the optional audit of the
state reached, and, once committed, the erasure of the removed rows. The
default removal (no audit, hyper-parameters fixed) is one request of the head
set, which commits and erases (``remove``: one round trip on Ray). A call
that raises has changed nothing (but for an erasure that failed after the
commit, which says so); a call that returns is complete.
"""

import time

from . import _hyper
from ._validation import apply_screening
from ._headset import ErasureIncomplete, erase_committed, id_array
from .exceptions import UnlearningError
from .receipt import PATH_RESERVE_DROP, PATH_RESOLVE, PATH_STEPS, UnlearningReceipt

__all__ = ["learn", "unlearn"]

_PLAN_ATTRIBUTES = ("head_set_", "gamma_", "class_weight_", "hyper_paths_")


def learn(est, X, labels, sample_weight, ids):
    """Learn validated rows exactly; returns their ids as an array."""
    heads = est.head_set_
    apply_screening(est, heads)
    new_ids = id_array(ids)
    bounds = float(est.C) * est.class_weight_[labels] * sample_weight
    with heads.transaction():
        # on failure the rows never happened: the store forgets them too
        slots = heads.append(X, labels, bounds, ids)
        plan = _hyper.plan_update(est, heads, added=slots)
        plan.run(est, heads, lambda: heads.learn(slots))
    _hyper.commit(est, plan)
    return new_ids


def unlearn(est, id_list, slots, batch, audit, t0=None):
    """Unlearn the validated `slots` (named `id_list`) exactly; returns the receipt."""
    t0 = time.perf_counter() if t0 is None else t0
    heads = est.head_set_
    apply_screening(est, heads)
    reserve = [bool(r) for r in heads.reserve_mask(slots)]
    steps0, migr0 = heads.n_steps, heads.n_migrations
    resolved = ()
    kkt = digest_before = digest_after = None
    plan = _hyper.plan_update(est, heads, removed=slots)
    if not audit and plan.unchanged:
        # the default call: unlearn, commit and erase as one request of the
        # head set (one round trip to the actors on Ray)
        try:
            resolved = heads.remove(slots, batch, reserve_only=all(reserve))
        except ErasureIncomplete as exc:
            _hyper.commit(est, plan)
            raise _erasure_error(id_list, exc) from exc.__cause__
        _hyper.commit(est, plan)
    else:
        digest_before = est.state_digest() if audit else None
        # the audit runs inside the transaction: if it fails, the model
        # is rolled back and the caller's error means "unchanged". With the
        # hyper-parameters unchanged the update only unlearns `slots`: the
        # heads where that is a reserve drop are snapshotted as its record
        with heads.transaction(removing=slots if plan.unchanged else None):
            if plan.unchanged and all(reserve):
                heads.drop_reserve(slots)
            else:
                resolved = plan.run(est, heads, lambda: heads.unlearn(slots, batch))
            if audit:
                kkt, digest_after = _audit_plan(est, plan)
        _hyper.commit(est, plan)
        _erase(est, id_list, slots)
    served = plan.paths.get("gamma") or (PATH_RESOLVE if resolved else PATH_STEPS)
    n_steps, n_migrations = heads.n_steps - steps0, heads.n_migrations - migr0
    if plan.head_set is not None:  # solved anew (gamma="scale"): its steps count too
        n_steps += plan.head_set.n_steps
        n_migrations += plan.head_set.n_migrations
    return UnlearningReceipt(
        removed_ids=tuple(id_list),
        paths={i: PATH_RESERVE_DROP if r else served for i, r in zip(id_list, reserve)},
        batch=bool(batch),
        n_migrations=n_migrations,
        n_steps=n_steps,
        kkt_violation=kkt,
        digest_before=digest_before,
        digest_after=digest_after,
        wall_time_s=time.perf_counter() - t0,
        resolved_heads=tuple(resolved),
        hyper_paths=dict(plan.paths),
    )


def _erase(est, id_list, slots):
    """Committed: now nothing of the removed rows may stay in the model.

    After the commit, since erased rows cannot be rolled back; a head set
    replaced by a gamma re-solve is dropped whole.
    """
    try:
        erase_committed(est.head_set_, slots)
    except ErasureIncomplete as exc:
        raise _erasure_error(id_list, exc) from exc.__cause__


def _erasure_error(id_list, exc):
    # the caller's message, naming the ids, with the cause of ErasureIncomplete `exc`
    return UnlearningError(
        f"decrement: the examples {id_list!r} were removed (the model is updated), "
        f"but erasing their stored rows failed ({(exc.__cause__ or exc)!r}); the erasure is "
        "completed by the next decrement")


def _audit_plan(est, plan):
    """Certificate and digest of the state `plan` leads to (inside the update's transaction).

    The plan is committed for the audit and undone if the audit fails, so
    that an error still means "unchanged".
    """
    saved = {k: est.__dict__[k] for k in _PLAN_ATTRIBUTES if k in est.__dict__}
    _hyper.commit(est, plan)
    try:
        return est.kkt_violation(), est.state_digest()
    except BaseException:
        for k in _PLAN_ATTRIBUTES:
            est.__dict__.pop(k, None)
        est.__dict__.update(saved)
        raise
