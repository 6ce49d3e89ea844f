"""The Ray backend: the heads of one model held by Ray actors, behind HeadSet's interface.

:class:`RayHeadSet` stands in for :class:`eco._headset.HeadSet` when
``CPSVM(backend="ray")``. The heads live in actors, several heads per actor,
each actor a local :class:`~eco._headset.HeadSet` of its heads over its own
kernel store. The driver keeps the slot tables, the active mask, the rows
once (its own kernel store, which it can zero in place) and the committed
*primary* state of every head as plain arrays (:class:`PrimaryState`:
coefficients, set codes, bias, margin order; O(n) numbers per head, no
kernel value). That state is the checkpoint, and it is always current.

Every mutation is a two-phase transaction across the actors. Prepare: the
first request of a transaction that reaches an actor snapshots its heads,
and every request returns, besides its result, what it changed in the heads
there since the committed state (a sparse delta: the slots whose
coefficient or set changed, the bias and the margin order of each changed
head; O(|S| + migrations) numbers per head for a path). Commit: when every
actor succeeded, the driver applies the deltas to its arrays (the commit
point) and tells the actors, which apply the same delta to their own copy
of the committed state; else every actor rolls back. SIGINT is deferred for
the whole transaction (:mod:`eco._concurrency`): an interrupt stops it at a
safe point and it is rolled back; the commit and the rollback run with
further interrupts deferred, and an actor that cannot roll back is replaced
at the committed state. No redo log is kept: nothing per request is
O(n * d), and the erasure of removed rows touches only the driver's arrays
(zeroed in place) and the actors' stores.

The default removal (no audit, no hyper-parameter that follows the data)
needs no second phase: :meth:`RayHeadSet.remove` sends one message per
actor, in which each actor runs the request, commits it and erases the
rows (:meth:`HeadGroup.apply_final`), and the driver commits once every
actor has succeeded. The driver's arrays remain the committed state until
then, so a failure on one actor rolls its part back there and replaces
the actors that had committed theirs from those arrays, as after a death
(below): all or nothing still holds, with the restarted heads' derived
state equal to the lost one up to the last bits. A removal is the request
that must be fast, and a failure is rare; every other request keeps two
phases and a bit-exact rollback.

Rows go into Ray's object store only to start actors (the fit's rows, an
increment's new rows while its transaction is open, a restart's rows put
again from the driver's copy) and are dropped by the driver as soon as the
actors hold them: an object-store object is immutable and could not be
erased later.

Faults: an actor that dies (``ray.kill``, out of memory, node lost) is
replaced by a new one over the driver's rows, its heads installed from the
driver's arrays through eco's file format and its loader
(:func:`eco.persistence.state_to_bytes`, :func:`eco.state.install_primary`:
the inverse margin matrix refactorised, the gradients recomputed, then the
certificate :func:`eco.state.head_set_problem`), so that a state that is not
an exact SVM is refused. The primary state is restored bit for bit; the
derived state equals the lost one up to the last bits, and so may later
states. A request in flight is then replayed on the new actor and
completes; after ``_MAX_REVIVALS`` deaths within one request every head is
left at the previous committed state and :class:`UnlearningError` says so.

Ray is imported here only: ``import eco`` never imports it.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from . import _cp_core
from ._concurrency import checkpoint as _safe_point
from ._concurrency import interrupt_guard
from ._headset import (ErasureIncomplete, HeadSet, SlotTables,
                       id_array, laid_out, wipe_snapshot)
from .exceptions import UnlearningError
from .persistence import state_from_bytes, state_to_bytes
from .state import HeadState, ModelState, head_set_problem

__all__ = ["RayHeadSet", "PrimaryState"]

# Deaths of actors tolerated within one request before it is given up.
_MAX_REVIVALS = 3
# The engine's set code of a slot that is not active in a head.
_INACTIVE = -1
# Requests that change one head (its index first) and those that change every head.
_ONE_HEAD = ("learn_head", "unlearn_head", "solve", "restore_head")
_ALL_HEADS = ("solve_all", "learn", "unlearn", "drop_reserve")


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError('backend="ray" needs Ray: pip install "eco[ray]"') from exc
    return ray


# Slot arrays go to the actors as lists when short: Ray pickles an ndarray
# argument out of band, and a round trip to two actors with a one-slot array
# in its arguments took 2.5 ms here against 1.6 ms with a list (medians of
# 300); long ones (a fit's rows) stay arrays
_WIRE_LIST_MAX = 4096


def _wire(slots):
    """`slots` as an actor argument: a list of ints when short, else an intp array."""
    slots = np.asarray(slots, dtype=np.intp)
    return slots.tolist() if slots.shape[0] <= _WIRE_LIST_MAX else slots


def _local_labels(labels, heads, n_heads):
    """Class labels as seen by a group of heads (HeadSet's rule: head j's positives are j).

    One head of two classes: the labels as they are (positive = 1). One head
    of a one-versus-rest model: 1 for its class, else 0. Several heads: the
    index of the head of the class, else -1 (negative in every head).
    """
    labels = np.asarray(labels, dtype=np.intp)
    if n_heads == 1:
        return labels.copy()
    if len(heads) == 1:
        return (labels == heads[0]).astype(np.intp)
    local = np.full(len(labels), -1, dtype=np.intp)
    for j, h in enumerate(heads):
        local[labels == h] = j
    return local


def _cat(parts, dtype):
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


class PrimaryState:
    """The primary state of some heads as plain arrays: what defines them, no kernel value.

    ``alpha`` and ``sets`` hold one row per head and one column per slot,
    ``b`` one bias per head, ``order`` each head's margin order (slots, in
    the order of its bordered margin matrix). The labels and bounds are the
    slot tables'. The driver holds one for every head of a model (the
    committed state, from which a dead actor is restarted); every actor one
    for its heads (the committed state, against which it reports what a
    request changed: :meth:`changes`).

    A delta (:meth:`changes`, :meth:`apply`) is a tuple ``(n_slots, heads,
    counts, slots, alpha, sets, b, order_counts, order_pairs, order_pos,
    orders)``: the number of slots after the request, the changed heads (row
    indices), and for each of them, concatenated, the changed slots with
    their new coefficient and set code, its bias and, where its margin order
    changed, the new length (``order_counts``, -1 where it did not) and the
    positions that differ with their new slots (``order_pairs`` of them:
    ``order_pos``, ``orders``; the engine removes a margin vector by moving
    the last one into its place, so a path changes few positions).
    """

    def __init__(self, n_heads, n_slots):
        self.alpha = np.zeros((n_heads, n_slots))
        self.sets = np.full((n_heads, n_slots), _INACTIVE, dtype=np.int8)
        self.b = np.zeros(n_heads)
        self.order = [np.zeros(0, dtype=np.int32) for _ in range(n_heads)]

    @classmethod
    def of(cls, head_set):
        """The primary state of every head of a local :class:`~eco._headset.HeadSet`."""
        out = cls(head_set.n_heads, head_set.n_slots)
        for j in range(head_set.n_heads):
            e = head_set.engine(j)
            out.alpha[j], out.sets[j], out.b[j] = e.alpha_all, e.sets_all, e.b
            out.order[j] = np.asarray(e.margin_order, dtype=np.int32)
        return out

    @property
    def n_slots(self):
        return self.alpha.shape[1]

    def resize(self, n):
        """Keep the first `n` slots, or add inactive ones up to `n`."""
        m = self.n_slots
        if n < m:
            self.alpha, self.sets = self.alpha[:, :n].copy(), self.sets[:, :n].copy()
        elif n > m:
            k = len(self.b)
            self.alpha = np.concatenate([self.alpha, np.zeros((k, n - m))], axis=1)
            self.sets = np.concatenate(
                [self.sets, np.full((k, n - m), _INACTIVE, dtype=np.int8)], axis=1)

    def changes(self, head_set, heads, full=False, dropped=None):
        """The delta that takes this state to that of `heads` (row indices) of `head_set`.

        A slot is listed when its coefficient (bit pattern: -0.0 is not 0.0,
        which the digest would see) or its set code differs, and every slot
        stored since. The engine compares in C, against this state's rows,
        without copying its arrays (:meth:`eco._cp_core.CPEngine.changed_slots`):
        18 bytes read per slot and head, in sequence, less than the request's
        snapshot copies. (Comparing only the slots that can have changed,
        those in S or E before or after and those the request named, was
        measured slower: after a request the arrays are out of cache, and
        reads at scattered slots cost more than a streamed pass, 2.9 against
        1.7 ms for 50 heads at n = 6,000, 6.5 against 3.8 ms at 20,000.)
        `full`: the same delta from copies of the engine's arrays compared
        in numpy (the reference the tests hold it to). `dropped`: {row: slots}
        for heads whose only change is the drop of those reserve slots (the
        heads an unlearning transaction kept as drop records): their delta is
        those slots, read without a pass over the others.
        """
        n_old, n = self.n_slots, head_set.n_slots
        if n < n_old:
            raise UnlearningError(f"heads hold {n} slots, fewer than the {n_old} committed")
        slots, alpha, sets, orders, order_counts, order_pos = [], [], [], [], [], []
        b = np.empty(len(heads))
        dropped = {} if full or dropped is None else dropped
        no_pos = np.zeros(0, dtype=np.intp)
        for k, j in enumerate(heads):
            e = head_set.engine(j)
            b[k] = e.b
            if j in dropped and n == n_old:
                # a reserve drop: those slots, and the margin order as it was
                listed = np.sort(dropped[j])
                slots.append(listed)
                alpha.append(e.alpha_of(listed))
                sets.append(e.sets_all[listed])
                order_counts.append(-1)
                order_pos.append(no_pos)
                orders.append(no_pos)
                continue
            listed, a, s = self._compared(e, j) if full \
                else e.changed_slots(self.alpha[j], self.sets[j])
            slots.append(listed)
            alpha.append(a)
            sets.append(s)
            order, old = np.asarray(e.margin_order, dtype=np.int32), self.order[j]
            # most heads keep their margin order (a request's row was a reserve vector there)
            kept = np.array_equal(order, old)
            order_counts.append(-1 if kept else len(order))
            m = min(len(order), len(old))
            pos = np.zeros(0, dtype=np.intp) if kept else np.concatenate(
                [np.flatnonzero(order[:m] != old[:m]), np.arange(m, len(order))])
            order_pos.append(pos)
            orders.append(order[pos])
        return (n, np.asarray(heads, dtype=np.int32),
                np.array([len(v) for v in slots], dtype=np.int64), _cat(slots, np.int32),
                _cat(alpha, np.float64), _cat(sets, np.int8), b,
                np.array(order_counts, dtype=np.int64),
                np.array([len(v) for v in order_pos], dtype=np.int64),
                _cat(order_pos, np.int32), _cat(orders, np.int32))

    def _compared(self, e, j):
        """(slots, alpha, sets) of :meth:`changes` for engine `e` at row `j`, from full copies."""
        n_old = self.n_slots
        a, s = e.alpha_all, e.sets_all
        moved = a[:n_old].view(np.int64) != self.alpha[j].view(np.int64)
        moved |= s[:n_old] != self.sets[j]
        listed = np.concatenate([np.flatnonzero(moved), np.arange(n_old, len(a))]).astype(np.intp)
        return listed, a[listed], s[listed]

    # the arrays of a delta after n_slots, widest type first (each starts aligned)
    _WIRE = (("alpha", np.float64), ("b", np.float64), ("counts", np.int64),
             ("order_counts", np.int64), ("order_pairs", np.int64), ("heads", np.int32),
             ("slots", np.int32), ("order_pos", np.int32), ("orders", np.int32),
             ("sets", np.int8))
    _FIELDS = ("n", "heads", "counts", "slots", "alpha", "sets", "b", "order_counts",
               "order_pairs", "order_pos", "orders")

    @classmethod
    def pack(cls, delta):
        """A delta of :meth:`changes` as one bytes object (what an actor sends back).

        One buffer rather than nine arrays: Ray (de)serialises every array of
        a reply on its own, about 0.1 ms each on a busy machine.
        """
        named = dict(zip(cls._FIELDS, delta))
        parts = [np.ascontiguousarray(named[f], dtype=t) for f, t in cls._WIRE]
        header = np.array([named["n"]] + [len(v) for v in parts], dtype=np.int64)
        return b"".join([header.tobytes()] + [v.tobytes() for v in parts])

    @classmethod
    def unpack(cls, blob):
        """The delta tuple of :meth:`pack`'s bytes (read-only views of them)."""
        k = len(cls._WIRE)
        header = np.frombuffer(blob, dtype=np.int64, count=k + 1)
        named, at = {"n": int(header[0])}, 8 * (k + 1)
        for (f, t), m in zip(cls._WIRE, header[1:].tolist()):
            named[f] = np.frombuffer(blob, dtype=t, count=m, offset=at)
            at += m * np.dtype(t).itemsize
        if at != len(blob):
            raise UnlearningError(f"ray backend: a delta of {len(blob)} bytes, {at} expected")
        return tuple(named[f] for f in cls._FIELDS)

    def apply(self, delta, rows=None):
        """Apply a delta of :meth:`changes`; its head k is row ``rows[k]`` here (default: k)."""
        n, heads, counts, slots, alpha, sets, b, order_counts, order_pairs, order_pos, orders \
            = delta
        if n > self.n_slots:
            self.resize(n)
        heads = np.asarray(heads, dtype=np.intp)
        at = heads if rows is None else np.asarray(rows, dtype=np.intp)[heads]
        # flat positions: 4x faster than a 2-d fancy index (in C order: ravel is a view)
        self.alpha, self.sets = np.ascontiguousarray(self.alpha), np.ascontiguousarray(self.sets)
        at_entry = np.repeat(at * self.n_slots, counts) + slots
        self.alpha.ravel()[at_entry] = alpha
        self.sets.ravel()[at_entry] = sets
        self.b[at] = b
        ends = np.cumsum(order_pairs).tolist()
        for r, m, p, hi in zip(at.tolist(), np.asarray(order_counts).tolist(),
                               np.asarray(order_pairs).tolist(), ends):
            if m >= 0:  # -1: the order is unchanged
                old = self.order[r]
                order = np.empty(m, dtype=np.int32)
                order[:min(m, len(old))] = old[:m]
                order[order_pos[hi - p:hi]] = orders[hi - p:hi]
                self.order[r] = order

    def erase(self, slots):
        """Zero the entries of erased `slots` (inactive in every head)."""
        slots = np.asarray(slots, dtype=np.intp)
        self.alpha[:, slots] = 0.0
        self.sets[:, slots] = _INACTIVE

    def compact(self, keep):
        """Renumber the slots to the kept ones (in order), as HeadSet.compact does."""
        keep = np.asarray(keep, dtype=np.intp)
        renumber = np.full(self.n_slots, -1, dtype=np.int32)
        renumber[keep] = np.arange(len(keep), dtype=np.int32)
        order = [renumber[o] for o in self.order]
        if any(np.any(o < 0) for o in order):
            raise UnlearningError("compaction would drop a margin vector")
        # C order, as everywhere (apply writes through flat positions)
        self.alpha = np.ascontiguousarray(self.alpha[:, keep])
        self.sets = np.ascontiguousarray(self.sets[:, keep])
        self.order = order

    def head(self, r, y, C):
        """Row `r` as a primary :class:`eco.state.HeadState` with labels `y` and bounds `C`."""
        return HeadState(y=y, C=C, alpha=self.alpha[r].copy(), g=None, sets=self.sets[r].copy(),
                         b=float(self.b[r]), margin_order=self.order[r].copy(), Rinv=None)

    def arrays(self):
        """Every array held (test hook: erasure is searched in them)."""
        return [self.alpha, self.sets, self.b] + list(self.order)


def head_file(state, h, y, C, ids, gamma):
    """Head `h` of a :class:`PrimaryState` as an eco state file (uint8 array of its bytes).

    A binary model of this head alone over its active slots, with no rows
    (zero feature columns): eco's own format, read back by
    :func:`eco.persistence.state_from_bytes`, which validates it. `y`, `C`
    and `ids` are the head's labels, the bounds and the ids of every slot.
    """
    n = state.n_slots
    act = np.flatnonzero(state.sets[h] != _INACTIVE)
    model = ModelState(
        params={"eco_ray_checkpoint": 1, "head": int(h)}, gamma_=float(gamma),
        n_features_in_=0, classes_=np.array([0, 1]), class_weight_=np.ones(2),
        slot_labels=(y[act] > 0).astype(np.int64), slot_C=np.array(C[act], dtype=np.float64),
        slot_ids=ids[act], data=np.zeros((len(act), 0)),
        heads=[state.head(h, y, C).restricted(act)], slot_index=act.astype(np.int64),
        n_slots=n, slot_given=act.astype(np.int64), n_given=n)
    # a uint8 array, not bytes: Ray hands it on without a copy
    return np.frombuffer(state_to_bytes(model), dtype=np.uint8)


class HeadGroup:
    """Some heads of a model over a local kernel store: what one actor holds.

    Parameters
    ----------
    spec : dict
        Kernel parameters, ``n_heads`` (of the whole model), ``max_steps``.
    heads : list of int
        The model's head indices held here.
    chunks : list of ndarray
        The stored rows so far, as given (the fit's rows, then each increment's).
    labels, C, ids : ndarray
        Slot tables of those rows (class indices of the model).
    given : ndarray of int64 or None
        Position at which each row was given (-1: erased); None: 0, 1, ...
    n_given : int or None
        Number of examples ever given (with `given`).
    files : list of uint8 arrays or None
        One eco state file per head (:func:`head_file`), installed and
        certified; None: every head empty.
    """

    def __init__(self, spec, heads, chunks, labels, C, ids, given=None, n_given=None,
                 files=None):
        self.spec = dict(spec)
        self.heads = [int(h) for h in heads]
        self._local = {h: j for j, h in enumerate(self.heads)}
        labels = _local_labels(labels, self.heads, spec["n_heads"])
        # writable copies (arguments from Ray are read-only): erase overwrites them
        C = np.array(C, dtype=np.float64)
        ids = list(ids)
        n = len(chunks[0])
        self.set = HeadSet.from_data(
            chunks[0], kernel=spec["kernel"], gamma=spec["gamma"], degree=spec["degree"],
            coef0=spec["coef0"], precompute=spec["precompute"], n_heads=len(self.heads),
            labels=labels[:n], C=C[:n], ids=ids[:n], max_steps=spec["max_steps"], n_jobs=1,
            cache_size=spec.get("cache_size", 200.0))
        # later chunks one by one: "precomputed" rows grow by one column per row given
        for rows in chunks[1:]:
            m = len(rows)
            self.set.append(rows, labels[n:n + m], C[n:n + m], ids[n:n + m])
            n += m
        if given is not None:
            self.set.adopt_layout(np.asarray(given, dtype=np.int64), int(n_given))
        self._snapshot = None
        self._txn = None        # the transaction open here (the driver's number)
        self._committed_txn = None  # the last one committed by apply_final here
        self._applied = 0       # requests applied in it (orders their deltas)
        self._dirty = set()     # heads (local) its requests may have changed
        self._delta = None      # what it changed, applied to _base at its commit
        if files is not None:
            self._install(files)
            self._base = PrimaryState.of(self.set)
        else:
            # a new model: every head empty, as the driver has them
            self._base = PrimaryState(len(self.heads), self.set.n_slots)

    def ready(self):
        """Number of slots held (a restarted actor answers once its heads are installed)."""
        return self.set.n_slots

    def adopt_layout(self, given, n_given):
        """The driver's :meth:`RayHeadSet.adopt_layout` on this actor's head set."""
        given = np.asarray(given, dtype=np.int64)
        self.set.adopt_layout(given, int(n_given))
        self._base.erase(np.flatnonzero(given < 0))

    # ------------------------------------------------------- two phases

    def begin(self, txn, removing=None):
        """Snapshot every head here: transaction `txn` opens on this actor.

        `removing`: the slots the transaction only unlearns (see
        :meth:`eco._headset.HeadSet.snapshot`).
        """
        self._snapshot = None  # a begin that fails leaves no transaction open
        self._txn, self._applied, self._dirty, self._delta = None, 0, set(), None
        self.set.close_snapshot()
        self._snapshot = self.set.open_snapshot(removing)
        self._txn = txn

    def commit(self, txn):
        """Transaction `txn` is committed: its delta becomes the committed state here."""
        if txn == self._txn and self._delta is not None:
            self._base.apply(self._delta)
        self.set.close_snapshot()
        if self._snapshot is not None:
            wipe_snapshot(self._snapshot)  # nothing of a removed row stays in freed memory
        self._snapshot, self._txn, self._delta = None, None, None

    def rollback(self, txn=None):
        """Back to the snapshot of :meth:`begin` (idempotent: a second call does nothing).

        Returns False when transaction `txn` was committed here already (by
        :meth:`apply_final`): only a restart at the driver's committed state
        undoes it. True otherwise.
        """
        if txn is not None and txn == self._committed_txn:
            return False
        if self._snapshot is not None:
            self.set.restore(self._snapshot)
        self.set.close_snapshot()
        self._snapshot, self._txn, self._delta = None, None, None
        return True

    def apply(self, op, txn, removing=None):
        """Run one request of transaction `txn` on the heads here (opened by the first one).

        Returns (result, path steps, migrations, seconds of work here: the
        snapshot and the request, the delta of every request of `txn` so
        far (:meth:`PrimaryState.changes`), its number, seconds taking the delta).
        """
        t0 = time.perf_counter()
        if txn != self._txn:
            self.begin(txn, removing)
        steps0, migr0 = self.set.n_steps, self.set.n_migrations
        result = self._dispatch(op)
        t1 = time.perf_counter()
        self._delta = self._changes()
        self._applied += 1
        return (result, self.set.n_steps - steps0, self.set.n_migrations - migr0, t1 - t0,
                PrimaryState.pack(self._delta), self._applied, time.perf_counter() - t1)

    def apply_final(self, op, txn, removing, erase):
        """The whole of a removal here in one message: :meth:`apply`, commit, then erase.

        A failure of the request rolls it back here and propagates (the
        driver then rolls back, or restarts, the actors that committed).
        Once committed here, the transaction is the committed state of this
        actor (:meth:`rollback` says so); a failure of the erase after it is
        returned rather than raised, so that the driver replaces this actor
        from its erased arrays. Returns what :meth:`apply` returns, then
        (slots held afterwards, seconds erasing, seconds committing, the
        erase's error as a string or None).
        """
        try:
            done = self.apply(op, txn, removing)
        except BaseException:
            self.rollback()
            raise
        t0 = time.perf_counter()
        self.commit(txn)
        self._committed_txn = txn
        t1 = time.perf_counter()
        try:
            n, erase_s, _ = self.erase(erase)
        except Exception as exc:  # committed here all the same
            return done + (None, 0.0, t1 - t0, repr(exc))
        return done + (n, erase_s, t1 - t0, None)

    def _changes(self):
        """The delta of the open transaction's requests (:meth:`PrimaryState.changes`).

        With ``spec["check_deltas"]`` (a test hook) it is held to the full
        comparison in numpy, and a difference raises UnlearningError.
        """
        heads = sorted(self._dirty)
        dropped = {j: self._snapshot[-1][j]["drop_slots"] for j in self.set.drop_record_heads}
        delta = self._base.changes(self.set, heads, dropped=dropped)
        if self.spec.get("check_deltas"):
            full = self._base.changes(self.set, heads, full=True)
            if delta[0] != full[0] or any(a.tobytes() != b.tobytes()
                                          for a, b in zip(delta[1:], full[1:])):
                raise UnlearningError(f"the delta of heads {self.heads} differs from the full "
                                      f"comparison: {len(delta[3])} slots listed, "
                                      f"{len(full[3])} changed")
        return delta

    def replay(self, ops, txn):
        """Open `txn` and apply its requests so far (on a restarted actor); returns (number, delta)."""
        self.begin(txn)
        for op in ops:
            self._dispatch(op)
            self._applied += 1
        self._delta = self._changes()
        return self._applied, PrimaryState.pack(self._delta)

    def erase(self, slots, txn=None):
        """Commit `txn` (the request that removed `slots`), then erase `slots` as the driver does.

        HeadSet.erase, compacting alike. Returns (slots held afterwards,
        seconds erasing, seconds committing).
        """
        t0 = time.perf_counter()
        if txn is not None:
            self.commit(txn)  # one message for both: the driver sent no commit of its own
        t1 = time.perf_counter()
        slots = np.asarray(slots, dtype=np.intp)
        keep = self.set.slot_given >= 0
        keep[slots] = False
        n = self.set.n_slots
        self.set.erase(slots)
        self._base.erase(slots)
        if self.set.n_slots != n:
            self._base.compact(np.flatnonzero(keep))
        return self.set.n_slots, time.perf_counter() - t1, t1 - t0

    def loo(self, active):
        """Exact leave-one-out decisions of `active` in every head here: {head: column}.

        :func:`eco.loo.loo_head` on the local head set, inside its own
        transaction (every head is restored after every example).
        """
        from .loo import loo_head

        active = np.asarray(active, dtype=np.intp)
        out = np.empty((len(active), len(self.heads)))
        with self.set.transaction():
            for j in range(len(self.heads)):
                loo_head(self.set, j, active, self.set.head_state(j), out)
        return {h: out[:, j].copy() for j, h in enumerate(self.heads)}

    def _dispatch(self, op):
        name, args = op[0], op[1:]
        s = self.set
        if name not in ("append", "restore_head"):
            # slot arguments (lists when short, see _wire) as the engines take them
            args = tuple(np.asarray(a, dtype=np.intp) if isinstance(a, list) else a for a in args)
        if name in _ALL_HEADS:
            self._dirty.update(range(len(self.heads)))
        if name == "append":
            rows, labels, C, ids = args
            s.append(self._rows(rows), _local_labels(labels, self.heads, self.spec["n_heads"]),
                     C, list(ids))
            return None
        if name == "solve_all":
            return s.solve_all(*args)
        if name in ("learn", "unlearn"):
            return tuple(self.heads[j] for j in getattr(s, name)(*args))
        if name == "drop_reserve":
            return s.drop_reserve(*args)
        if name not in _ONE_HEAD:
            raise UnlearningError(f"unknown request {name!r}")
        # one head: args[0] is the model's head index
        j = self._local[args[0]]
        self._dirty.add(j)
        return getattr(s, name)(j, *args[1:])

    def _rows(self, rows):
        return rows

    # ------------------------------------------------------------ reads

    def read(self, what, *args):
        """A read of every head here, as a dict head -> value (one value: "reserve", "decision")."""
        s = self.set
        if what == "reserve":
            return s.reserve_mask(*args)
        if what == "decision":
            head, slot = args
            return s.decision_of(self._local[head], slot)
        if what == "coef":
            return dict(zip(self.heads, s.coefficients().T))
        if what in ("alpha", "b", "sets"):  # inside a transaction: the prepared state
            values = {"alpha": s.alphas, "b": s.biases,
                      "sets": lambda: [s.sets(j) for j in range(len(self.heads))]}[what]()
            return dict(zip(self.heads, values))
        fn = {"state": s.head_state, "violation": s.violation}[what]
        return {h: fn(j) for j, h in enumerate(self.heads)}

    def local_arrays(self):
        """Every array this actor holds of the model (test hook: erasure is searched in them).

        The stored rows (features and kernel rows, cache included), the slot
        tables, every engine's state arrays and the committed primary state.
        """
        s = self.set
        every = np.arange(s.n_slots, dtype=np.intp)
        out = [s.stored_data(), s.kernel_block(every), s.slot_ids, s.slot_labels, s.slot_C,
               s.slot_given, s.alphas(), s.coefficients()] + self._base.arrays()
        if s.kernel != "precomputed":
            out.append(s.features_of(every))
        for j in range(s.n_heads):
            out += [v for v in s.engine(j).get_state().values() if isinstance(v, np.ndarray)]
        return out

    def memory(self, peak=False):
        """Resident memory of this process in bytes (`peak`: its peak, VmHWM; Linux), else None."""
        try:
            if peak:
                with open("/proc/self/status") as f:
                    line = next(x for x in f if x.startswith("VmHWM:"))
                return int(line.split()[1]) * 1024
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, StopIteration):
            return None

    def _install(self, files):
        """Install one eco state file per head (:func:`head_file`), then certify every head.

        The file is validated as any eco file (:func:`eco.persistence.state_from_bytes`)
        and must describe this actor's slots (labels, bounds, ids); the
        derived state is recomputed (:func:`eco.state.install_primary`) and
        the heads must pass :func:`eco.state.head_set_problem`.
        """
        s = self.set
        n = s.n_slots
        for j, (h, blob) in enumerate(zip(self.heads, files)):
            where = f"restart state of head {h}"
            state = state_from_bytes(np.asarray(blob).tobytes(), where)
            at = np.asarray(state.slot_index, dtype=np.intp)
            if state.params.get("head") != h or state.n_slots != n \
                    or not np.array_equal(state.slot_labels, s.head_labels(j)[at] > 0) \
                    or not np.array_equal(state.slot_C, s.slot_C[at]) \
                    or state.slot_ids.tolist() != s.slot_ids[at].tolist():
                raise UnlearningError(f"{where} does not match the actor's slots")
            s.restore_head(j, state.heads[0].expanded(at, n))
        problem = head_set_problem(s)
        if problem is not None:
            raise UnlearningError(f"restart state of heads {self.heads} refused: {problem}")

    # ------------------------------------------------------------ tests

    def check_deltas(self, on=True):
        """Hold every delta to the full comparison (:meth:`_changes`), or stop."""
        self.spec["check_deltas"] = bool(on)

    def arm_fault(self, method, k=1, after=False):
        """Make the `k`-th call of the local HeadSet's `method` raise InjectedFault (once)."""
        from .testing import InjectedFault

        original = getattr(HeadSet, method)
        calls = [0]

        def wrapper(*args, **kwargs):
            calls[0] += 1
            fire = calls[0] == k
            if fire:
                delattr(self.set, method)
            if fire and not after:
                raise InjectedFault(f"injected fault at call {k} of {method} on heads {self.heads}")
            result = original(self.set, *args, **kwargs)
            if fire:
                raise InjectedFault(f"injected fault after call {k} of {method} on heads "
                                    f"{self.heads}")
            return result

        setattr(self.set, method, wrapper)


class _HeadActor(HeadGroup):
    """The actor: a HeadGroup whose rows are fetched from the object store."""

    def __init__(self, spec, heads, chunks, labels, C, ids, given=None, n_given=None,
                 files=None):
        super().__init__(spec, heads, _ray().get(list(chunks)), labels, C, ids, given, n_given,
                         files)

    def _rows(self, rows):
        return _ray().get(rows[0])


_ACTOR = None


def _actor_class():
    global _ACTOR
    if _ACTOR is None:
        # No CPU reserved: the actors of several models share the cluster
        # (a reservation would leave a new model's actors pending forever once
        # the CPUs are taken); n_jobs sizes them and SPREAD places them.
        # max_restarts=0: a dead actor is restarted by the driver, from its
        # arrays, not re-run by Ray from its arguments.
        _ACTOR = _ray().remote(num_cpus=0, max_restarts=0)(_HeadActor)
    return _ACTOR


def _connect():
    """Ray, connected: the running cluster (``ray.init(address=...)`` called), else a local one."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    return ray


class RayHeadSet(SlotTables):
    """The heads of one model on Ray actors; the interface of :class:`eco._headset.HeadSet`.

    Parameters
    ----------
    spec : dict
        Kernel parameters (kernel, gamma, degree, coef0, precompute),
        ``n_heads`` and ``max_steps``.
    data : ndarray
        The rows.
    labels, C, ids : array-like
        Slot tables.
    n_jobs : int or None
        Number of actors; None or negative: one per CPU of the cluster. Never
        more than the number of heads.

    Attributes
    ----------
    actors : list of ray.actor.ActorHandle
        The actors, one per group of heads.
    groups : list of list of int
        The heads each actor holds (round robin over the actors).
    n_revivals : int
        Actors restarted after they died.
    work_s, delta_s, commit_s : float
        Seconds of work of the slowest actor, summed over the phases of
        every request so far (the snapshot and the request, then the
        erasure, in one message for a :meth:`remove`); seconds the slowest
        actor spent taking the deltas of its heads, and committing (its
        snapshot dropped, its delta applied) when an erasure told it to or
        in a removal's one message.
    """

    def __init__(self, spec, data, labels, C, ids, *, n_jobs=None, given=None, n_given=None):
        ray = _connect()
        self.spec = dict(spec)
        self.n_jobs = n_jobs
        n_features = 0 if spec["kernel"] == "precomputed" else data.shape[1]
        # the rows, once: decision_function, audits, restarts (no kernel cache)
        self.store = _cp_core.KernelStore(n_features, spec["kernel"], spec["gamma"],
                                          int(spec["degree"]), float(spec["coef0"]), False)
        data = np.ascontiguousarray(data, dtype=np.float64)
        self.store.append(data)
        self._labels = np.array(labels, dtype=np.intp)
        self._C = np.array(C, dtype=np.float64)
        self._ids = id_array(list(ids))
        # position at which each slot's example was given (-1: erased), as HeadSet's
        self._given = np.arange(len(data), dtype=np.int64) if given is None \
            else np.asarray(given, dtype=np.int64).copy()
        self._n_given = len(data) if n_given is None else int(n_given)
        self._map_ids()
        self._active = np.zeros(len(self._ids), dtype=bool)
        n_heads = int(spec["n_heads"])
        self._primary = PrimaryState(n_heads, len(data))  # committed; every head empty
        self._lock = threading.RLock()
        self._txn = None        # requests of the open transaction: (target actor or None, op)
        self._txn_id = 0
        self._removing = None  # the slots the open transaction only unlearns
        self._saved = None      # the committed tables while a transaction is open
        self._touched = set()   # actors that received a request of it
        self._deltas = {}       # actor -> (number, delta) of its latest request
        self._held = []         # object-store rows held for it (an increment's)
        self._unsent = None     # (transaction, actors): committed, not yet told to the actors
        self._cache = {}
        self._counts = [0, 0]   # path steps, migrations
        self.n_revivals = 0
        self.work_s = 0.0
        self.delta_s = 0.0
        self.commit_s = 0.0
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = cpus if n_jobs is None or n_jobs < 0 else int(n_jobs)
        n_actors = max(1, min(n_actors, n_heads))
        # round robin: the heads of neighbouring classes on different actors
        self.groups = [list(range(a, n_heads, n_actors)) for a in range(n_actors)]
        self._owner = {h: a for a, g in enumerate(self.groups) for h in g}
        # one object for every actor, dropped here at once: Ray keeps it
        # until the actors have been created over it
        rows = ray.put(data)
        self.actors = [self._new_actor(a, rows, len(data), self._n_given)
                       for a in range(n_actors)]
        del rows

    @classmethod
    def from_data(cls, data, *, kernel, gamma, degree, coef0, precompute, n_heads, labels, C,
                  ids, max_steps=0, n_jobs=None, cache_size=200.0):
        """A head set over the rows `data` (heads empty until :meth:`solve_all`)."""
        spec = dict(kernel=kernel, gamma=float(gamma), degree=int(degree), coef0=float(coef0),
                    precompute=bool(precompute), n_heads=int(n_heads), max_steps=max_steps or 0,
                    cache_size=cache_size)
        return cls(spec, data, labels, C, ids, n_jobs=n_jobs)

    @classmethod
    def from_state(cls, state, *, max_steps=0, n_jobs=None):
        """A head set holding `state` (an :class:`eco.state.ModelState`), bit for bit."""
        p = state.params
        # the active examples at their slots (zeros elsewhere), as the saved model had them
        data, labels, C, ids, given, heads = laid_out(state)
        spec = dict(kernel=p["kernel"], gamma=float(state.gamma_), degree=int(p["degree"]),
                    coef0=float(p["coef0"]), precompute=bool(p["precompute"]),
                    n_heads=int(state.n_heads), max_steps=max_steps or 0,
                    cache_size=p.get("cache_size", 200.0))
        hs = cls(spec, data, labels, C, ids.tolist(), n_jobs=n_jobs, given=given,
                 n_given=int(state.n_given))
        with hs.transaction():
            for h, head in enumerate(heads):
                hs.restore_head(h, head)
            hs._active[np.asarray(state.slot_index, dtype=np.intp)] = True
        return hs

    def adopt_layout(self, given, n_given):
        """Take the slot layout of another head set over the same stored rows (HeadSet's rule).

        Erased slots (``given < 0``) stay erased here, on the driver and on
        every actor (a restarted actor gets the layout from the driver's tables).
        """
        given = np.array(given, dtype=np.int64)
        if given.shape != (self.n_slots,):
            raise ValueError(f"given must have one entry per slot ({self.n_slots})")
        self._given, self._n_given = given, int(n_given)
        self._map_ids()
        dead = np.flatnonzero(given < 0).astype(np.intp)
        self.store.erase(dead, given >= 0)
        self._primary.erase(dead)
        self._call(range(len(self.actors)), "adopt_layout", given, self._n_given)

    def _map_ids(self):
        # ids of the examples held (erased slots hold none)
        self._slot_of = {i: s for s, i in enumerate(self._ids.tolist()) if self._given[s] >= 0}

    # ------------------------------------------------------------ actors

    def _new_actor(self, a, rows, n, n_given, files=None):
        """A new actor for group `a` over the first `n` slots (rows: an object ref to them)."""
        return _actor_class().options(scheduling_strategy="SPREAD").remote(
            self.spec, self.groups[a], [rows], self._labels[:n], self._C[:n], self._ids[:n],
            self._given[:n], n_given, files)

    def _committed_rows(self, n):
        """The first `n` stored rows, put in the object store (for a restart, dropped after it)."""
        every = np.arange(n, dtype=np.intp)
        rows = self.kernel_block(every)[:, :n] if self.kernel == "precomputed" \
            else self.features_of(every)
        return _ray().put(np.ascontiguousarray(rows))

    def _files(self, a, n):
        """The committed state of group `a`'s heads, one eco state file each (:func:`head_file`)."""
        return [head_file(self._primary, h, self.head_labels(h)[:n], self._C[:n], self._ids[:n],
                          self.spec["gamma"]) for h in self.groups[a]]

    def _revive(self, a, dead_handle):
        """Replace dead actor `a`: the committed state, then the open transaction's requests."""
        ray = _ray()
        with self._lock:
            if self.actors[a] is not dead_handle:
                return  # another thread revived it already
            n = self._primary.n_slots
            n_given = self._n_given if self._saved is None else self._saved[-1]
            ops = [op for target, op in (self._txn or []) if target is None or target == a]
            files, last = self._files(a, n), None
            for _ in range(_MAX_REVIVALS):
                rows = self._committed_rows(n)
                actor = self._new_actor(a, rows, n, n_given, files)
                try:
                    if ops:  # its delta is the transaction's on the new actor
                        number, blob = ray.get(actor.replay.remote(ops, self._txn_id))
                        self._deltas[a] = (number, PrimaryState.unpack(blob))
                    else:
                        ray.get(actor.ready.remote())
                except ray.exceptions.RayActorError as exc:
                    if exc.actor_init_failed:  # its start raised: it would again
                        cause = str(exc).strip().splitlines()[-1]
                        raise UnlearningError(
                            f"ray backend: could not restart the actor holding heads "
                            f"{self.groups[a]}: {cause}") from exc
                    last = exc
                    continue  # the new actor died too (killed, or its node lost)
                except ray.exceptions.RayTaskError as exc:
                    raise UnlearningError(
                        f"ray backend: replaying the open request on a restarted actor (heads "
                        f"{self.groups[a]}) failed: {exc.cause!r}") from exc
                finally:
                    del rows  # the actor holds them now: the object store need not
                self.actors[a] = actor
                self.n_revivals += 1
                self._cache.clear()  # its derived state is recomputed: read it anew
                return
            raise UnlearningError(
                f"ray backend: could not restart the actor holding heads {self.groups[a]} "
                f"from the committed state ({_MAX_REVIVALS} tries; last: {last})")

    def _replace(self, a, handle):
        """Kill actor `a` (`handle`), whose state is unknown, and revive it at the committed state."""
        try:
            _ray().kill(handle, no_restart=True)
        except Exception:  # already gone
            pass
        self._revive(a, handle)

    def _call(self, actors, method, *args):
        """``method(*args)`` on `actors`, reviving dead ones and calling them again.

        Returns {actor: result}. An exception raised by an actor propagates
        (as its own type) once every call has finished.
        """
        ray = _ray()
        self._send_commit()  # first (erase, which does not come here, carries its own)
        results, todo = {}, list(actors)
        for attempt in range(_MAX_REVIVALS + 1):
            handles = {a: self.actors[a] for a in todo}
            refs = {a: getattr(h, method).remote(*args) for a, h in handles.items()}
            try:  # one wait for all of them: the usual case
                results.update(zip(refs, ray.get(list(refs.values()))))
                return results
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                pass  # sorted out one by one below, once every call has finished
            dead, error = [], None
            for a, ref in refs.items():
                try:
                    results[a] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    dead.append(a)
                except ray.exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    error = error or (cause if isinstance(cause, BaseException)
                                      else exc.as_instanceof_cause())
            if error is not None:
                raise error
            if not dead:
                return results
            if attempt == _MAX_REVIVALS:
                break
            for a in dead:
                self._revive(a, handles[a])
            todo = dead
        raise UnlearningError(
            f"ray backend: the actors holding heads {[self.groups[a] for a in dead]} died "
            f"{_MAX_REVIVALS + 1} times during one request; it was not completed")

    def _request(self, op, target=None):
        """Run a mutating request on every actor (or the owner `target`), within a transaction."""
        if self._txn is None:
            with self.transaction():
                return self._request(op, target)
        got = self._send(op, target)
        return [got[a][0] for a in sorted(got)]

    def _send(self, op, target=None, erase=None):
        """Send request `op` of the open transaction; returns {actor: reply}.

        :meth:`HeadGroup.apply`, or with `erase` (the slots a removal
        erases) :meth:`HeadGroup.apply_final`, whose replies carry the
        erasure's too. The deltas of the replies are recorded for the commit.
        """
        actors = range(len(self.actors)) if target is None else [target]
        _safe_point()  # an interrupt that arrived stops the request here (rolled back)
        with self._lock:
            self._touched.update(actors)
        if erase is None:
            got = self._call(actors, "apply", op, self._txn_id, self._removing)
        else:
            got = self._call(actors, "apply_final", op, self._txn_id, self._removing, erase)
        with self._lock:
            self._txn.append((target, op))
            self._cache.clear()
            for a, (_, steps, migrations, _, blob, number, _, *_) in got.items():
                delta = PrimaryState.unpack(blob)
                if delta[0] != self.store.n_slots:
                    raise UnlearningError(f"ray backend: an actor holds {delta[0]} slots, the "
                                          f"driver {self.store.n_slots}")
                self._counts[0] += steps
                self._counts[1] += migrations
                if number > self._deltas.get(a, (0,))[0]:
                    self._deltas[a] = (number, delta)
            self.work_s += max(r[3] for r in got.values())
            self.delta_s += max(r[6] for r in got.values())
        return got

    # ------------------------------------------------------- transaction

    @contextmanager
    def transaction(self, removing=None):
        """All-or-nothing block across the actors (two-phase; nested blocks join the outer one).

        `removing`: the slots the block only unlearns; the actors snapshot
        the heads where that is a reserve drop as its record (see
        :meth:`eco._headset.HeadSet.snapshot`).

        The first request that reaches an actor snapshots its heads there
        (prepare) and every request returns what it changed; on success the
        driver applies those changes to its committed arrays (the commit
        point) and the actors commit; on an exception every actor that took
        part rolls back (one that died, or whose rollback failed, is
        replaced by a new one at the committed state) and the driver's
        tables are put back. SIGINT is deferred for the whole block, as in
        :meth:`eco._headset.HeadSet.transaction`: an interrupt stops the
        request at the next safe point (before each request to the actors,
        and before the commit), and the commit and the rollback run with
        every further interrupt deferred.
        """
        if self._txn is not None:
            yield self
            return
        with interrupt_guard() as guard:
            with guard.deferred():
                saved = self._open(removing)
            try:
                yield self
                # last safe point: an interrupt that arrived during the
                # request undoes it rather than surfacing after the commit
                _safe_point()
                # the only allocation of the commit, before its point
                self._primary.resize(self.store.n_slots)
            except BaseException:
                with guard.deferred():
                    self._removing = None
                    self._abort(saved)
                raise
            with guard.deferred():
                self._removing = None
                self._commit()

    def _open(self, removing):
        """Open a transaction on the driver (the actors open theirs at its first request)."""
        saved = (self.store.n_slots, self._labels, self._C, self._ids,
                 self._active.copy(), self._given, self._n_given)
        self._txn_id += 1
        self._txn, self._saved, self._touched, self._deltas = [], saved, set(), {}
        self._removing = None if removing is None else _wire(removing)
        return saved

    def _commit(self, told=False):
        """The commit point: the actors' deltas become the driver's committed state.

        `told`: the actors committed already (:meth:`remove`); otherwise they
        are told with the next call (an erasure's, or before any other).
        """
        deltas, touched = self._deltas, sorted(self._touched)
        for a, (_, delta) in deltas.items():  # the commit point
            self._primary.apply(delta, self.groups[a])
        self._txn = self._saved = None
        self._held = []  # the actors hold an increment's rows now: the object store need not
        if not told:
            self._unsent = (self._txn_id, touched)

    def _send_commit(self):
        """Tell the actors of the last committed transaction (unless told already)."""
        if self._unsent is not None:
            txn, touched = self._unsent
            self._unsent = None
            for a in touched:
                self.actors[a].commit.remote(txn)

    def _abort(self, saved):
        """Put the driver's tables and every actor back at the committed state (idempotent).

        Cannot stop halfway: every actor that took part is asked to roll
        back; one that died, whose rollback raised, or that had committed its
        part already (the one request of :meth:`remove`), is killed and
        replaced by a new one started from the committed state.
        """
        ray = _ray()
        n = saved[0]
        for i in self._ids[n:].tolist():  # ids of rows stored by the failed request
            self._slot_of.pop(i, None)
        _, self._labels, self._C, self._ids, self._active, self._given, self._n_given = saved
        self._txn = self._saved = None
        self._held = []
        self._cache.clear()
        self._primary.resize(n)
        # rows of a failed increment leave no trace in the driver's store either
        self.store.erase(np.arange(n, self.store.n_slots, dtype=np.intp))
        self.store.truncate(n)
        handles = {a: self.actors[a] for a in sorted(self._touched)}
        refs = {a: h.rollback.remote(self._txn_id) for a, h in handles.items()}
        failed = []
        for a, ref in refs.items():
            try:
                if not ray.get(ref):  # it committed its part (remove): restarted below
                    failed.append(a)
            except Exception:  # dead, or its rollback failed: its state is unknown
                failed.append(a)
        error = None
        for a in failed:  # every one of them, even when one cannot be restarted
            try:
                self._replace(a, handles[a])
            except UnlearningError as exc:
                error = error or exc
        if error is not None:
            raise error

    # ------------------------------------------------------------ read

    def _read(self, what):
        """{head: value} of a per-head read of the actors, cached until the next mutation."""
        cached = self._cache.get(what)
        if cached is None:
            cached = {}
            for part in self._call(range(len(self.actors)), "read", what).values():
                cached.update(part)
            self._cache[what] = cached
        return cached

    export_state = HeadSet.export_state

    @property
    def n_heads(self):
        return int(self.spec["n_heads"])

    @property
    def n_slots(self):
        return self.store.n_slots

    @property
    def n_active(self):
        return int(np.count_nonzero(self._active))

    def is_active(self, slot):
        return bool(self._active[slot])

    def active_slots(self):
        """Slots of the active examples, in the order they were given (intp)."""
        return np.flatnonzero(self._active).astype(np.intp)

    def _inactive(self, slots):
        # per slot of `slots`: not active (SlotTables.slots_to_erase)
        return ~self._active[slots]

    def head_labels(self, head):
        """Labels (+1/-1) of every stored slot for one head."""
        positive = 1 if self.n_heads == 1 else head
        return np.where(self._labels == positive, 1.0, -1.0)

    @property
    def kernel(self):
        return self.spec["kernel"]

    def engine(self, head):
        """Not available: the engines live in the actors."""
        raise UnlearningError('backend="ray": the engines live in Ray actors; there is no '
                              "local engine (use head_state)")

    def head_state(self, head):
        """Copy of one head's state, an :class:`eco.state.HeadState` (read on its actor)."""
        return self._read("state")[head]

    @contextmanager
    def digest_states(self):
        """Every head's state, for a digest (HeadSet.digest_states' interface).

        They are this head set's cached reads of the actors (until the next
        request), so they are not zeroed here.
        """
        yield [self.head_state(h) for h in range(self.n_heads)]

    def committed_state(self, head):
        """The driver's committed primary state of `head` (what a restart installs).

        An :class:`eco.state.HeadState` over every slot, without derived fields.
        """
        return self._primary.head(head, self.head_labels(head), self._C.copy())

    def alphas(self):
        """alpha of every slot, shape (n_heads, n_slots) (the driver's arrays between requests)."""
        if self._txn is None:
            return self._primary.alpha.copy()
        a = self._read("alpha")
        return np.stack([a[h] for h in range(self.n_heads)])

    def coefficients(self):
        """alpha_i y_i of every slot, shape (n_slots, n_heads)."""
        c = self._read("coef")
        return np.stack([c[h] for h in range(self.n_heads)], axis=1)

    def biases(self):
        if self._txn is None:
            return self._primary.b.copy()
        b = self._read("b")
        return np.array([b[h] for h in range(self.n_heads)])

    def sets(self, head):
        """Set code of every slot in `head`."""
        if self._txn is None:
            return self._primary.sets[head].copy()
        return self._read("sets")[head]

    def decision_of(self, head, slot):
        """Decision value of `head` at a stored slot."""
        a = self._owner[head]
        return self._call([a], "read", "decision", head, int(slot))[a]

    def violation(self, head):
        """KKT violation of `head`, recomputed from scratch (on its actor)."""
        return self._read("violation")[head]

    @property
    def n_steps(self):
        """Path steps taken by the requests of this head set (replays not counted)."""
        return self._counts[0]

    @property
    def n_migrations(self):
        return self._counts[1]

    def memory(self, peak=False):
        """Resident memory of every actor's process in bytes (None where unknown; `peak`: peak)."""
        got = self._call(range(len(self.actors)), "memory", bool(peak))
        return [got[a] for a in range(len(self.actors))]

    def ping(self):
        """One round trip to every actor and back, no work: the fixed cost of a request."""
        self._call(range(len(self.actors)), "memory", False)

    def arm_fault(self, actor, method, k=1, after=False):
        """Test hook: the `k`-th call of HeadSet.`method` on `actor` raises InjectedFault."""
        self._call([actor], "arm_fault", method, k, after)

    def check_deltas(self, on=True):
        """Test hook: every actor (restarted ones too) holds its deltas to the full
        comparison of its heads' arrays in numpy (:meth:`PrimaryState.changes`) and
        raises on a difference."""
        self.spec["check_deltas"] = bool(on)
        self._call(range(len(self.actors)), "check_deltas", bool(on))

    # ----------------------------------------------------------- work

    def map_heads(self, fn, heads=None):
        """``[fn(h) for h in heads]`` over driver threads, one per actor at most."""
        heads = list(range(self.n_heads) if heads is None else heads)
        n_threads = min(len(self.actors), len(heads))
        if n_threads <= 1:
            return [fn(h) for h in heads]
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            return list(pool.map(fn, heads))

    def solve(self, head, active, method="batch"):
        """Solve `head` exactly from scratch on the `active` slots."""
        self._request(("solve", head, _wire(active), method),
                      self._owner[head])

    def solve_all(self, active, method="batch"):
        """Solve every head from scratch on `active` (every actor in parallel)."""
        active = np.asarray(active, dtype=np.intp)
        with self.transaction():
            self._request(("solve_all", _wire(active), method))
            self._active[:] = False
            self._active[active] = True

    def append(self, X, labels, C, ids):
        """Store new rows (inactive in every head); returns their slots."""
        ray = _ray()
        X = np.array(X, dtype=np.float64, order="C")
        if self.kernel == "precomputed":
            # the columns of erased examples are not stored, nor put in the object store
            X[:, :self.n_slots][:, self._given < 0] = 0.0
        labels = np.asarray(labels, dtype=np.int64)
        C = np.asarray(C, dtype=np.float64)
        ids = list(ids)
        with self.transaction():
            ref = ray.put(X)
            self._held.append(ref)
            slots = np.asarray(self.store.append(X), dtype=np.intp)
            self._labels = np.concatenate([self._labels, labels.astype(np.intp)])
            self._C = np.concatenate([self._C, C])
            self._ids = id_array(list(self._ids) + ids)
            self._given = np.concatenate([self._given,
                                          self._n_given + np.arange(len(X), dtype=np.int64)])
            self._n_given += len(X)
            self._active = np.concatenate([self._active, np.zeros(len(X), dtype=bool)])
            for s, i in zip(slots, ids):
                self._slot_of[i] = int(s)
            self._request(("append", [ref], labels, C, ids))
        return slots

    def _update_all(self, name, slots, *args):
        slots = np.asarray(slots, dtype=np.intp)
        with self.transaction():
            done = self._request((name, _wire(slots)) + args)
            self._active[slots] = name == "learn"
        return tuple(sorted(h for part in done for h in part))

    def learn(self, slots):
        """Learn stored, inactive `slots` in every head; returns the re-solved heads."""
        return self._update_all("learn", slots)

    def unlearn(self, slots, batch=True):
        """Unlearn active `slots` from every head; returns the re-solved heads."""
        return self._update_all("unlearn", slots, bool(batch))

    def learn_head(self, head, slots):
        """Learn `slots` in `head`; True when the head was re-solved."""
        slots = np.asarray(slots, dtype=np.intp)
        return self._request(("learn_head", head, _wire(slots)), self._owner[head])[0]

    def unlearn_head(self, head, slots, batch=True):
        """Unlearn active `slots` from `head`; True when the head was re-solved."""
        slots = np.asarray(slots, dtype=np.intp)
        return self._request(("unlearn_head", head, _wire(slots), bool(batch)),
                             self._owner[head])[0]

    def all_reserve(self, slots):
        """True when every slot has alpha = 0 in every head."""
        return bool(np.all(self.reserve_mask(slots)))

    def reserve_mask(self, slots):
        """Per slot: alpha = 0 in every head (the driver's arrays between requests)."""
        slots = np.asarray(slots, dtype=np.intp)
        if self._txn is None:
            return np.all(self._primary.alpha[:, slots] == 0.0, axis=0)
        key = ("reserve", slots.tobytes())
        if key not in self._cache:
            got = self._call(range(len(self.actors)), "read", "reserve", slots)
            self._cache[key] = np.all([got[a] for a in got], axis=0)
        return self._cache[key]

    def drop_reserve(self, slots):
        """Remove slots with alpha = 0 in every head, on every actor (all or nothing)."""
        slots = np.asarray(slots, dtype=np.intp)
        with self.transaction():
            self._request(("drop_reserve", _wire(slots)))
            self._active[slots] = False

    # --------------------------------------------------------- erasure

    def remove(self, slots, batch=True, reserve_only=False):
        """Unlearn active `slots` from every head, commit, and erase them: one round trip.

        :meth:`eco._headset.HeadSet.remove` on the actors. Every actor runs
        the request on its heads, commits it and erases the rows
        (:meth:`HeadGroup.apply_final`) in one message; the driver then
        commits the deltas they return and erases its own arrays. Two phases
        are not needed for all or nothing here: the driver's arrays stay the
        committed state until every actor has succeeded, so when one fails,
        the actors that committed their part are replaced by new ones started
        from those arrays (:meth:`_abort`), and the others roll back. An
        interrupt that arrives once the request is on its way waits for its
        end. An actor whose erase failed after its commit is replaced from
        the driver's erased arrays, as in :meth:`erase`.

        Returns the heads that were re-solved from scratch.
        """
        slots = np.asarray(slots, dtype=np.intp)
        if self._txn is not None:
            raise UnlearningError("remove: a request is in progress")
        erase = self.slots_to_erase(slots)
        op = ("drop_reserve", _wire(slots)) if reserve_only \
            else ("unlearn", _wire(slots), bool(batch))
        with interrupt_guard() as guard:
            with guard.deferred():
                saved = self._open(slots)
            try:
                got = self._send(op, erase=_wire(erase))
            except BaseException:
                with guard.deferred():
                    self._removing = None
                    self._abort(saved)
                raise
            with guard.deferred():  # every actor committed: so does the driver
                self._removing = None
                handles = list(self.actors)
                self._active[slots] = False
                self._commit(told=True)
                with self._lock:
                    self._cache.clear()
                    self._erase_tables(erase)
                try:
                    self._erased_on_actors(
                        handles, [a for a, r in got.items() if r[10] is not None],
                        {a: r[7:10] for a, r in got.items() if r[10] is None})
                except UnlearningError as exc:
                    raise ErasureIncomplete(str(exc)) from exc
        return () if reserve_only else tuple(sorted(h for r in got.values() for h in r[0]))

    def erase(self, slots):
        """Erase removed examples everywhere: actors and driver (HeadSet.erase's rule).

        One round trip, which also tells the actors that the request that
        removed them is committed: every actor erases `slots` (and any held
        inactive slot) in its local head set and its copy of the committed
        state, compacting when HeadSet does. Meanwhile the driver zeroes them
        in its tables, its rows and its committed arrays alike (in place), and
        compacts alike. Nothing else holds them: the object store held the
        rows only until the actors had them, and no request is logged. An
        actor that dies during the erase, or whose erase raises, is replaced
        by one started from the driver's arrays, which are erased by then.
        """
        ray = _ray()
        slots = self.slots_to_erase(slots)
        if self._txn is not None:
            raise UnlearningError("erase: a request is in progress")
        txn, self._unsent = (self._unsent or (None,))[0], None
        handles = list(self.actors)
        wired = _wire(slots)
        refs = [h.erase.remote(wired, txn) for h in handles]
        with self._lock:  # the driver's part while the actors do theirs
            self._cache.clear()
            self._erase_tables(slots)
        got, failed = {}, []
        for a, ref in enumerate(refs):
            try:
                got[a] = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                failed.append(a)  # dead, or erased only in part: replaced below
        self._erased_on_actors(handles, failed, got)

    def _erased_on_actors(self, handles, failed, got):
        """The end of an erasure on the actors, once the driver has erased its arrays.

        The `failed` actors (dead, or erased only in part) are replaced
        from those arrays; `got`: {actor: (slots held, seconds erasing,
        seconds committing)} of the others, whose slot counts must be the
        driver's.
        """
        for a in failed:
            self._replace(a, handles[a])
        n = self.store.n_slots
        if any(r[0] != n for r in got.values()):
            raise UnlearningError(f"erase: actors hold {sorted({r[0] for r in got.values()})} "
                                  f"slots, the driver {n}")
        if got:
            self.work_s += max(r[1] for r in got.values())
            self.commit_s += max(r[2] for r in got.values())

    def _erase_tables(self, slots):
        """The driver's part of :meth:`erase` (HeadSet.erase and HeadSet.compact on its arrays)."""
        self._forget_slots(slots)
        self.store.erase(slots, self._given >= 0)
        self._primary.erase(slots)
        if self.compaction_due():
            keep = np.flatnonzero(self._given >= 0).astype(np.intp)
            _cp_core.compact_slots(self.store, [], keep)
            self._labels, self._C = self._labels[keep], self._C[keep]
            self._ids, self._given = self._ids[keep], self._given[keep]
            self._active = self._active[keep]
            self._primary.compact(keep)
            self._map_ids()

    def held_objects(self):
        """Every object this head set keeps in Ray's object store (an open increment's rows)."""
        return list(self._held)

    def checkpoint_files(self):
        """Every byte the driver holds to restart actors (test hook: erasure is searched in them).

        The eco state file of every head as a restart would install it, and
        the arrays it is built from: the rows, the slot tables and the
        committed primary state.
        """
        n = self._primary.n_slots
        files = [bytes(f) for a in range(len(self.actors)) for f in self._files(a, n)]
        ids = self._ids if self._ids.dtype.kind != "O" else np.array(
            [str(i) for i in self._ids.tolist()])
        arrays = [self.stored_data(), self._labels, self._C, ids, self._given] \
            + self._primary.arrays()
        return files + [np.ascontiguousarray(v).tobytes() for v in arrays]

    def loo_decision(self, active):
        """Exact leave-one-out decisions of the `active` slots, shape (len(active), n_heads).

        One call per actor for the whole batch (:meth:`HeadGroup.loo`); the
        heads are restored on the actors, so nothing is committed.
        """
        active = np.asarray(active, dtype=np.intp)
        out = np.empty((len(active), self.n_heads))
        for part in self._call(range(len(self.actors)), "loo", active).values():
            for h, column in part.items():
                out[:, h] = column
        return out

    def actor_arrays(self):
        """Every array each actor holds of the model, one list per actor (test hook)."""
        got = self._call(range(len(self.actors)), "local_arrays")
        return [got[a] for a in range(len(self.actors))]

    def restore_head(self, head, state):
        """Install a :class:`eco.state.HeadState` (or engine dict) in `head`, bit for bit."""
        if not isinstance(state, HeadState):
            state = HeadState.from_engine_dict(state)
        self._request(("restore_head", head, state), self._owner[head])
