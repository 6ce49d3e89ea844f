"""A readers-writer lock for :class:`eco.nn.ECO`.

Mutations (``fit``, ``increment``, ``unlearn``) hold the lock exclusively and
so serialize; reads (``transform``, ``decision_function``, ``predict``,
``score``, ``save``) share it, run concurrently with each other and never see
a half-applied update. Waiting writers go first, so a steady stream of reads
cannot starve a deletion request.

Re-entry: a thread that holds the write lock may take it again or read; a
thread that holds a read lock may read again (it does not wait behind a
waiting writer, which would deadlock). A reader that asks to write gets a
``RuntimeError`` rather than a deadlock.

Lock order in eco.nn: the ECO lock first, then Phi's lock (Phi's modes and
device are flipped while it runs, so its forward passes serialize), then the
head's own lock, taken by the head's methods. Nothing takes them in another
order, so they cannot deadlock with each other.
"""

import threading
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Shared reads, exclusive writes, writers preferred, re-entrant per thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = None
        self._writer_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()

    def _read_depth(self):
        return getattr(self._local, "depth", 0)

    @contextmanager
    def read(self):
        """Hold the lock shared for the ``with`` block."""
        me = threading.get_ident()
        with self._condition:
            if self._writer == me:
                self._writer_depth += 1
                nested_in_write = True
            else:
                nested_in_write = False
                if self._read_depth() == 0:
                    while self._writer is not None or self._waiting_writers:
                        self._condition.wait()
                    self._readers += 1
                self._local.depth = self._read_depth() + 1
        try:
            yield
        finally:
            with self._condition:
                if nested_in_write:
                    self._writer_depth -= 1
                else:
                    self._local.depth -= 1
                    if self._local.depth == 0:
                        self._readers -= 1
                        if self._readers == 0:
                            self._condition.notify_all()

    @contextmanager
    def write(self):
        """Hold the lock exclusively for the ``with`` block."""
        me = threading.get_ident()
        with self._condition:
            if self._writer == me:
                self._writer_depth += 1
            else:
                if self._read_depth():
                    raise RuntimeError(
                        "an ECO read (transform, predict, score, save) cannot start a mutation; "
                        "this would deadlock"
                    )
                self._waiting_writers += 1
                try:
                    while self._writer is not None or self._readers:
                        self._condition.wait()
                finally:
                    self._waiting_writers -= 1
                    # readers held back by this writer may go if it gave up
                    self._condition.notify_all()
                self._writer = me
                self._writer_depth = 1
        try:
            yield
        finally:
            with self._condition:
                self._writer_depth -= 1
                if self._writer_depth == 0:
                    self._writer = None
                    self._condition.notify_all()
