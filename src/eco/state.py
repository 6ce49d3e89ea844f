"""The state of a fitted model, as plain arrays: per head and whole.

A :class:`ModelState` is everything that defines a fitted :class:`eco.CPSVM`:
the hyper-parameters as resolved, the stored data, the slot tables and one
:class:`HeadState` per head. Pickling, the digest and the file format
(:mod:`eco.persistence`) all iterate over the fields declared here, so a
field added here reaches all three. This module imports nothing from the
estimator.
"""

import hashlib
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

__all__ = ["HeadState", "ModelState", "state_digest"]

# set codes of the engine (eco._cp_core): inactive, reserve, margin, error
_SET_CODES = (-1, 0, 1, 2)
_SET_MARGIN = 1


def _meta(*, per_slot=False, digest=True):
    # per_slot: one entry per stored slot (the digest covers the active ones);
    # digest: part of state_digest (a counter such as the drift-check phase is not)
    return {"per_slot": per_slot, "digest": digest}


@dataclass
class HeadState:
    """The state of one head (one binary CP engine), in the engine's own layout.

    Fields are listed in the order the digest reads them.
    """

    y: np.ndarray = field(metadata=_meta(per_slot=True))
    C: np.ndarray = field(metadata=_meta(per_slot=True))
    alpha: np.ndarray = field(metadata=_meta(per_slot=True))
    g: np.ndarray = field(metadata=_meta(per_slot=True))
    sets: np.ndarray = field(metadata=_meta(per_slot=True))
    b: float = field(metadata=_meta())
    margin_order: np.ndarray = field(metadata=_meta())
    Rinv: np.ndarray = field(metadata=_meta())
    updates_since_check: int = field(default=0, metadata=_meta(digest=False))

    #: Names of the array fields (what a file stores as arrays).
    ARRAYS = ("y", "C", "alpha", "g", "sets", "margin_order", "Rinv")
    #: Names of the scalar fields (what a file stores as metadata).
    SCALARS = ("b", "updates_since_check")

    @classmethod
    def from_engine_dict(cls, st):
        """From the dict of :meth:`eco._cp_core.CPEngine.get_state`."""
        return cls(**{f.name: st[f.name] for f in fields(cls)})

    def to_engine_dict(self):
        """The dict :meth:`eco._cp_core.CPEngine.restore` takes (engine dtypes)."""
        st = {f.name: getattr(self, f.name) for f in fields(self)}
        st["sets"] = np.asarray(self.sets).astype(np.int8)
        st["margin_order"] = np.asarray(self.margin_order).astype(np.int32)
        st["b"] = float(self.b)
        st["updates_since_check"] = int(self.updates_since_check)
        return st

    def digest_into(self, h, active):
        """Feed the digested fields to hash `h` (per-slot ones on the `active` slots)."""
        for f in fields(self):
            if not f.metadata["digest"]:
                continue
            v = getattr(self, f.name)
            if f.metadata["per_slot"]:
                h.update(np.ascontiguousarray(v[active]).tobytes())
            elif f.name == "b":
                h.update(np.float64(v).tobytes())
            else:
                h.update(np.ascontiguousarray(v).tobytes())

    def validate(self, n, where="head"):
        """Raise ValueError naming the problem when the state is not consistent with `n` slots."""
        for k in ("y", "C", "alpha", "g", "sets"):
            if np.shape(getattr(self, k)) != (n,):
                raise ValueError(f"{where}: {k} has shape {np.shape(getattr(self, k))}, "
                                 f"expected ({n},)")
        for k in ("y", "C", "alpha", "g", "Rinv"):
            v = np.asarray(getattr(self, k))
            if v.dtype.kind != "f" or not np.all(np.isfinite(v)):
                raise ValueError(f"{where}: {k} is not a finite float array")
        sets, order = np.asarray(self.sets), np.asarray(self.margin_order)
        if sets.dtype.kind != "i" or not np.isin(sets, _SET_CODES).all():
            raise ValueError(f"{where}: set codes out of range")
        m = int(np.count_nonzero(sets == _SET_MARGIN))
        if order.ndim != 1 or order.dtype.kind != "i" or len(order) != m \
                or (m and (order.min() < 0 or order.max() >= n)) \
                or len(np.unique(order)) != m or not np.all(sets[order] == _SET_MARGIN):
            raise ValueError(f"{where}: the margin order does not list the margin vectors")
        if np.shape(self.Rinv) != (m + 1, m + 1):
            raise ValueError(f"{where}: Rinv has shape {np.shape(self.Rinv)}, "
                             f"expected {(m + 1, m + 1)}")
        if isinstance(self.b, bool) or not isinstance(self.b, (int, float, np.floating)) \
                or not np.isfinite(self.b):
            raise ValueError(f"{where}: the bias is not a finite number")
        if isinstance(self.updates_since_check, bool) \
                or not isinstance(self.updates_since_check, (int, np.integer)):
            raise ValueError(f"{where}: updates_since_check is not an integer")


@dataclass
class ModelState:
    """Everything that defines a fitted model, as plain numbers, strings and arrays.

    ``data`` holds the stored rows: the features, or for
    ``params["kernel"] == "precomputed"`` the kernel matrix of every slot.
    The slot tables (``slot_ids``, ``slot_labels``, ``slot_C``) have one entry
    per example ever given (removed ones included).
    """

    params: dict
    gamma_: float
    n_features_in_: int
    classes_: np.ndarray
    class_weight_: np.ndarray
    slot_labels: np.ndarray
    slot_C: np.ndarray
    slot_ids: np.ndarray
    data: np.ndarray
    heads: list
    feature_names_in_: Optional[np.ndarray] = None

    @property
    def n_heads(self):
        return len(self.heads)

    @property
    def n_slots(self):
        return len(self.slot_ids)

    def active_slots(self):
        """Slots active in the heads (head 0 decides; validate() checks they agree)."""
        return np.flatnonzero(np.asarray(self.heads[0].sets) != _SET_CODES[0]).astype(np.intp)

    def digest(self):
        """BLAKE2b hex digest: hyper-parameters, active ids, and every head's digested fields."""
        return state_digest(self.params, self.gamma_, self.classes_, self.class_weight_,
                            self.slot_ids, self.heads)

    def validate(self):
        """Raise ValueError naming the first inconsistency, else return None."""
        n = len(self.slot_ids)
        kernel = self.params.get("kernel")
        data, n_classes = self.data, len(self.classes_)
        n_heads = len(self.heads)
        data_key = "kernel" if kernel == "precomputed" else "features"
        checks = [
            (self.slot_ids.ndim == 1 and self.slot_ids.dtype.kind in "iUO",
             f"ids of dtype {self.slot_ids.dtype} and shape {self.slot_ids.shape}"),
            (n_heads >= 1, "no heads"),
            (data.ndim == 2 and data.shape[0] == n, f"{data_key} has shape {data.shape}, {n} ids"),
            (kernel != "precomputed" or data.shape == (n, n), "the kernel matrix is not square"),
            (kernel == "precomputed" or data.shape[1] == self.n_features_in_,
             "the features do not match n_features_in_"),
            (self.classes_.ndim == 1 and n_classes >= 2, "fewer than two classes"),
            (n_heads == (1 if n_classes == 2 else n_classes),
             "the number of heads does not match the number of classes"),
            (self.class_weight_.shape == (n_classes,), "class_weight_ has the wrong shape"),
            (self.slot_labels.shape == (n,) and self.slot_labels.dtype.kind == "i",
             "slot_labels has the wrong shape or dtype"),
            (self.slot_C.shape == (n,), "slot_C has the wrong shape"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        labels = self.slot_labels
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError("slot_labels out of range")
        for name in ("class_weight_", "slot_C", "data", "slot_labels"):
            arr = getattr(self, name)
            if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} holds non-finite or non-numeric values")
        active0 = None
        for h, head in enumerate(self.heads):
            head.validate(n, where=f"head {h}")
            active = np.asarray(head.sets) != _SET_CODES[0]
            if active0 is None:
                active0 = active
            elif not np.array_equal(active0, active):
                raise ValueError(f"head {h}: active examples differ from head 0")
        if isinstance(self.gamma_, bool) or not isinstance(self.gamma_, (int, float)) \
                or not np.isfinite(self.gamma_):
            raise ValueError("gamma_ is not a finite number")


def state_digest(params, gamma_, classes_, class_weight_, slot_ids, heads):
    """BLAKE2b hex digest of the fields of a :class:`ModelState` that define its behaviour.

    The stored rows are not read: the active ids name them. Taking the fields
    one by one lets the estimator digest its state without copying its data.
    """
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((params["C"], params["kernel"], gamma_, params["degree"], params["coef0"],
                   classes_.tolist(), class_weight_.tolist())).encode())
    active = np.flatnonzero(np.asarray(heads[0].sets) != _SET_CODES[0])
    h.update(repr(slot_ids[active].tolist()).encode())
    for head in heads:
        head.digest_into(h, active)
    return h.hexdigest()
