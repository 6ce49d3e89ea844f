"""The state of a fitted model, as plain arrays: per head and whole.

A :class:`ModelState` is everything that defines a fitted :class:`eco.CPSVM`:
the hyper-parameters as resolved, the active examples (nothing of a removed
one), where each sits among the model's slots, and one :class:`HeadState`
per head over the active examples. Pickling, the digest and the file format
(:mod:`eco.persistence`) all iterate over the fields declared here, so a
field added here reaches all three. This module imports nothing from the
estimator.
"""

import hashlib
from dataclasses import dataclass, field, fields
from typing import Optional

import numpy as np

__all__ = ["HeadState", "ModelState", "state_digest", "install_primary", "head_set_problem",
           "CERTIFY_TOL"]

# set codes of the engine (eco._cp_core): inactive, reserve, margin, error
_SET_CODES = (-1, 0, 1, 2)
_SET_RESERVE, _SET_MARGIN, _SET_ERROR = 0, 1, 2

#: Largest KKT violation (the engine's relative certificate) and relative
#: inverse residual ``|Rinv A - I|`` an installed primary state may show
#: (:func:`head_set_problem`; :func:`eco.load`). An exact model shows about
#: 1e-12; on degenerate data (poly on features scaled by 1e-3, C = 100) a live
#: model was measured at 3.8e-6 after a decrement, and a file must load what
#: the model was. Tampering shows as 0.1 to 100.
CERTIFY_TOL = 1e-5


def _meta(*, per_slot=False, digest=True):
    # per_slot: one entry per stored slot (the digest covers the active ones);
    # digest: part of state_digest (derived state and counters are not)
    return {"per_slot": per_slot, "digest": digest}


@dataclass
class HeadState:
    """The state of one head (one binary CP engine), in the engine's own layout.

    Fields are listed in the order the digest reads them. The primary state
    (labels, bounds, coefficients, sets, bias, margin order) defines the
    head; the gradients ``g`` and the inverse bordered margin matrix ``Rinv``
    are derived from it and the kernel. A state read from a file has them as
    None: they are recomputed when it is installed (:attr:`has_derived`).
    The digest covers the primary state only, so a recomputed ``g`` or
    ``Rinv`` (equal up to the last bits) does not change it.
    """

    y: np.ndarray = field(metadata=_meta(per_slot=True))
    C: np.ndarray = field(metadata=_meta(per_slot=True))
    alpha: np.ndarray = field(metadata=_meta(per_slot=True))
    g: Optional[np.ndarray] = field(metadata=_meta(per_slot=True, digest=False))
    sets: np.ndarray = field(metadata=_meta(per_slot=True))
    b: float = field(metadata=_meta())
    margin_order: np.ndarray = field(metadata=_meta())
    Rinv: Optional[np.ndarray] = field(metadata=_meta(digest=False))
    updates_since_check: int = field(default=0, metadata=_meta(digest=False))

    #: Names of the primary array fields (what a file stores as arrays).
    ARRAYS = ("y", "C", "alpha", "sets", "margin_order")
    #: Names of the derived array fields (recomputed at load, never read from a file).
    DERIVED = ("g", "Rinv")
    #: Names of the scalar fields (``b`` is stored in a file's metadata).
    SCALARS = ("b", "updates_since_check")

    _PER_SLOT = ("y", "C", "alpha", "g", "sets")

    @property
    def has_derived(self):
        """True when ``g`` and ``Rinv`` are present (not a primary state read from a file)."""
        return self.g is not None and self.Rinv is not None

    def primary(self):
        """This state without its derived fields (what a file holds)."""
        return HeadState(y=self.y, C=self.C, alpha=self.alpha, g=None, sets=self.sets,
                         b=self.b, margin_order=self.margin_order, Rinv=None)

    def restricted(self, rows):
        """This state on the slots `rows` (increasing) only; margin_order as positions in `rows`."""
        rows = np.asarray(rows, dtype=np.intp)
        kw = {k: None if getattr(self, k) is None else np.array(np.asarray(getattr(self, k))[rows])
              for k in self._PER_SLOT}
        order = np.searchsorted(rows, np.asarray(self.margin_order)).astype(
            np.asarray(self.margin_order).dtype)
        R = None if self.Rinv is None else np.array(self.Rinv)
        return HeadState(b=self.b, margin_order=order, Rinv=R,
                         updates_since_check=self.updates_since_check, **kw)

    def expanded(self, at, n):
        """Inverse of :meth:`restricted`: row k at slot ``at[k]`` of `n`, other slots inactive."""
        at = np.asarray(at, dtype=np.intp)
        kw = {}
        for k in self._PER_SLOT:
            if getattr(self, k) is None:
                kw[k] = None
                continue
            v = np.asarray(getattr(self, k))
            full = np.full(n, _SET_CODES[0], dtype=v.dtype) if k == "sets" else \
                np.zeros(n, dtype=v.dtype)
            full[at] = v
            kw[k] = full
        order = np.asarray(self.margin_order)
        return HeadState(b=self.b, margin_order=at[order].astype(order.dtype),
                         Rinv=self.Rinv, updates_since_check=self.updates_since_check, **kw)

    @classmethod
    def from_engine_dict(cls, st):
        """From the dict of :meth:`eco._cp_core.CPEngine.get_state`."""
        return cls(**{f.name: st[f.name] for f in fields(cls)})

    def to_engine_dict(self):
        """The dict :meth:`eco._cp_core.CPEngine.restore` takes (engine dtypes).

        Only for a state with its derived fields (:attr:`has_derived`).
        """
        if not self.has_derived:
            raise ValueError("a primary state (no g, no Rinv) is installed by recomputing them")
        st = {f.name: getattr(self, f.name) for f in fields(self)}
        st["sets"] = np.asarray(self.sets).astype(np.int8)
        st["margin_order"] = np.asarray(self.margin_order).astype(np.int32)
        st["b"] = float(self.b)
        st["updates_since_check"] = int(self.updates_since_check)
        return st

    def digest_into(self, h, active, given=None):
        """Feed the digested fields to hash `h` (per-slot ones on the `active` slots).

        `given` (per slot: the position at which its example was given) names
        the margin vectors, so that the digest does not depend on how slots
        are numbered (compaction renumbers them; a loaded state numbers its
        rows 0, 1, ...). Without it the slot numbers are used.
        """
        for f in fields(self):
            if not f.metadata["digest"]:
                continue
            v = getattr(self, f.name)
            if f.metadata["per_slot"]:
                h.update(np.ascontiguousarray(v[active]).tobytes())
            elif f.name == "b":
                h.update(np.float64(v).tobytes())
            elif f.name == "margin_order" and given is not None:
                v = np.asarray(v)
                h.update(np.ascontiguousarray(np.asarray(given)[v].astype(v.dtype)).tobytes())
            else:
                h.update(np.ascontiguousarray(v).tobytes())

    def validate(self, n, where="head"):
        """Raise ValueError naming the problem when the state is not consistent with `n` slots.

        The derived fields are checked when present (a primary state has none).
        """
        derived = self.has_derived
        if not derived and (self.g is not None or self.Rinv is not None):
            raise ValueError(f"{where}: g and Rinv must be both present or both absent")
        for k in ("y", "C", "alpha", "g", "sets"):
            if k == "g" and not derived:
                continue
            if np.shape(getattr(self, k)) != (n,):
                raise ValueError(f"{where}: {k} has shape {np.shape(getattr(self, k))}, "
                                 f"expected ({n},)")
        for k in ("y", "C", "alpha", "g", "Rinv"):
            if k in self.DERIVED and not derived:
                continue
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
        if derived and np.shape(self.Rinv) != (m + 1, m + 1):
            raise ValueError(f"{where}: Rinv has shape {np.shape(self.Rinv)}, "
                             f"expected {(m + 1, m + 1)}")
        if not _is_finite_real(self.b):
            raise ValueError(f"{where}: the bias is not a finite number")
        if isinstance(self.updates_since_check, bool) \
                or not isinstance(self.updates_since_check, (int, np.integer)):
            raise ValueError(f"{where}: updates_since_check is not an integer")


@dataclass
class ModelState:
    """Everything that defines a fitted model, as plain numbers, strings and arrays.

    It holds the active examples only, in the order they were given:
    ``data`` (their features, or for ``params["kernel"] == "precomputed"``
    their square kernel block), ``slot_labels`` (class indices),
    ``slot_C`` (box bounds), ``slot_ids``, and every head's per-example
    arrays over them (``margin_order`` lists positions among them). Nothing
    of a removed example is here. ``slot_index`` and ``n_slots`` say where
    each example sits among the model's slots (erased slots not yet
    compacted away), ``slot_given`` and ``n_given`` the position at which
    each was given and how many ever were: with them a loaded model lays
    out its memory as the saved one did. A state read from a file has no
    derived head fields (:attr:`HeadState.has_derived`).
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
    slot_index: np.ndarray = None
    n_slots: int = None
    slot_given: np.ndarray = None
    n_given: int = None
    feature_names_in_: Optional[np.ndarray] = None

    def __post_init__(self):
        # a state built from arrays alone: example k at slot k, given k-th
        n = len(self.slot_ids)
        if self.slot_index is None:
            self.slot_index = np.arange(n, dtype=np.int64)
        if self.n_slots is None:
            self.n_slots = n
        if self.slot_given is None:
            self.slot_given = np.array(self.slot_index, dtype=np.int64)
        if self.n_given is None:
            self.n_given = int(self.n_slots)

    @property
    def n_heads(self):
        return len(self.heads)

    @property
    def n_active(self):
        return len(self.slot_ids)

    def active_slots(self):
        """Positions of the active examples in this state's arrays (all of them)."""
        return np.flatnonzero(np.asarray(self.heads[0].sets) != _SET_CODES[0]).astype(np.intp)

    def digest(self):
        """BLAKE2b hex digest: hyper-parameters, active ids, and every head's digested fields."""
        return state_digest(self.params, self.gamma_, self.classes_, self.class_weight_,
                            self.slot_ids, self.heads, self.slot_given)

    def validate(self):
        """Raise ValueError naming the first inconsistency, else return None.

        Checks shapes, dtypes and ranges, then that the heads form a valid
        state: labels +1/-1 and consistent with the classes, bounds equal
        to the examples' bounds, every example active, coefficients within
        their bounds and consistent with their sets, sum y alpha = 0. The
        KKT certificate, which needs the kernel, is :func:`eco.load`'s.
        """
        self._validate_tables()
        for h, head in enumerate(self.heads):
            head.validate(self.n_active, where=f"head {h}")
            self._validate_head(h, head)

    def _validate_tables(self):
        n = self.n_active
        kernel = self.params.get("kernel")
        data, n_classes, n_heads = self.data, len(self.classes_), len(self.heads)
        data_key = "kernel" if kernel == "precomputed" else "features"
        idx, given = np.asarray(self.slot_index), np.asarray(self.slot_given)
        # in order, each check evaluated only once those before it hold: a
        # crafted state (2-D ids, 1-D features) must fail with its sentence,
        # not with the TypeError or IndexError of a later check
        checks = (
            (lambda: self.slot_ids.ndim == 1 and self.slot_ids.dtype.kind in "iUO",
             f"ids of dtype {self.slot_ids.dtype} and shape {self.slot_ids.shape}"),
            (lambda: len(set(self.slot_ids.tolist())) == n, "repeated ids"),
            (lambda: n_heads >= 1, "no heads"),
            (lambda: data.ndim == 2 and data.shape[0] == n,
             f"{data_key} has shape {data.shape}, {n} ids"),
            (lambda: kernel != "precomputed" or data.shape == (n, n),
             "the kernel matrix is not square"),
            (lambda: kernel == "precomputed" or data.shape[1] == self.n_features_in_,
             "the features do not match n_features_in_"),
            (lambda: self.classes_.ndim == 1 and n_classes >= 2, "fewer than two classes"),
            (lambda: len(np.unique(self.classes_)) == n_classes, "repeated classes"),
            # as fit leaves them: np.unique of the labels, so sorted, and no NaN
            (lambda: self.classes_.dtype.kind not in "fc" or np.all(np.isfinite(self.classes_)),
             "a class is not a finite number"),
            (lambda: np.array_equal(np.unique(self.classes_), self.classes_),
             "the classes are not sorted"),
            (lambda: n_heads == (1 if n_classes == 2 else n_classes),
             "the number of heads does not match the number of classes"),
            (lambda: self.class_weight_.shape == (n_classes,), "class_weight_ has the wrong shape"),
            (lambda: self.slot_labels.shape == (n,) and self.slot_labels.dtype.kind == "i",
             "slot_labels has the wrong shape or dtype"),
            (lambda: self.slot_C.shape == (n,) and self.slot_C.dtype.kind == "f",
             "slot_C has the wrong shape or dtype"),
            (lambda: _is_int(self.n_slots) and _is_int(self.n_given),
             "n_slots or n_given is not an integer"),
            (lambda: idx.shape == (n,) and idx.dtype.kind == "i" and given.shape == (n,)
             and given.dtype.kind == "i", "slot_index or slot_given has the wrong shape or dtype"),
        )
        for holds, msg in checks:
            if not holds():
                raise ValueError(msg)
        for arr, top, name in ((idx, self.n_slots, "slot_index"), (given, self.n_given, "slot_given")):
            if n and (arr[0] < 0 or arr[-1] >= top or np.any(np.diff(arr) <= 0)):
                raise ValueError(f"{name} is not increasing within [0, {top})")
        if not 0 <= self.n_slots <= self.n_given or n > self.n_slots:
            raise ValueError("n_slots is out of range")
        if kernel == "precomputed" and (self.n_slots != self.n_given
                                        or not np.array_equal(idx, given)):
            raise ValueError("a precomputed kernel's slots are not the positions given")
        labels = self.slot_labels
        if n and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError("slot_labels out of range")
        for name in ("class_weight_", "slot_C", "data", "slot_labels"):
            arr = getattr(self, name)
            if arr.dtype.kind not in "iuf" or not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} holds non-finite or non-numeric values")
        if np.any(self.slot_C < 0) or np.any(self.class_weight_ < 0):
            raise ValueError("negative bounds or class weights")
        # gamma = 0 is valid (a constant kernel, as scikit-learn accepts it)
        if not _is_finite_real(self.gamma_) or self.gamma_ < 0:
            raise ValueError(f"gamma_ is {str(self.gamma_)[:40]}, not a non-negative finite number")

    def _validate_head(self, h, head):
        where = f"head {h}"
        positive = 1 if len(self.heads) == 1 else h
        want_y = np.where(self.slot_labels == positive, 1.0, -1.0)
        y, C, alpha = np.asarray(head.y), np.asarray(head.C), np.asarray(head.alpha)
        sets = np.asarray(head.sets)
        if not np.array_equal(y, want_y):
            raise ValueError(f"{where}: labels are not +1/-1 as the classes say")
        if not np.array_equal(C, self.slot_C):
            raise ValueError(f"{where}: bounds differ from the examples' bounds")
        if np.any(sets == _SET_CODES[0]):
            raise ValueError(f"{where}: an example is not active")
        if np.any(alpha < 0) or np.any(alpha > C):
            raise ValueError(f"{where}: a coefficient lies outside [0, C]")
        if np.any(alpha[sets == _SET_RESERVE] != 0) \
                or np.any(alpha[sets == _SET_ERROR] != C[sets == _SET_ERROR]):
            raise ValueError(f"{where}: a coefficient contradicts its set")
        scale = max(1.0, float(np.max(C, initial=0.0))) * max(1, len(C))
        if abs(float(np.dot(y, alpha))) > 1e-9 * scale:
            raise ValueError(f"{where}: sum of y alpha is {float(np.dot(y, alpha)):.3g}, not 0")


def _is_int(v):
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_finite_real(v):
    # a Python int beyond the float range (10**400 in a JSON file) is not one
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return False
    try:
        return bool(np.isfinite(float(v)))
    except OverflowError:
        return False


def state_digest(params, gamma_, classes_, class_weight_, slot_ids, heads, given=None):
    """BLAKE2b hex digest of the fields of a :class:`ModelState` that define its behaviour.

    The stored rows are not read: the active ids name them. Taking the fields
    one by one lets the estimator digest its state without copying its data.
    `given` (per slot, the position at which its example was given) names
    the margin vectors independently of the slot numbering.
    """
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((params["C"], params["kernel"], gamma_, params["degree"], params["coef0"],
                   classes_.tolist(), class_weight_.tolist())).encode())
    active = np.flatnonzero(np.asarray(heads[0].sets) != _SET_CODES[0])
    # numpy scalars as Python ones: an object array of mixed ids holds the
    # int ids given by default as np.int64, whose repr differs from the int
    # a loaded file gives back (numpy 2), for the same ids
    h.update(repr([i.item() if isinstance(i, np.generic) else i
                   for i in slot_ids[active].tolist()]).encode())
    for head in heads:
        head.digest_into(h, active, given)
    return h.hexdigest()


def install_primary(engine, head):
    """Install the primary :class:`HeadState` `head` in `engine`, recomputing what it derives.

    The inverse bordered margin matrix is refactorised from the kernel rows
    of the margin vectors and the gradients are recomputed from the kernel
    rows of the support vectors (``y_i (sum_j alpha_j y_j K_ij + b) - 1``):
    nothing derived is taken on trust. The drift-check phase restarts at 0.

    Raises
    ------
    eco.exceptions.EngineError
        The bordered margin matrix is singular (STATUS_SINGULAR) or memory
        ran out; `engine` must then be given another state before use.
    ValueError
        The arrays do not fit the engine's store.
    """
    y = np.ascontiguousarray(head.y, dtype=np.float64)
    C = np.ascontiguousarray(head.C, dtype=np.float64)
    alpha = np.ascontiguousarray(head.alpha, dtype=np.float64)
    sets = np.ascontiguousarray(head.sets, dtype=np.int8)
    order = np.ascontiguousarray(head.margin_order, dtype=np.int32)
    b = float(head.b)
    # first pass: Rinv by refactorisation (the gradients are not read by it)
    engine.set_state(y, C, alpha, b, sets, order, np.zeros(len(y)), None)
    g = engine.recompute_gradients()
    # second pass: the recomputed gradients, Rinv as just computed (exact:
    # rinv() and set_state scale its border by the same power of two)
    engine.set_state(y, C, alpha, b, sets, order, g, engine.rinv())


def head_set_problem(heads, tol=CERTIFY_TOL):
    """None when every head of `heads` is an exact SVM state, else a sentence naming the problem.

    The certificate of a state installed from its primary part (a loaded
    file, a restarted Ray actor): every head from scratch, the KKT
    conditions on gradients recomputed from the kernel, and the inverse
    bordered margin matrix against the matrix rebuilt from the kernel.
    `heads` is a head set (``n_heads``, ``violation``, ``head_state``,
    ``kernel_block``).
    """
    for h in range(heads.n_heads):
        viol = heads.violation(h)
        if not viol <= tol:
            return f"head {h}: KKT violation {viol:.3g} (coefficients or bias are not the SVM's)"
        res = _inverse_residual(heads, heads.head_state(h))
        if not res <= tol:
            return (f"head {h}: the margin matrix is numerically singular (|Rinv A - I| = "
                    f"{res:.3g} after refactorisation)")
    return None


def _inverse_residual(heads, st):
    """max |Rinv A - I| / max(1, max|Rinv| max|A|), A = [[0, y_S'], [y_S, Q_SS]]."""
    S = np.asarray(st.margin_order, dtype=np.intp)
    if len(S) == 0:
        return 0.0
    y = np.asarray(st.y)[S]
    A = np.empty((len(S) + 1, len(S) + 1))
    A[0, 0] = 0.0
    A[0, 1:] = A[1:, 0] = y
    A[1:, 1:] = heads.kernel_block(S)[:, S] * np.outer(y, y)
    R = np.asarray(st.Rinv, dtype=np.float64)
    # relative to the sizes of the factors: an ill-conditioned but exact inverse passes
    scale = max(1.0, float(np.max(np.abs(R))) * float(np.max(np.abs(A))))
    return float(np.max(np.abs(R @ A - np.eye(len(S) + 1)))) / scale
