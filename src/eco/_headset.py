"""The head set: the kernel store, the heads and the slot tables, behind one interface.

:class:`HeadSet` is the seam between the estimator (:class:`eco.CPSVM`) and
the numerics. It owns the kernel store, one CP engine per head (one head for
two classes, one per class otherwise), the slot tables (ids, labels, per
example C, id -> slot) and the mapping of work over heads (``n_jobs``
threads, BLAS on one thread). The estimator, :mod:`eco.loo`,
:mod:`eco.audit` and :mod:`eco.testing` use only its public methods, so that
another backend (heads held by remote actors) can stand in for it.

Every mutation is meant to run inside :meth:`HeadSet.transaction`, which
makes it all-or-nothing: on any exception, ``KeyboardInterrupt`` included,
the store, the slot tables and every head are put back as they were. SIGINT
is deferred for the whole transaction (:mod:`eco._concurrency`): the update
stops at the next safe point with ``KeyboardInterrupt``, every worker thread
is joined, and the rollback runs with further interrupts deferred. The head
set has no lock of its own: the estimator serialises its mutations (see
:class:`eco.CPSVM`).

Removed examples are erased (:meth:`HeadSet.erase`): their rows, cached
kernel values, labels, bounds, coefficients and ids are overwritten with
zeros and placeholders; once more than half of the slots (and at least
:data:`COMPACT_MIN`) are erased, the slots are renumbered without them
(:meth:`HeadSet.compact`), so memory follows the active examples, not the
churn. A precomputed kernel is never renumbered: its callers index kernel
columns by the position at which each example was given.
"""

import gc
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _cp_core
from ._concurrency import checkpoint, current_guard, interrupt_guard, run_with_guard
from ._warmstart import head_violation, solve_head
from .exceptions import EngineError, InvalidInputError, UnlearningError
from .state import HeadState, install_primary

__all__ = ["ErasureIncomplete", "HeadSet", "erase_committed"]

_SET_INACTIVE = _cp_core.SET_INACTIVE
#: Compact once erased slots exceed this many and this fraction of the slots.
COMPACT_MIN = 64
COMPACT_FRACTION = 0.5
_BLAS_CONTROLLER = None


class ErasureIncomplete(UnlearningError):
    """A removal was committed, but erasing the removed rows failed (see :meth:`HeadSet.remove`).

    The model is updated; the erasure is completed by the next erase, which
    takes every stored row that is no longer active. The cause is chained.
    """


#: Work of one row product, n_slots * |S| (multiply-adds), from which BLAS
#: runs on every core. Measured with scipy's OpenBLAS dgemv on the shared
#: 2-core machine (load 8): two threads lose below about 2e7 (at 6e6 they
#: take 28 ms against 15 ms for one: threads that spin and yield on busy
#: cores), break even at 2e7 and win 15-25% from 6e7; on a quiet machine
#: the crossover is lower, so this errs on the side of one thread.
BLAS_THREADS_MIN_WORK = 3e7


def one_blas_thread(threads=1):
    """Context in which BLAS runs on `threads` threads (default one).

    The engine's products (one margin-row matrix-vector product per step) are
    too small to gain from BLAS threads below :data:`BLAS_THREADS_MIN_WORK`,
    and on busy cores those threads spin waiting for each other: measured at
    n = 5000, a decrement took 10-20x longer with two OpenBLAS threads on a
    loaded 2-core machine. Heads run in parallel through ``n_jobs`` instead.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        # created after _cp_core has loaded SciPy's BLAS, so that it is seen
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=threads, user_api="blas")


def blas_threads_for(n_slots, n_margin, n_jobs):
    """BLAS threads for work on heads with rows of `n_slots` and `n_margin` margin vectors.

    Every core when one head at a time runs products of at least
    :data:`BLAS_THREADS_MIN_WORK`, else one (heads in parallel already use
    the cores).
    """
    if n_jobs <= 1 and n_slots * n_margin >= BLAS_THREADS_MIN_WORK:
        return os.cpu_count() or 1
    return 1


def id_array(ids):
    """Ids as an int64 array when they are all integers that fit, else an object array."""
    # one test per distinct type, not per id (0.2 instead of 0.6 ms for
    # 5,000 ids); bool is an int subclass but never an id number
    if all(issubclass(t, (int, np.integer)) and not issubclass(t, bool)
           for t in set(map(type, ids))):
        try:
            return np.asarray(ids, dtype=np.int64).reshape(-1)
        except OverflowError:
            pass
    arr = np.empty(len(ids), dtype=object)
    arr[:] = list(ids)
    return arr


def laid_out(state):
    """The slot layout of a ModelState: its active examples at their slots, zeros elsewhere.

    Returns data, labels, C, ids (placeholders 0 or None in erased slots),
    given (-1 in erased slots) and the heads' states over every slot, so that
    a head set built from them computes exactly as the one that was saved.
    """
    n, at = int(state.n_slots), np.asarray(state.slot_index, dtype=np.intp)
    if state.params["kernel"] == "precomputed":
        data = np.zeros((n, n))
        data[np.ix_(at, at)] = state.data
    else:
        data = np.zeros((n, state.data.shape[1]))
        data[at] = state.data
    labels, C = np.zeros(n, dtype=np.intp), np.zeros(n)
    labels[at], C[at] = state.slot_labels, state.slot_C
    ids = np.zeros(n, dtype=np.int64) if state.slot_ids.dtype.kind == "i" \
        else np.full(n, None, dtype=object)
    ids[at] = state.slot_ids
    given = np.full(n, -1, dtype=np.int64)
    given[at] = state.slot_given
    return data, labels, C, ids, given, [head.expanded(at, n) for head in state.heads]


def _concat_ids(old, new):
    """``id_array(list(old) + list(new))`` without rebuilding the old ids in Python."""
    if old.dtype == new.dtype:
        return np.concatenate([old, new])
    return id_array(list(old) + list(new))


class SlotTables:
    """The slot tables every head-set backend keeps on the driver, read-only views.

    A backend sets ``_ids``, ``_labels``, ``_C``, ``_given``, ``_n_given``
    and ``_slot_of``, and ``store``, the driver's kernel store (with the
    ``kernel`` and ``n_slots`` properties), and answers ``n_active``,
    ``active_slots()`` and ``_inactive(slots)``; :class:`HeadSet` and the
    Ray backend's ``RayHeadSet`` share these accessors.
    """

    @property
    def _given(self):
        # the position given of every slot, -1 once erased; assigning a new
        # array also counts its held slots, which _forget_slots keeps
        # current, so that an erasure finds out in O(1) whether a stored row
        # beyond the request's is left (slots_to_erase)
        return self._given_array

    @_given.setter
    def _given(self, given):
        self._given_array = given
        self._n_held = int(np.count_nonzero(given >= 0))

    @property
    def slot_ids(self):
        """Id of every slot (removed ones included), int64 or object array."""
        return self._ids

    @property
    def slot_labels(self):
        """Class index of every slot."""
        return self._labels

    @property
    def slot_C(self):
        """Box bound C_i of every slot."""
        return self._C

    @property
    def slot_given(self):
        """Position at which the example of every slot was given (-1 for an erased slot)."""
        return self._given

    @property
    def n_given(self):
        """Number of examples ever given (the next default id)."""
        return self._n_given

    def slot_of(self, i):
        """Slot of id `i`, or None for an id not held (never given, or removed and erased)."""
        return self._slot_of.get(i)

    def features_of(self, slots):
        """Stored feature rows of `slots`, shape (len(slots), n_features)."""
        return self.store.features_of(np.asarray(slots, dtype=np.intp))

    def kernel_block(self, slots):
        """Kernel rows of `slots` against every stored slot, shape (len(slots), n_slots)."""
        return self.store.kernel_block(np.asarray(slots, dtype=np.intp))

    def stored_data(self):
        """Every stored row: the features, or for "precomputed" the kernel matrix of all slots."""
        if self.kernel == "precomputed":
            return self.kernel_block(np.arange(self.n_slots))
        return self.store.features()

    def slots_to_erase(self, slots):
        """`slots` with every stored row that is not active (intp, sorted).

        An erase that an interrupt prevented left such rows: erasure
        catches up at the next decrement. O(len(slots)) when there are none
        (the held slots are then the active ones and `slots`).
        """
        slots = np.asarray(slots, dtype=np.intp)
        if len(slots) > 1:  # (one slot is its own sorted set: no np.unique)
            slots = np.unique(slots)
        held_inactive = int(np.count_nonzero((self._given[slots] >= 0) & self._inactive(slots)))
        if self._n_held == self.n_active + held_inactive:
            return slots
        held = self._given >= 0
        held[self.active_slots()] = False
        return np.union1d(slots, np.flatnonzero(held)).astype(np.intp)

    def compaction_due(self):
        """True when erased slots exceed ``max(COMPACT_MIN, COMPACT_FRACTION * n_slots)``
        (never for a precomputed kernel, whose columns are numbered by the position given)."""
        return self.kernel != "precomputed" and \
            self.n_slots - self._n_held > max(COMPACT_MIN, COMPACT_FRACTION * self.n_slots)

    def _forget_slots(self, slots):
        """The tables' part of an erasure: forget the ids of `slots` (distinct, as
        :meth:`slots_to_erase` gives them), zero their entries."""
        for i in self._ids[slots].tolist():
            self._slot_of.pop(i, None)
        self._n_held -= int(np.count_nonzero(self._given[slots] >= 0))  # slots are distinct
        self._ids[slots] = 0 if self._ids.dtype.kind == "i" else None
        self._labels[slots] = 0
        self._C[slots] = 0.0
        self._given[slots] = -1


def _zero_arrays(values):
    """Zero in place every numpy array among `values` (copies about to be dropped).

    Dropped unzeroed, a copy taken before a removal would leave the removed
    rows' values in freed memory; the compiled engine zeroes its own buffers
    before freeing them (``_zfree``), these are the Python layer's copies.
    """
    for value in values:
        if isinstance(value, np.ndarray):
            value.fill(0)


def erase_committed(heads, slots):
    """``heads.erase(slots)`` once the removal of `slots` is committed.

    Interrupts wait until it is done; a failure raises
    :class:`ErasureIncomplete` with the cause chained (the removal stands).
    """
    with interrupt_guard() as guard, guard.deferred():
        try:
            heads.erase(slots)
        except Exception as exc:
            raise ErasureIncomplete(f"erasing the removed rows failed: {exc!r}") from exc


def is_drop_record(state):
    """True for a head kept in a snapshot as a drop record (:meth:`HeadSet.snapshot`)."""
    return "drop_slots" in state


def wipe_snapshot(snapshot):
    """Zero what a :meth:`HeadSet.snapshot` copied, once it will not be restored.

    A snapshot taken before a removal holds the heads as they were: the
    removed rows' labels, bounds, coefficients and gradients, and inverse
    margin matrices that a removed margin vector took part in. Its arrays
    are zeroed in place and its copy of the id table is emptied; the tables
    it shares with the live head set are left alone.
    """
    snapshot[4].clear()  # the copy of the id -> slot table
    _zero_arrays(v for state in snapshot[-1] for v in state.values())


class HeadSet(SlotTables):
    """The heads of one model, their kernel store and slot tables.

    Parameters
    ----------
    store : eco._cp_core.KernelStore
        The stored rows (features, or kernel rows for "precomputed").
    n_heads : int
    labels : ndarray of int64, shape (n_slots,)
        Class index of every slot.
    C : ndarray of float64, shape (n_slots,)
        Box bound of every slot.
    ids : sequence of hashable, shape (n_slots,)
        Id of every slot.
    max_steps : int
        Bound on the path steps of one update of one head (0: the engine's default).
    n_jobs : int or None
        Threads over the heads; None means 1, negative means all cores.
    """

    def __init__(self, store, n_heads, labels, C, ids, *, max_steps=0, n_jobs=None):
        self.store = store
        self.n_jobs = n_jobs
        self._engines = [_cp_core.CPEngine(store, max_steps or 0) for _ in range(n_heads)]
        self._labels = np.asarray(labels, dtype=np.intp)
        self._C = np.asarray(C, dtype=np.float64)
        self._ids = id_array(list(ids))
        self._slot_of = {i: s for s, i in enumerate(self._ids.tolist())}
        # position at which the example of every slot was given (-1: erased),
        # and how many were ever given: the numbering of precomputed kernel
        # columns and default ids, and what the digest names margin vectors by
        self._given = np.arange(store.n_slots, dtype=np.int64)
        self._n_given = int(store.n_slots)
        # heads whose open snapshot is a drop record (see snapshot): the
        # only change they may take until it closes is that drop
        self._light = frozenset()

    def _map_ids(self):
        # ids of the examples held (erased slots hold none)
        self._slot_of = {i: s for s, i in enumerate(self._ids.tolist()) if self._given[s] >= 0}

    @classmethod
    def from_data(cls, data, *, kernel, gamma, degree, coef0, precompute, n_heads, labels, C,
                  ids, max_steps=0, n_jobs=None, cache_size=200.0):
        """A head set over the rows `data` (heads empty until :meth:`solve`)."""
        try:
            cache_size = float(cache_size)
        except (TypeError, ValueError):
            cache_size = float("nan")
        if not 0.0 <= cache_size < float("inf"):
            raise InvalidInputError(f"cache_size must be a number of MB >= 0, got {cache_size!r}")
        store = _cp_core.KernelStore(
            0 if kernel == "precomputed" else data.shape[1],
            kernel, gamma, int(degree), float(coef0), bool(precompute), cache_size)
        store.append(np.ascontiguousarray(data, dtype=np.float64))
        return cls(store, n_heads, labels, C, ids, max_steps=max_steps, n_jobs=n_jobs)

    @classmethod
    def from_state(cls, state, *, max_steps=0, n_jobs=None):
        """A head set holding `state` (an :class:`eco.state.ModelState`), bit for bit.

        The state holds the active examples only; they are put back at their
        slots (``state.slot_index``) among ``state.n_slots``, the other slots
        erased, so that every later update computes exactly as the saved model would.
        """
        p = state.params
        data, labels, C, ids, given, heads = laid_out(state)
        hs = cls.from_data(data, kernel=p["kernel"], gamma=state.gamma_,
                           degree=p["degree"], coef0=p["coef0"], precompute=p["precompute"],
                           n_heads=state.n_heads, labels=labels, C=C, ids=ids.tolist(),
                           max_steps=max_steps, n_jobs=n_jobs,
                           cache_size=p.get("cache_size", 200.0))
        hs._given = given
        hs._n_given = int(state.n_given)
        for h, head in enumerate(heads):
            hs.restore_head(h, head)
        hs._map_ids()
        dead = np.flatnonzero(hs._given < 0).astype(np.intp)
        _cp_core.erase_slots(hs.store, hs._engines, dead, hs._given >= 0)
        # rebuilding the heads computed the kernel rows of every margin
        # vector: back to cache_size now, not inside the first request
        hs.store.trim()
        return hs

    def adopt_layout(self, given, n_given):
        """Take the slot layout of another head set over the same stored rows.

        `given` is that set's :attr:`slot_given` (``-1`` for an erased slot)
        and `n_given` its :attr:`n_given`: erased slots stay erased here (their
        rows, already zeros, and their placeholder ids are forgotten) and
        default ids and digests continue from the same positions. Used when a
        new head set replaces this one's twin (a gamma re-solve).
        """
        given = np.array(given, dtype=np.int64)
        if given.shape != (self.n_slots,):
            raise ValueError(f"given must have one entry per slot ({self.n_slots})")
        self._given = given
        self._n_given = int(n_given)
        self._map_ids()
        dead = np.flatnonzero(given < 0).astype(np.intp)
        _cp_core.erase_slots(self.store, self._engines, dead, given >= 0)

    def export_state(self):
        """The active examples and every head on them, as keyword arguments of ModelState.

        Copies: ``data`` (features, or the kernel block of the active
        examples), ``slot_labels``, ``slot_C``, ``slot_ids``, ``slot_index``
        (the slot of each), ``n_slots``, ``slot_given``, ``n_given`` and
        ``heads`` (:class:`eco.state.HeadState` over the active examples).
        """
        # public reads only: the Ray head set uses this method too
        active = self.active_slots()
        if self.kernel == "precomputed":
            data = self.kernel_block(active)[:, active]
        else:
            data = self.features_of(active)
        return dict(
            data=data, slot_labels=np.array(self.slot_labels[active], dtype=np.int64),
            slot_C=np.array(self.slot_C[active], dtype=np.float64),
            slot_ids=self.slot_ids[active], slot_index=active.astype(np.int64),
            n_slots=int(self.n_slots), slot_given=np.array(self.slot_given[active]),
            n_given=int(self.n_given),
            heads=[self.head_state(h).restricted(active) for h in range(self.n_heads)])

    # ------------------------------------------------------------ read

    @property
    def n_heads(self):
        return len(self._engines)

    @property
    def n_slots(self):
        return self.store.n_slots

    @property
    def n_active(self):
        return int(self._engines[0].n_active)

    def is_active(self, slot):
        return self._engines[0].set_of(slot) != _SET_INACTIVE

    def active_slots(self):
        """Slots of the active examples, in the order they were given (intp)."""
        return np.flatnonzero(self._engines[0].sets_all != _SET_INACTIVE).astype(np.intp)

    def _inactive(self, slots):
        # per slot of `slots`: not active (no O(n) array, unlike active_slots)
        first = self._engines[0]
        return np.array([first.set_of(s) == _SET_INACTIVE for s in slots.tolist()], dtype=bool)

    def head_labels(self, head):
        """Labels (+1/-1) of every stored slot for one head."""
        positive = 1 if len(self._engines) == 1 else head
        return np.where(self._labels == positive, 1.0, -1.0)

    @property
    def kernel(self):
        """The kernel's name ("precomputed": the stored rows are kernel rows)."""
        return self.store.kernel

    def engine(self, head):
        """The local engine of `head` (for the warm start and eco.testing; local backend only)."""
        return self._engines[head]

    def set_screening(self, flag):
        """Safe screening on the paths of every engine (``CPEngine.screening``)."""
        for e in self._engines:
            e.screening = bool(flag)

    def head_state(self, head):
        """Copy of one head's state, an :class:`eco.state.HeadState`."""
        return HeadState.from_engine_dict(self._engines[head].get_state())

    def primary_state(self, head):
        """Copy of one head's primary state (no gradients, no inverse margin matrix).

        What a digest reads, without copying the O(|S|^2) matrix; the same
        values, bit for bit, as those fields of :meth:`head_state`.
        """
        e = self._engines[head]
        return HeadState(y=e.y_all, C=e.C_all, alpha=e.alpha_all, g=None, sets=e.sets_all,
                         b=float(e.b), margin_order=e.margin_order, Rinv=None)

    @contextmanager
    def digest_states(self):
        """Every head's :meth:`primary_state`, for a digest; zeroed when the block ends.

        Nobody keeps these copies, and one taken before a removal (an
        audited decrement digests the model first) holds the removed rows'
        labels, bounds and coefficients.
        """
        states = [self.primary_state(h) for h in range(self.n_heads)]
        try:
            yield states
        finally:
            _zero_arrays(getattr(st, name) for st in states for name in HeadState.ARRAYS)

    def alphas(self):
        """alpha of every slot, shape (n_heads, n_slots)."""
        return np.stack([e.alpha_all for e in self._engines])

    def coefficients(self):
        """alpha_i y_i of every slot, shape (n_slots, n_heads)."""
        return np.stack([e.alpha_all * e.y_all for e in self._engines], axis=1)

    def biases(self):
        return np.array([e.b for e in self._engines])

    def sets(self, head):
        """Set code of every slot in `head`."""
        return self._engines[head].sets_all

    def decision_of(self, head, slot):
        """Decision value of `head` at a stored slot."""
        return self._engines[head].decision_of(int(slot))

    def violation(self, head):
        """KKT violation of `head`, recomputed from scratch."""
        try:
            return head_violation(self._engines[head])
        finally:
            self.store.trim()

    @property
    def n_steps(self):
        """Path steps taken by all heads so far."""
        return sum(e.n_steps for e in self._engines)

    @property
    def n_migrations(self):
        return sum(e.n_migrations for e in self._engines)

    # ----------------------------------------------------------- work

    def map_heads(self, fn, heads=None):
        """``[fn(h) for h in heads]`` over ``n_jobs`` threads (BLAS: :func:`blas_threads_for`).

        Workers run under the caller's interrupt guard; on any failure the
        heads not started are cancelled and every worker is joined before
        the exception propagates (a rollback never races a worker).
        """
        heads = list(range(len(self._engines)) if heads is None else heads)
        n_jobs = 1 if self.n_jobs is None else self.n_jobs
        if n_jobs < 0:
            n_jobs = os.cpu_count() or 1
        n_jobs = min(n_jobs, len(heads))
        n_margin = max((self._engines[h].n_margin for h in heads), default=0)

        def step(h):
            checkpoint()
            return fn(h)

        try:
            with one_blas_thread(blas_threads_for(self.n_slots, n_margin, n_jobs)):
                if n_jobs <= 1:
                    return [step(h) for h in heads]
                run = run_with_guard(current_guard(), step)
                pool = ThreadPoolExecutor(max_workers=n_jobs)
                try:
                    futures = [pool.submit(run, h) for h in heads]
                    return [f.result() for f in futures]
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            # between operations: no path holds a row, the cache can shrink
            self.store.trim()

    @contextmanager
    def transaction(self, removing=None):
        """All-or-nothing block: on any exception the head set is restored, then it propagates.

        Snapshots the number of stored rows, the slot tables and every head
        on entry (see :meth:`snapshot`, and `removing` there); on an
        exception (``BaseException`` too, e.g. ``KeyboardInterrupt``)
        truncates the store and puts every table and head back, bit for bit.
        SIGINT is deferred for the whole block (see
        :func:`eco._concurrency.interrupt_guard`), so no interrupt can land
        between the failure and the end of the rollback. On success the
        snapshot is zeroed (:func:`wipe_snapshot`).
        """
        with interrupt_guard() as guard:
            snapshot = self.open_snapshot(removing)
            try:
                yield self
                # last safe point: an interrupt that arrived during the
                # update undoes it rather than surfacing after the commit
                checkpoint()
            except BaseException:
                with guard.deferred():
                    self.restore(snapshot)
                    self.close_snapshot()
                raise
            self.close_snapshot()
            wipe_snapshot(snapshot)

    def snapshot(self, removing=None):
        """An opaque copy of the whole head set (rows stored, slot tables, every head).

        Each inverse margin matrix is copied as the upper triangle the engine
        keeps, packed (half the bytes of the matrix to copy, and to zero when
        the snapshot is dropped).

        `removing`: the slots that the update about to run unlearns, and all
        it does. In a head where that removal is a drop of reserve examples
        that moves nothing else (:meth:`eco._cp_core.CPEngine.drop_record`),
        the snapshot holds the drop's record instead of a copy of the head:
        a deletion request touches the few heads in which the row is a
        support vector, and copying (then zeroing) every head of a 100-class
        model cost two thirds of it. Such a snapshot must be opened
        (:meth:`open_snapshot`), so that those heads take that drop only.
        """
        if removing is None:
            heads = [e.get_state(rinv_order="packed") for e in self._engines]
        else:
            removing = np.asarray(removing, dtype=np.intp)
            heads = []
            for e in self._engines:
                record = e.drop_record(removing)
                heads.append(e.get_state(rinv_order="packed") if record is None else record)
        return (self.store.n_slots, self._labels, self._C, self._ids, dict(self._slot_of),
                self._given, self._n_given, heads)

    def open_snapshot(self, removing=None):
        """:meth:`snapshot`, and the heads it holds as drop records held to that drop."""
        snapshot = self.snapshot(removing)
        self._light = frozenset(h for h, st in enumerate(snapshot[-1]) if is_drop_record(st))
        return snapshot

    @property
    def drop_record_heads(self):
        """Heads the open snapshot keeps as drop records (sorted; empty when none is open)."""
        return sorted(self._light)

    def close_snapshot(self):
        """The update of :meth:`open_snapshot` is over (committed or rolled back)."""
        self._light = frozenset()

    def _refuse_light(self, what, head=None):
        # the rollback of a head kept as a drop record undoes that drop only:
        # `head` (or, with None, any head) may take no other change
        if (head in self._light) if head is not None else self._light:
            raise UnlearningError(
                f"{what} inside an update that only unlearns (heads {sorted(self._light)} "
                "are kept as drop records)")

    def restore(self, snapshot):
        """Put back a :meth:`snapshot` of this head set (not one :func:`wipe_snapshot` zeroed).

        Rows stored since are erased (a failed increment leaves no trace of
        its rows) and forgotten. Idempotent: when memory runs out half-way
        it is retried from the start (after a garbage collection), so it
        never leaves a mix of restored and updated heads behind.
        """
        n, labels, C, ids, slot_of, given, n_given, heads = snapshot
        added = np.arange(n, self.store.n_slots, dtype=np.intp)
        last = None
        for _ in range(3):
            try:
                for e in self._engines:
                    e.sync_capacity()  # the only allocation of the engines' restore
                self._labels, self._C, self._ids, self._slot_of = labels, C, ids, dict(slot_of)
                self._given, self._n_given = given, n_given
                if self.store.n_slots > n:
                    self.store.erase(added)
                self.store.truncate(n)
                for h, st in enumerate(heads):
                    if is_drop_record(st):
                        self._engines[h].undo_drop(st)
                    else:
                        self.restore_head(h, st)
                for e in self._engines:
                    e.erase(added)
                self.store.erase(added[:0], self._given >= 0)
                return
            except MemoryError as exc:
                last = exc
                gc.collect()
        raise UnlearningError(f"could not restore the model after a failed update: {last}")

    def solve(self, head, active, method="batch"):
        """Solve `head` exactly from scratch on the `active` slots ("batch" or "incremental")."""
        self._refuse_light(f"a solve of head {head}", head)
        solve_head(self, head, np.asarray(active, dtype=np.intp), method)

    def solve_all(self, active, method="batch"):
        """Solve every head from scratch on `active` (over threads)."""
        self.map_heads(lambda h: self.solve(h, active, method))

    def append(self, X, labels, C, ids):
        """Store new rows (inactive in every head); returns their slots.

        For a precomputed kernel, `X` has a column per example ever given
        plus the new ones; the columns of erased examples are not stored.
        """
        self._refuse_light("storing rows")
        if self.kernel == "precomputed":
            X = np.array(X, dtype=np.float64, order="C")
            X[:, :self.n_slots][:, self._given < 0] = 0.0
        slots = self.store.append(X)
        m = len(slots)
        self._labels = np.concatenate([self._labels, np.asarray(labels, dtype=np.int64)])
        self._C = np.concatenate([self._C, np.asarray(C, dtype=np.float64)])
        self._ids = _concat_ids(self._ids, id_array(list(ids)))
        self._given = np.concatenate([self._given, self._n_given + np.arange(m, dtype=np.int64)])
        self._n_given += m
        for s, i in zip(slots, ids):
            self._slot_of[i] = int(s)
        return np.asarray(slots, dtype=np.intp)

    # --------------------------------------------------------- erasure

    def erase(self, slots):
        """Erase removed examples: nothing of `slots` (inactive in every head) remains.

        Overwrites their stored rows, cached kernel values (their own rows,
        their entries in every other row and in the heads' packed margin
        rows), labels, bounds, coefficients and gradients with zeros, their
        ids with a placeholder (0, or None in an object array), and forgets
        the ids. Then compacts when erased slots exceed
        ``max(COMPACT_MIN, COMPACT_FRACTION * n_slots)`` (amortised: each
        compaction follows at least as many erasures as slots it keeps).
        Nothing the heads compute with changes: decisions and later updates
        are bit for bit the same.
        """
        slots = self.slots_to_erase(slots)
        self._forget_slots(slots)
        # the slots left holding an example are the active ones
        _cp_core.erase_slots(self.store, self._engines, slots)
        if self.compaction_due():
            self.compact()

    def remove(self, slots, batch=True, reserve_only=False):
        """Unlearn active `slots` from every head, commit, and erase them: one request.

        The whole of a removal that moves no hyper-parameter (the caller
        checked that). On the Ray backend it is one round trip to the actors
        (:meth:`eco._ray_backend.RayHeadSet.remove`); here it is the
        transaction of :meth:`unlearn`, then :meth:`erase`.

        Parameters
        ----------
        slots : ndarray of intp
            Active slots.
        batch : bool, default=True
            One path for all of them, or one after the other.
        reserve_only : bool, default=False
            Every slot has alpha = 0 in every head (the caller read
            :meth:`reserve_mask`): they are dropped without a snapshot.

        Returns
        -------
        tuple of int
            The heads that were re-solved from scratch.

        Raises
        ------
        ErasureIncomplete
            The removal is committed but erasing the rows failed.
        Exception
            Anything else: nothing changed.
        """
        slots = np.asarray(slots, dtype=np.intp)
        resolved = ()
        if reserve_only:
            self._drop_reserve_completed(slots)
        else:
            # the heads where this is a reserve drop are snapshotted as its record
            with self.transaction(removing=slots):
                resolved = self.unlearn(slots, batch)
        erase_committed(self, slots)
        return resolved

    def _drop_reserve_completed(self, slots):
        """Reserve slots dropped without a snapshot: all or nothing all the same.

        The compiled drop updates every head or none. An error that arrives
        when it is done (a failure of its final bookkeeping, or any error
        after it returned) cannot mean "unchanged", so the drop is completed
        instead: every head is re-solved exactly on the rows left (a reserve
        drop changes no coefficient).
        """
        try:
            self.drop_reserve(slots)
        except Exception:
            if any(self.is_active(int(s)) for s in slots):
                raise  # nothing was dropped: unchanged
            with self.transaction():
                self.solve_all(self.active_slots(), "batch")

    def compact(self):
        """Renumber the slots without the erased ones (their order kept); frees their memory.

        Decision values, the state digest and every sum over slots are
        unchanged (the kept slots stay in the same order). Not done for a
        precomputed kernel (its columns are numbered by the position given).
        """
        if self.kernel == "precomputed":
            return
        keep = np.flatnonzero(self._given >= 0).astype(np.intp)
        _cp_core.compact_slots(self.store, self._engines, keep)
        self._labels = self._labels[keep]
        self._C = self._C[keep]
        self._ids = self._ids[keep]
        self._given = self._given[keep]
        self._map_ids()

    def learn_head(self, head, slots):
        """Learn `slots` in `head` one by one; re-solves the head when a path cannot finish.

        Returns True when the head was re-solved.
        """
        self._refuse_light(f"learning in head {head}", head)
        engine = self._engines[head]
        y_h = self.head_labels(head)
        for s in slots:
            checkpoint()
            try:
                engine.learn(int(s), y_h[s], self._C[s])
            except EngineError:
                # the path could not finish: re-solve this head exactly
                target = np.union1d(np.flatnonzero(engine.sets_all != _SET_INACTIVE), slots)
                self.solve(head, target.astype(np.intp), "batch")
                return True
        return False

    def learn(self, slots):
        """Learn stored, inactive `slots` in every head; returns the re-solved heads."""
        done = self.map_heads(lambda h: self.learn_head(h, slots))
        return tuple(h for h, r in enumerate(done) if r)

    def unlearn_head(self, head, slots, batch=True):
        """Unlearn active `slots` from `head` (one path, or one after the other).

        Re-solves the head from scratch when a path cannot finish; returns
        True when it did.
        """
        e = self._engines[head]
        if head in self._light:
            # a drop of reserve examples (the open snapshot holds its record,
            # not the head): no re-solve may stand in for it; an error rolls
            # the whole update back
            _cp_core.drop_reserve([e], np.asarray(slots, dtype=np.intp))
            return False
        try:
            if batch:
                e.unlearn(slots)
            else:
                for k in range(len(slots)):
                    checkpoint()
                    e.unlearn(slots[k:k + 1])
        except EngineError:
            # the path could not finish: re-solve this head exactly on the
            # examples active before the call but `slots` (a path never
            # activates an example, so those are the active ones now but `slots`)
            remaining = np.setdiff1d(np.flatnonzero(e.sets_all != _SET_INACTIVE), slots)
            self.solve(head, remaining.astype(np.intp), "batch")
            return True
        return False

    def unlearn(self, slots, batch=True):
        """Unlearn active `slots` from every head; returns the re-solved heads."""
        done = self.map_heads(lambda h: self.unlearn_head(h, slots, batch))
        return tuple(h for h, r in enumerate(done) if r)

    def all_reserve(self, slots):
        """True when every slot has alpha = 0 in every head."""
        return bool(_cp_core.all_reserve(self._engines, slots))

    def reserve_mask(self, slots):
        """Per slot: alpha = 0 in every head."""
        return _cp_core.reserve_mask(self._engines, np.asarray(slots, dtype=np.intp))

    def drop_reserve(self, slots):
        """Remove slots with alpha = 0 in every head, in one uninterruptible call."""
        _cp_core.drop_reserve(self._engines, slots)

    def move_bounds(self, C):
        """Move every head's box bounds to `C` along the exact path in C (over threads).

        Returns the heads whose path could not finish; the caller re-solves
        them (their state is then partial). The slot table takes `C` either way.
        """
        self._refuse_light("moving the bounds")
        C = np.array(C, dtype=np.float64)

        def move(h):
            try:
                self._engines[h].move_bounds(C)
            except EngineError:
                return False
            return True

        done = self.map_heads(move)
        self._C = C
        return tuple(h for h, ok in enumerate(done) if not ok)

    def restore_head(self, head, state):
        """Install a :class:`eco.state.HeadState` (or engine dict) in `head`, bit for bit.

        Raises UnlearningError when the engine refuses the state.
        """
        engine = self._engines[head]
        try:
            if isinstance(state, HeadState) and not state.has_derived:
                install_primary(engine, state)  # read from a file: recompute g and Rinv
                return
            if isinstance(state, HeadState):
                state = state.to_engine_dict()
            engine.restore(state)
        except EngineError as exc:
            raise UnlearningError(f"head {head}: {exc}") from exc
