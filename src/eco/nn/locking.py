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

from eco._concurrency import RWLock

__all__ = ["ReadWriteLock"]


class ReadWriteLock(RWLock):
    """Shared reads, exclusive writes, writers preferred, re-entrant per thread.

    The readers-writer lock of the core (:class:`eco._concurrency.RWLock`,
    the one every :class:`eco.CPSVM` holds), with the names eco.nn uses.
    """

    def read(self):
        """Hold the lock shared for the ``with`` block."""
        return self.reading()

    def write(self):
        """Hold the lock exclusively for the ``with`` block."""
        return self.writing()
