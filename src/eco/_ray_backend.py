"""The Ray backend: the heads of one model held by Ray actors, behind HeadSet's interface.

:class:`RayHeadSet` stands in for :class:`eco._headset.HeadSet` when
``CPSVM(backend="ray")``. The driver keeps the slot tables, the active mask
and a copy of the stored rows (for ``decision_function`` and the audits);
the heads live in actors, several heads per actor, each actor a local
:class:`~eco._headset.HeadSet` of its heads over its own kernel store. The
rows go once into Ray's object store (``ray.put``) and every actor fetches
them from there.

Every mutation is a two-phase transaction across the actors: each actor
snapshots its heads and applies the request (prepare), and reports; the
driver commits when every actor succeeded, else tells every actor to roll
back. The commit point is the driver appending the request to its redo log.
SIGINT is deferred for the whole transaction (:mod:`eco._concurrency`): an
interrupt stops it at a safe point and it is rolled back; the begin, the
commit and the rollback run with further interrupts deferred, and an actor
that cannot roll back is replaced at the committed state.

Faults: an actor that dies (``ray.kill``, out of memory, node lost) is
replaced by a new one restored from the last checkpoint of its heads
(eco's own file format, :func:`eco.persistence.state_to_bytes`, no pickle;
built in memory by the actor, held by the driver) and the redo log since, which
reproduces the last committed state exactly (the checkpoint holds the
primary state bit for bit; gradients and the inverse margin matrix are
recomputed from it, as at any load, so later states may differ from an
actor that never died in the last bits). A request in flight is then replayed on the new actor and
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
from ._headset import COMPACT_FRACTION, COMPACT_MIN, HeadSet, SlotTables, id_array, laid_out
from .exceptions import UnlearningError
from .persistence import state_from_bytes, state_to_bytes
from .state import HeadState, ModelState

__all__ = ["RayHeadSet"]

# A checkpoint of every actor is taken after this many committed requests
# since the last one (the redo log replays at most this many on a revival).
_CHECKPOINT_EVERY = 32
# Deaths of actors tolerated within one request before it is given up.
_MAX_REVIVALS = 3
# Requests whose replay costs about a fit: checkpoint right after them.
_HEAVY_OPS = ("solve_all", "solve", "restore_head")


def _ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ImportError('backend="ray" needs Ray: pip install "eco[ray]"') from exc
    return ray


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
    checkpoint : list of bytes or None
        One eco state file per head (:meth:`checkpoint`), or empty heads.
    """

    def __init__(self, spec, heads, chunks, labels, C, ids, given=None, n_given=None,
                 checkpoint=None):
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
            self._set_given(np.asarray(given, dtype=np.int64), int(n_given))
        self._snapshot = None
        self._begin_s = 0.0   # time of the last begin, reported with the next apply
        if checkpoint is not None:
            self._restore_checkpoint(checkpoint)

    def _set_given(self, given, n_given):
        """Mark erased slots as the driver has them (heads empty), via HeadSet.adopt_layout.

        The local head set then erases and compacts exactly when the
        driver's tables and every other actor's do.
        """
        self.set.adopt_layout(given, n_given)

    def adopt_layout(self, given, n_given):
        """The driver's :meth:`RayHeadSet.adopt_layout` on this actor's head set."""
        self._set_given(np.asarray(given, dtype=np.int64), int(n_given))

    # ------------------------------------------------------- two phases

    def begin(self):
        """Snapshot every head here (phase one starts)."""
        t0 = time.perf_counter()
        self._snapshot = None  # a begin that fails leaves no transaction open
        self._snapshot = self.set.snapshot()
        self._begin_s = time.perf_counter() - t0

    def commit(self):
        self._snapshot = None

    def rollback(self):
        """Back to the snapshot of :meth:`begin` (idempotent: a second call does nothing)."""
        if self._snapshot is not None:
            self.set.restore(self._snapshot)
            self._snapshot = None

    def apply(self, op):
        """Run one request on the heads here, inside a transaction (after :meth:`begin`).

        Returns (result, path steps, migrations, seconds of work here: the
        request and the snapshot of the begin before it).
        """
        if self._snapshot is None:
            # begin failed (out of memory): nothing could be rolled back
            raise UnlearningError(f"heads {self.heads}: no transaction is open (its snapshot "
                                  "could not be taken); the request was not applied")
        t0 = time.perf_counter()
        steps0, migr0 = self.set.n_steps, self.set.n_migrations
        result = self._dispatch(op)
        work = time.perf_counter() - t0 + self._begin_s
        self._begin_s = 0.0
        return result, self.set.n_steps - steps0, self.set.n_migrations - migr0, work

    def erase_checkpoint(self, slots):
        """Erase `slots` here, then checkpoint every head (one round trip for both).

        Returns (slots held afterwards, :meth:`checkpoint`'s files, seconds
        erasing, seconds checkpointing).
        """
        t0 = time.perf_counter()
        self.set.erase(np.asarray(slots, dtype=np.intp))
        t1 = time.perf_counter()
        files = self.checkpoint()
        return self.set.n_slots, files, t1 - t0, time.perf_counter() - t1

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

    def replay(self, ops):
        """Apply logged requests in order ("begin" opens a transaction)."""
        for op in ops:
            if op[0] == "begin":
                self.begin()
            else:
                self._dispatch(op)

    def _dispatch(self, op):
        name, args = op[0], op[1:]
        s = self.set
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
        if name == "erase":  # logged by an erase (replayed on a revival)
            s.erase(*args)
            return s.n_slots
        # one head: args[0] is the model's head index
        return getattr(s, name)(self._local[args[0]], *args[1:])

    def _rows(self, rows):
        return rows

    # ------------------------------------------------------------ reads

    def read(self, what, *args):
        """A read of every head here, as a dict head -> value (or one value for "reserve")."""
        s = self.set
        if what == "reserve":
            return s.reserve_mask(*args)
        if what == "decision":
            head, slot = args
            return s.decision_of(self._local[head], slot)
        if what == "alpha":
            return dict(zip(self.heads, s.alphas()))
        if what == "coef":
            return dict(zip(self.heads, s.coefficients().T))
        if what == "b":
            return dict(zip(self.heads, s.biases()))
        fn = {"sets": lambda j: s.sets(j).copy(), "state": s.head_state,
              "violation": s.violation}[what]
        return {h: fn(j) for j, h in enumerate(self.heads)}

    def local_arrays(self):
        """Every array this actor holds of the model (test hook: erasure is searched in them).

        The stored rows (features and kernel rows, cache included), the slot
        tables, and every engine's state arrays.
        """
        s = self.set
        every = np.arange(s.n_slots, dtype=np.intp)
        out = [s.stored_data(), s.kernel_block(every), s.slot_ids, s.slot_labels, s.slot_C,
               s.slot_given, s.alphas(), s.coefficients()]
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

    # ----------------------------------------------------- checkpoints

    def checkpoint(self):
        """Every head here as one eco state file each (uint8 arrays of the file's bytes, built in
        memory; no pickle, no rows)."""
        s = self.set
        n = s.n_slots
        act = s.active_slots()
        out = []
        for j, h in enumerate(self.heads):
            # a binary model of this head alone; the rows are not repeated
            # (the driver holds them): zero feature columns (a state holds
            # the active examples only, with their slots)
            state = ModelState(
                params={"eco_ray_checkpoint": 1, "head": h}, gamma_=float(self.spec["gamma"]),
                n_features_in_=0, classes_=np.array([0, 1]), class_weight_=np.ones(2),
                slot_labels=(s.head_labels(j)[act] > 0).astype(np.int64),
                slot_C=np.array(s.slot_C[act], dtype=np.float64), slot_ids=s.slot_ids[act],
                data=np.zeros((len(act), 0)), heads=[s.head_state(j).restricted(act)],
                slot_index=act.astype(np.int64), n_slots=n,
                slot_given=act.astype(np.int64), n_given=n)
            # uint8 arrays, not bytes: Ray hands them to the driver without a copy
            out.append(np.frombuffer(state_to_bytes(state), dtype=np.uint8))
        return out

    def _restore_checkpoint(self, files):
        n = self.set.n_slots
        for j, (h, blob) in enumerate(zip(self.heads, files)):
            state = state_from_bytes(np.asarray(blob).tobytes(), f"checkpoint of head {h}")
            if state.params.get("head") != h or state.n_slots != n:
                raise UnlearningError(f"checkpoint of head {h} does not match the actor")
            self.set.restore_head(j, state.heads[0].expanded(state.slot_index, n))

    # ------------------------------------------------------------ tests

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
                 checkpoint=None):
        super().__init__(spec, heads, _ray().get(list(chunks)), labels, C, ids, given, n_given,
                         checkpoint)

    def _rows(self, rows):
        return _ray().get(rows[0])



_ACTOR = None


def _actor_class():
    global _ACTOR
    if _ACTOR is None:
        # No CPU reserved: the actors of several models share the cluster
        # (a reservation would leave a new model's actors pending forever once
        # the CPUs are taken); n_jobs sizes them and SPREAD places them.
        # max_restarts=0: a dead actor is revived by the driver, from a
        # checkpoint and the redo log, not re-run by Ray from its arguments.
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
    """

    def __init__(self, spec, data, labels, C, ids, *, n_jobs=None, given=None, n_given=None):
        ray = _connect()
        self.spec = dict(spec)
        self.n_jobs = n_jobs
        n_features = 0 if spec["kernel"] == "precomputed" else data.shape[1]
        # the driver's copy of the rows (decision_function, audits): no kernel cache
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
        # rows in the object store, one chunk per fit/increment: (ref, n_rows)
        self._chunks = [(ray.put(data), len(data))]
        self._lock = threading.RLock()
        self._txn = None
        self._txn_heavy = False
        self._log = []                        # committed requests since the checkpoint
        # (per actor: its heads' state files, bytes held here; rows; n_given) of the checkpoint
        self._ckpt = (None, len(data), self._n_given)
        self._cache = {}
        self._counts = [0, 0]                 # path steps, migrations
        self.n_revivals = 0
        self.work_s = 0.0
        self.checkpoint_s = 0.0
        n_heads = int(spec["n_heads"])
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_actors = cpus if n_jobs is None or n_jobs < 0 else int(n_jobs)
        n_actors = max(1, min(n_actors, n_heads))
        # round robin: the heads of neighbouring classes on different actors
        self.groups = [list(range(a, n_heads, n_actors)) for a in range(n_actors)]
        self._owner = {h: a for a, g in enumerate(self.groups) for h in g}
        self.actors = [self._new_actor(a) for a in range(n_actors)]

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
        every actor (a revived actor gets the layout from the driver's tables).
        """
        given = np.array(given, dtype=np.int64)
        if given.shape != (self.n_slots,):
            raise ValueError(f"given must have one entry per slot ({self.n_slots})")
        self._given, self._n_given = given, int(n_given)
        self._map_ids()
        self.store.erase(np.flatnonzero(given < 0).astype(np.intp), given >= 0)
        self._ckpt = (self._ckpt[0], self._ckpt[1], self._n_given)
        self._call(range(len(self.actors)), "adopt_layout", given, self._n_given)

    def _map_ids(self):
        # ids of the examples held (erased slots hold none)
        self._slot_of = {i: s for s, i in enumerate(self._ids.tolist()) if self._given[s] >= 0}

    # ------------------------------------------------------------ actors

    def _new_actor(self, a, checkpoint=None, n_rows=None, n_given=None):
        """A new actor for group `a` over the first `n_rows` stored rows (default: all)."""
        n = self.store.n_slots if n_rows is None else n_rows
        n_given = self._n_given if n_given is None else n_given
        chunks, total = [], 0
        for ref, m in self._chunks:
            if total >= n:
                break
            chunks.append(self._put_base(m) if ref is None else ref)
            total += m
        return _actor_class().options(scheduling_strategy="SPREAD").remote(
            self.spec, self.groups[a], chunks, self._labels[:n], self._C[:n], self._ids[:n],
            self._given[:n], n_given, checkpoint)

    def _put_base(self, m):
        """Put the first `m` stored rows in the object store (the first chunk, after an erase).

        An erase drops every chunk of rows (they hold the removed ones)
        rather than putting the rows again; they are put from the driver's
        copy only when an actor has to be started over them.
        """
        every = np.arange(m, dtype=np.intp)
        rows = self.kernel_block(every)[:, :m] if self.kernel == "precomputed" \
            else self.features_of(every)
        ref = _ray().put(np.ascontiguousarray(rows))
        self._chunks[0] = (ref, m)
        return ref

    def _revive(self, a, dead_handle, pending=None):
        """Replace dead actor `a`: last checkpoint, redo log, then `pending` (an open request)."""
        ray = _ray()
        with self._lock:
            if self.actors[a] is not dead_handle:
                return  # another thread revived it already
            files, n_rows, n_given = self._ckpt
            ops = self._log + list(pending or [])
            ops = [op for target, op in ops if target is None or target == a]
            for _ in range(_MAX_REVIVALS):
                actor = self._new_actor(a, None if files is None else files[a], n_rows, n_given)
                try:
                    ray.get(actor.replay.remote(ops))
                except ray.exceptions.RayActorError:
                    continue  # the new actor died too (killed, or its node lost)
                except ray.exceptions.RayTaskError as exc:
                    raise UnlearningError(
                        f"ray backend: replaying the redo log on a restarted actor (heads "
                        f"{self.groups[a]}) failed: {exc.cause!r}") from exc
                self.actors[a] = actor
                self.n_revivals += 1
                return
            raise UnlearningError(
                f"ray backend: could not restart the actor holding heads {self.groups[a]} "
                f"from its checkpoint ({_MAX_REVIVALS} tries)")

    def _call(self, actors, method, *args):
        """``method(*args)`` on `actors`, reviving dead ones and calling them again.

        Returns {actor: result}. An exception raised by an actor propagates
        (as its own type) once every call has finished.
        """
        ray = _ray()
        results, todo = {}, list(actors)
        for attempt in range(_MAX_REVIVALS + 1):
            handles = {a: self.actors[a] for a in todo}
            refs = {a: getattr(h, method).remote(*args) for a, h in handles.items()}
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
                self._revive(a, handles[a], self._txn)
            todo = dead
        raise UnlearningError(
            f"ray backend: the actors holding heads {[self.groups[a] for a in dead]} died "
            f"{_MAX_REVIVALS + 1} times during one request; it was not completed")

    def _request(self, op, target=None):
        """Run a mutating request on every actor (or the owner `target`), within a transaction."""
        if self._txn is None:
            with self.transaction():
                return self._request(op, target)
        actors = range(len(self.actors)) if target is None else [target]
        _safe_point()  # an interrupt that arrived stops the request here (rolled back)
        got = self._call(actors, "apply", op)
        with self._lock:
            self._txn.append((target, op))
            self._txn_heavy = self._txn_heavy or op[0] in _HEAVY_OPS
            self._cache.clear()
            for _, steps, migrations, _ in got.values():
                self._counts[0] += steps
                self._counts[1] += migrations
            self.work_s += max(r[3] for r in got.values())
        return [got[a][0] for a in actors]

    # ------------------------------------------------------- transaction

    @contextmanager
    def transaction(self):
        """All-or-nothing block across the actors (two-phase; nested blocks join the outer one).

        Every actor snapshots its heads on entry; on an exception every actor
        rolls back (one that died, or whose rollback failed, is replaced by a
        new one at the last committed state) and the driver's tables are put
        back; on success the requests are logged (the commit point) and
        every actor commits. SIGINT is deferred for the whole block, as in
        :meth:`eco._headset.HeadSet.transaction`: an interrupt stops the
        request at the next safe point (before each request to the actors,
        and before the commit), and the begin, the commit and the rollback
        run with every further interrupt deferred.
        """
        if self._txn is not None:
            yield self
            return
        with interrupt_guard() as guard:
            with guard.deferred():
                saved = (self.store.n_slots, self._labels, self._C, self._ids,
                         dict(self._slot_of), self._active.copy(), list(self._chunks),
                         self._given, self._n_given)
                self._txn, self._txn_heavy = [(None, ("begin",))], False
                for actor in self.actors:
                    actor.begin.remote()  # ordered before this driver's next call to it
            try:
                yield self
                # last safe point: an interrupt that arrived during the
                # request undoes it rather than surfacing after the commit
                _safe_point()
            except BaseException:
                with guard.deferred():
                    self._txn = None
                    self._abort(saved)
                raise
            with guard.deferred():
                self._commit()

    def _commit(self):
        ops, self._txn = self._txn[1:], None
        self._log.extend(ops)  # the commit point
        for actor in self.actors:
            actor.commit.remote()
        if ops and (self._txn_heavy or len(self._log) >= _CHECKPOINT_EVERY):
            try:
                self.checkpoint()
            except Exception:  # the request is committed; the redo log still covers it
                pass

    def _abort(self, saved):
        """Put the driver's tables and every actor back at the committed state (idempotent).

        Cannot stop halfway: every actor is asked to roll back; one that
        died, or whose rollback raised, is killed and replaced by a new one
        started from the checkpoint and the redo log (the committed state).
        """
        ray = _ray()
        n, self._labels, self._C, self._ids, self._slot_of, self._active, self._chunks, \
            self._given, self._n_given = saved
        self._cache.clear()
        # rows of a failed increment leave no trace in the driver's store either
        self.store.erase(np.arange(n, self.store.n_slots, dtype=np.intp))
        self.store.truncate(n)
        handles = list(self.actors)
        refs = [h.rollback.remote() for h in handles]
        failed = []
        for a, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception:  # dead, or its rollback failed: its state is unknown
                failed.append(a)
        error = None
        for a in failed:  # every one of them, even when one cannot be restarted
            try:
                ray.kill(handles[a], no_restart=True)
            except Exception:  # already gone
                pass
            try:
                self._revive(a, handles[a])
            except UnlearningError as exc:
                error = error or exc
        if error is not None:
            raise error

    def checkpoint(self):
        """Checkpoint every head (eco state files, held by the driver); the redo log restarts."""
        if self._txn is not None:
            raise UnlearningError("checkpoint: a request is in progress (only committed "
                                  "states are checkpointed)")
        t0 = time.perf_counter()
        got = self._call(range(len(self.actors)), "checkpoint")
        self._ckpt = ([got[a] for a in range(len(self.actors))], self.store.n_slots,
                      self._n_given)
        self._log = []
        self.checkpoint_s += time.perf_counter() - t0

    # ------------------------------------------------------------ read

    def _read(self, what):
        """{head: value} of a per-head read, cached until the next mutation."""
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
        """Copy of one head's state, an :class:`eco.state.HeadState`."""
        return self._read("state")[head]

    def alphas(self):
        """alpha of every slot, shape (n_heads, n_slots)."""
        a = self._read("alpha")
        return np.stack([a[h] for h in range(self.n_heads)])

    def coefficients(self):
        """alpha_i y_i of every slot, shape (n_slots, n_heads)."""
        c = self._read("coef")
        return np.stack([c[h] for h in range(self.n_heads)], axis=1)

    def biases(self):
        b = self._read("b")
        return np.array([b[h] for h in range(self.n_heads)])

    def sets(self, head):
        """Set code of every slot in `head`."""
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
        self._request(("solve", head, np.asarray(active, dtype=np.intp), method),
                      self._owner[head])

    def solve_all(self, active, method="batch"):
        """Solve every head from scratch on `active` (every actor in parallel)."""
        active = np.asarray(active, dtype=np.intp)
        with self.transaction():
            self._request(("solve_all", active, method))
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
            slots = np.asarray(self.store.append(X), dtype=np.intp)
            self._chunks.append((ref, len(X)))
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
            done = self._request((name, slots) + args)
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
        return self._request(("learn_head", head, slots), self._owner[head])[0]

    def unlearn_head(self, head, slots, batch=True):
        """Unlearn active `slots` from `head`; True when the head was re-solved."""
        slots = np.asarray(slots, dtype=np.intp)
        return self._request(("unlearn_head", head, slots, bool(batch)), self._owner[head])[0]

    def all_reserve(self, slots):
        """True when every slot has alpha = 0 in every head."""
        return bool(np.all(self.reserve_mask(slots)))

    def reserve_mask(self, slots):
        """Per slot: alpha = 0 in every head."""
        slots = np.asarray(slots, dtype=np.intp)
        key = ("reserve", slots.tobytes())
        if key not in self._cache:
            got = self._call(range(len(self.actors)), "read", "reserve", slots)
            self._cache[key] = np.all([got[a] for a in got], axis=0)
        return self._cache[key]

    def drop_reserve(self, slots):
        """Remove slots with alpha = 0 in every head, on every actor (all or nothing)."""
        slots = np.asarray(slots, dtype=np.intp)
        with self.transaction():
            self._request(("drop_reserve", slots))
            self._active[slots] = False

    # --------------------------------------------------------- erasure

    def erase(self, slots):
        """Erase removed examples everywhere: actors, driver, object store (HeadSet.erase's rule).

        One round trip: every actor erases `slots` (and any held inactive
        slot) in its local head set, compacting when HeadSet does, and
        returns a checkpoint of its heads taken right after. The driver then
        erases its tables and store alike, keeps the new checkpoints and
        drops the old ones, the redo log and every chunk of rows in the
        object store (which hold the removed rows, their ids and
        coefficients; Ray frees them). The rows are put again, from the
        driver's copy, only if an actor has to be restarted. An actor that
        dies during the erase is revived at the committed state before it
        and erases again.
        """
        held = self._given >= 0
        held[self._active] = False
        slots = np.union1d(np.asarray(slots, dtype=np.intp), np.flatnonzero(held)).astype(np.intp)
        if self._txn is not None:
            raise UnlearningError("erase: a request is in progress")
        everyone = range(len(self.actors))
        got = self._call(everyone, "erase_checkpoint", slots)
        with self._lock:
            self._cache.clear()
            self._erase_tables(slots)
            n = self.store.n_slots
            if any(r[0] != n for r in got.values()):
                raise UnlearningError(f"erase: actors hold {sorted({r[0] for r in got.values()})} "
                                      f"slots, the driver {n}")
            self._chunks = [(None, n)]
            self._ckpt = ([got[a][1] for a in everyone], n, self._n_given)
            self._log = []
            self.work_s += max(r[2] for r in got.values())
            self.checkpoint_s += max(r[3] for r in got.values())

    def _erase_tables(self, slots):
        """The driver's part of :meth:`erase` (HeadSet.erase and HeadSet.compact on the tables)."""
        self._forget_slots(slots)
        self.store.erase(slots, self._given >= 0)
        n_erased = int(np.count_nonzero(self._given < 0))
        if self.kernel != "precomputed" \
                and n_erased > max(COMPACT_MIN, COMPACT_FRACTION * self.n_slots):
            keep = np.flatnonzero(self._given >= 0).astype(np.intp)
            _cp_core.compact_slots(self.store, [], keep)
            self._labels, self._C = self._labels[keep], self._C[keep]
            self._ids, self._given = self._ids[keep], self._given[keep]
            self._active = self._active[keep]
            self._map_ids()

    def held_objects(self):
        """Every object this head set keeps in Ray's object store (row chunks)."""
        return [ref for ref, _ in self._chunks if ref is not None]

    def checkpoint_files(self):
        """The bytes of every head's last checkpoint (test hook: erasure is searched in them)."""
        return [bytes(blob) for files in (self._ckpt[0] or []) for blob in files]

    def loo_decision(self, active):
        """Exact leave-one-out decisions of the `active` slots, shape (len(active), n_heads).

        One call per actor for the whole batch (:meth:`HeadGroup.loo`); the
        heads are restored on the actors, so nothing is committed or logged.
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
