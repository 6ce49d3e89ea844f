"""Threads and interrupts: the model's readers-writer lock and the interrupt guard.

Two mechanisms make a model safe to share in a serving process:

- :class:`RWLock`, one per model (:func:`model_lock`): mutations (``fit``,
  ``increment``, ``decrement``, ``set_params``, ``loo_decision``) hold it
  exclusively; reads (predictions, certificates, digests, exports) share
  it. Re-entrant in the thread that holds it, so that a mutation may read
  the model (a receipt's digest) and a read may call other reads.
- :class:`InterruptGuard` (:func:`interrupt_guard`): while an update runs
  in the main thread, SIGINT is recorded instead of raising
  ``KeyboardInterrupt`` at an arbitrary bytecode. The update polls
  :func:`checkpoint` at safe points (between examples, between heads) and
  stops there with ``KeyboardInterrupt``; the rollback that follows, and a
  commit, run with every further SIGINT deferred. Once the guard ends, a
  deferred signal not yet acted on is delivered to the handler that was in
  place. An update is then all or nothing however many interrupts arrive.
  Every update (:func:`writes`) runs under one guard from start to end, so
  an interrupt after its last safe point is delivered once it is complete.
"""

import signal
import threading
# The C module behind ``signal``: ``signal.signal`` converts the handler it
# returns to an enum, through a caught ValueError when it is a function, which
# costs 15 us per call; a guard swaps the handler twice on every update.
import _signal
from contextlib import contextmanager
from functools import wraps

__all__ = ["RWLock", "model_lock", "reads", "writes", "interrupt_guard", "checkpoint",
           "current_guard", "run_with_guard"]

_LOCK_ATTR = "_eco_lock"


class RWLock:
    """A readers-writer lock, writer-preferring, re-entrant per thread.

    Readers share the lock; a writer holds it alone. A thread that holds
    the write lock may take it again or read; a thread that reads may read
    again (also while a writer waits: it already holds a share). A reader
    asking to write would wait for itself: that raises ``RuntimeError``.
    """

    def __init__(self):
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()

    def _read_depth(self):
        return getattr(self._local, "depth", 0)

    # The counters change inside ``with self._cond`` and the flag that says
    # "this thread holds a share" is set by the very next statement (no call
    # or backward jump between them, so no signal handler can run between
    # them): a KeyboardInterrupt cannot leak a share of the lock.

    @contextmanager
    def reading(self):
        """Hold a shared (read) share of the lock in the block."""
        me = threading.get_ident()
        if self._writer == me or self._read_depth() > 0:
            # nested in this thread's own write or read: already safe
            self._local.depth = self._read_depth() + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        held = False
        try:
            with self._cond:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
                held = True
            self._local.depth = 1
            yield
        finally:
            if held:
                self._local.depth = 0
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def writing(self):
        """Hold the lock exclusively in the block."""
        me = threading.get_ident()
        if self._writer == me:
            self._write_depth += 1
            try:
                yield
            finally:
                self._write_depth -= 1
            return
        if self._read_depth() > 0:
            raise RuntimeError(
                "a model cannot be updated from inside one of its own reads (this would deadlock)")
        held = False
        try:
            with self._cond:
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                    # readers held back by this waiting writer may go on
                    # (if it gives up, interrupted while waiting)
                    self._cond.notify_all()
                self._writer = me
                held = True
                self._write_depth = 1
            yield
        finally:
            if held:
                with self._cond:
                    self._writer = None
                    self._write_depth = 0
                    self._cond.notify_all()


def model_lock(model):
    """The readers-writer lock of `model`, created on first use.

    It lives in the instance's ``__dict__`` (``dict.setdefault`` is atomic,
    so two threads asking at once get the same lock), is never pickled or
    copied (see :meth:`eco.CPSVM.__getstate__`), and survives ``fit``.
    """
    lock = model.__dict__.get(_LOCK_ATTR)
    if lock is None:
        lock = model.__dict__.setdefault(_LOCK_ATTR, RWLock())
    return lock


def reads(fn):
    """Decorator: run the method holding a read share of its model's lock."""
    @wraps(fn)
    def locked(self, *args, **kwargs):
        with model_lock(self).reading():
            return fn(self, *args, **kwargs)
    return locked


def writes(fn):
    """Decorator: run the method holding its model's lock exclusively, under one interrupt guard.

    The guard spans the whole call, not only the head set's transaction:
    an update commits in stages (the heads, then the estimator's resolved
    hyper-parameters, then the erasure of the removed rows), and a SIGINT
    that arrives after the transaction's last safe point must wait until
    every stage is done. It is then delivered as the call ends, the update
    complete. Taken once the lock is held: a Ctrl-C while waiting for the
    lock stops the wait, before anything changed.
    """
    @wraps(fn)
    def locked(self, *args, **kwargs):
        with model_lock(self).writing(), interrupt_guard():
            return fn(self, *args, **kwargs)
    return locked


# ---------------------------------------------------------------- interrupts

_state = threading.local()


def current_guard():
    """The :class:`InterruptGuard` the calling thread works under, or None."""
    return getattr(_state, "guard", None)


class InterruptGuard:
    """Records SIGINT during an update; see the module docstring.

    Attributes
    ----------
    pending : bool
        A SIGINT arrived and has not been delivered yet.
    critical : int
        Depth of critical sections (commit, rollback): a checkpoint does not
        raise inside one.
    """

    def __init__(self):
        self.pending = False
        self.acted = False
        self.critical = 0
        self.previous = None
        self.installed = False

    def _handler(self, signum, frame):
        self.pending = True

    def stop_requested(self):
        # stays true once set, so that every worker of the update stops
        return self.pending

    @contextmanager
    def deferred(self):
        """A critical section: checkpoints do not raise inside it."""
        self.critical += 1
        try:
            yield
        finally:
            self.critical -= 1


def _aborts_on_sigint(handler):
    # only Python's default handler means "raise KeyboardInterrupt"; a custom
    # handler gets the signal once the update has completed
    return handler is signal.default_int_handler


@contextmanager
def interrupt_guard():
    """Guard an update in the calling thread (nested guards share the outer one).

    In the main thread SIGINT is recorded for the duration; elsewhere a
    signal cannot land in this thread anyway (Python runs handlers in the
    main thread), so the guard only carries the checkpoints.
    """
    outer = current_guard()
    if outer is not None:
        yield outer
        return
    guard = InterruptGuard()
    if threading.current_thread() is threading.main_thread():
        try:
            guard.previous = _signal.signal(signal.SIGINT, guard._handler)
            guard.installed = True
        except (ValueError, TypeError):  # no signals here (embedded interpreter)
            guard.installed = False
    _state.guard = guard
    try:
        yield guard
    finally:
        _state.guard = None
        if guard.installed:
            _signal.signal(signal.SIGINT, guard.previous)
            if guard.pending and not guard.acted:
                # deliver the interrupt to the handler that was in place
                signal.raise_signal(signal.SIGINT)


def checkpoint():
    """Stop the update here with KeyboardInterrupt when an interrupt is pending.

    Called at points where stopping is safe (between examples, between
    heads): the transaction around the update then rolls it back.
    """
    guard = current_guard()
    if guard is None or guard.critical or not guard.stop_requested():
        return
    if not _aborts_on_sigint(guard.previous):
        return
    guard.acted = True
    raise KeyboardInterrupt


def run_with_guard(guard, fn):
    """``fn`` wrapped to run under `guard` in another thread (a worker of ``n_jobs``)."""
    def run(*args):
        _state.guard = guard
        try:
            return fn(*args)
        finally:
            _state.guard = None
    return run
