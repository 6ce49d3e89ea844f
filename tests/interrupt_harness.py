"""SIGINTs sent at a running update, none of them escaping into the test runner.

Shared by ``tests/test_interrupts.py`` and ``tests/test_ray_interrupts.py``.

Why the harness is built the way it is. Python runs a signal's handler in
the main thread at its next *check point* (the start of a Python function,
a backward jump, the return of some C calls), and the main thread lets
another thread take the GIL only at such a point. So:

- The sender tests its flag and sends with no check point in between: the
  main thread cannot run while it does, and once the main thread has
  cleared the flag, nothing more is sent.
- The main thread clears the flag with a plain store (no check point
  either) right after the update has returned or raised. The signal sent
  before that and not taken yet (Python keeps at most one per signal
  number) raises at the next check point, which is still inside a ``try``.

An earlier harness cleared its flag in a method call: the call's own start
was a check point outside every ``try``, the sender (which had been waiting
for the GIL) sent its next signal exactly there, and the KeyboardInterrupt
stopped pytest (the CI run of the previous stop, on c305d8d).

The garbage collector is off while signals can come. Once a hypothesis test
has run, hypothesis keeps a Python callback in ``gc.callbacks``; a
collection during the burst runs it, a signal taken inside it raises there,
where nothing can catch it, and pytest's hook for such "unraisable"
exceptions was itself interrupted while formatting it (a full-suite run
failed that way on test_interrupts_leave_old_or_new[increment-3-None]).
"""

import gc
import os
import signal
import threading
import time

__all__ = ["InterruptSender", "run_interrupted"]

_SPACING_S = 0.0005  # between two signals of a burst
_SETTLE_S = 0.05  # for a signal the kernel gave another thread to be taken


class InterruptSender:
    """A thread that sends `count` SIGINTs to this process, 0.5 ms apart, after `delay`.

    It sends only while ``sending`` is true. Clear that attribute with a
    plain store (``sender.sending = False``), not through a method: a
    method's call is itself a point where an interrupt can be raised.
    """

    def __init__(self, delay, count):
        self.sending = True
        self.thread = threading.Thread(target=self._send, args=(delay, count), daemon=True)

    def _send(self, delay, count):
        pid, sigint = os.getpid(), signal.SIGINT  # no call between the test and the send
        time.sleep(delay)
        for _ in range(count):
            # the test and the send, with no check point between them (the
            # return of a call, os.getpid() included, is one: this thread could
            # hand the GIL to the main thread there)
            if not self.sending:
                return
            os.kill(pid, sigint)
            time.sleep(_SPACING_S)

    def settle(self):
        """Wait for the sender to end and for what it sent to be taken.

        Raises KeyboardInterrupt for a signal sent before ``sending`` was
        cleared and not taken yet; call it again afterwards.
        """
        self.thread.join()
        # a signal the kernel gave another thread reaches this one at a check
        # point: spin (backward jumps) rather than sleep
        end = time.perf_counter() + _SETTLE_S
        while time.perf_counter() < end:
            pass


def run_interrupted(call, delay, count, catch=()):
    """Run ``call()`` while `count` SIGINTs are sent, the first after `delay` seconds.

    Parameters
    ----------
    call : callable
        The update, without arguments.
    delay : float
        Seconds from the start of ``call`` to the first signal.
    count : int
        Signals in the burst (0.5 ms apart).
    catch : tuple of exception types
        Exceptions besides KeyboardInterrupt that ``call`` may end with.

    Returns
    -------
    BaseException or None
        What ``call`` raised (KeyboardInterrupt or one of `catch`); None
        when it returned. An interrupt taken after ``call`` returned does
        not count: the update had completed.
    """
    caught = (KeyboardInterrupt, *catch)
    sender = InterruptSender(delay, count)
    error = None
    collecting = gc.isenabled()
    gc.disable()  # no gc callback runs while a signal can come (module docstring)
    try:
        try:
            try:
                sender.thread.start()
                call()
            except caught as exc:
                error = exc
            finally:
                # no signal is sent after this store (on any other exception
                # too, which then fails the test rather than pytest's session)
                sender.sending = False
            sender.settle()
        except KeyboardInterrupt:
            # the one signal sent before the store and not taken then; there is
            # no other (Python keeps one per signal number, and no more are sent)
            sender.settle()
    finally:
        if collecting:
            gc.enable()
    return error
