"""Exact leave-one-out decision values and error.

For every active example i, the leave-one-out (LOO) decision is the decision
value at x_i of the SVM trained from scratch on every active example but i,
with the model's resolved hyper-parameters (``gamma_``, ``class_weight_``)
held fixed: ``gamma="scale"`` or ``"balanced"`` weights are not resolved again
on the n - 1 rows (as the README says).
CP makes it exact and cheap: unlearn i from a copy of a head's state, read the
decision at x_i, restore the state. An example with alpha = 0 in a head (a
reserve vector) needs no work in that head: removing it leaves every
coefficient and the bias as they are (the bias is pinned by a margin vector
strictly inside its box), so its LOO value there is its current value. Only
when a head has no such margin vector (its bias is the midpoint of an
interval that may shrink) is the reserve vector actually unlearned.
"""

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._concurrency import model_lock
from ._cp_core import SET_MARGIN, SET_RESERVE

__all__ = ["loo_decision", "loo_error"]


def loo_decision(model):
    """Leave-one-out decision values of the active examples, exact.

    Parameters
    ----------
    model : eco.CPSVM
        A fitted model. It is used as scratch space and restored: its state
        (:meth:`~eco.CPSVM.state_digest`) is exactly the same afterwards, also
        when the call is interrupted.

    Returns
    -------
    ndarray of shape (n_active,) for two classes, else (n_active, n_classes)
        Row k is for ``model.ids_[k]``: the decision value the model would
        give that example had it not been trained on it.
    """
    check_is_fitted(model)
    # the model is scratch space: hold its lock exclusively (concurrent
    # readers wait rather than see a head with one example unlearned)
    with model_lock(model).writing():
        return _loo_decision(model)


def _loo_decision(model):
    heads = model.head_set_
    active = heads.active_slots()
    remote = getattr(heads, "loo_decision", None)
    if remote is not None:
        # a backend whose heads live elsewhere runs the loop where they are
        # (one call per actor for the whole batch), with loo_head
        out = remote(active)
        return out[:, 0] if heads.n_heads == 1 else out
    out = np.empty((len(active), heads.n_heads))
    # loo_head restores its head after every example; an interrupt or an
    # error in the middle of one is undone by the transaction
    with heads.transaction():
        states = [heads.head_state(h) for h in range(heads.n_heads)]
        heads.map_heads(lambda h: loo_head(heads, h, active, states[h], out))
    return out[:, 0] if heads.n_heads == 1 else out


def loo_head(heads, h, active, state, out):
    """LOO decisions of the `active` slots in head `h` (current `state`) into ``out[:, h]``.

    `heads` is a head set; head `h` is restored after every example.
    """
    alpha = state.alpha
    sets = state.sets
    C = state.C
    engine_state = state.to_engine_dict()
    # a margin vector strictly inside its box pins b: reserve drops move nothing
    pinned = bool(np.any((sets == SET_MARGIN) & (alpha > 0) & (alpha < C)))
    for k, s in enumerate(active):
        if pinned and sets[s] == SET_RESERVE and alpha[s] == 0.0:
            out[k, h] = heads.decision_of(h, s)
            continue
        # the path could not finish: unlearn_head solves the head from scratch without s
        heads.unlearn_head(h, np.array([s], dtype=np.intp))
        out[k, h] = heads.decision_of(h, s)
        heads.restore_head(h, engine_state)


def loo_error(model):
    """Leave-one-out error rate of the active examples, exact.

    An example counts as an error when the class predicted from its LOO
    decision (the sign for two classes, zero or positive meaning ``classes_[1]``; the
    argmax otherwise, as :meth:`~eco.CPSVM.predict` does) differs from its
    label.

    Parameters
    ----------
    model : eco.CPSVM

    Returns
    -------
    float
        The fraction of active examples misclassified; NaN when no example is
        active.
    """
    f = loo_decision(model)
    if len(f) == 0:
        return float("nan")
    heads = model.head_set_
    labels = heads.slot_labels[heads.active_slots()]
    if f.ndim == 1:
        # a decision of exactly 0 is classes_[1], as predict has it
        predicted = (f >= 0).astype(np.int64)
    else:
        predicted = np.argmax(f, axis=1)
    return float(np.mean(predicted != labels))
