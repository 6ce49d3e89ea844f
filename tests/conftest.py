"""Fixtures of the CPSVM test suite (helpers live in ``exact_helpers.py``)."""

import signal

import numpy as np
import pytest

from eco.datasets import load_digits


@pytest.fixture(scope="session", autouse=True)
def sigint_raises_keyboard_interrupt():
    """SIGINT raises KeyboardInterrupt in this process, as in a terminal.

    The interrupt tests send SIGINT to the test process. A shell starts a
    background job (``make test &``, nohup) with SIGINT ignored, and Python
    keeps an inherited "ignore": then no interrupt arrives, and those tests
    fail for the environment's sake (13 of them did, in a nohup run).
    """
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if previous is signal.SIG_IGN:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def digits():
    """The embedded digits scaled to [0, 1]: X (1797, 64) and y (0..9), read-only."""
    X, y = load_digits()
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


@pytest.fixture
def rng():
    """A seeded generator, fresh for every test."""
    return np.random.default_rng(12345)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a test that passed but met an unusable reference solution.

    ``exact_helpers.assert_exact`` records, instead of raising at once, the
    steps at which :func:`eco.reference.reference_solve` could not produce a
    polished solution, so that the rest of the test still checks the model.
    """
    import exact_helpers

    exact_helpers.DEFERRED_REFERENCE_FAILURES.clear()
    result = yield
    failures = list(exact_helpers.DEFERRED_REFERENCE_FAILURES)
    exact_helpers.DEFERRED_REFERENCE_FAILURES.clear()
    if failures:
        raise exact_helpers.ReferenceNotExact(
            f"{len(failures)} exactness check(s) could not compare with the polished "
            f"reference (the model passed its KKT certificate and the SVC comparison "
            f"there); first: {failures[0]}")
    return result
