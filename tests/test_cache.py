"""Bounded kernel-row cache: a tiny cache gives the same model, bit for bit, as a large one."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from eco import CPSVM
from eco.exceptions import InvalidInputError


def _digits(n=400):
    X, y = load_digits(return_X_y=True)
    return X[:n] / 16.0, y[:n] % 3


def _rows_held(model):
    return model.head_set_.store.n_cached_rows


def _rows_allowed(model):
    return model.head_set_.store.cache_rows


@pytest.mark.parametrize("kernel", ["rbf", "poly", "linear"])
def test_tiny_cache_same_digests_as_large(kernel):
    X, y = _digits()
    tiny = CPSVM(C=2.0, kernel=kernel, gamma=0.05, cache_size=0.005)
    big = CPSVM(C=2.0, kernel=kernel, gamma=0.05, cache_size=1000)
    tiny.fit(X[:300], y[:300])
    big.fit(X[:300], y[:300])
    # the large cache holds every row it computed; the tiny one almost none
    assert _rows_held(big) > 10 * max(_rows_allowed(tiny), 1)
    assert _rows_held(tiny) <= _rows_allowed(tiny)
    assert tiny.state_digest() == big.state_digest()
    rng = np.random.default_rng(3)
    for step in range(4):
        ids = rng.choice(tiny.support_ids_, 4, replace=False).tolist()
        ra = tiny.decrement(ids, batch=bool(step % 2), audit=True)
        rb = big.decrement(ids, batch=bool(step % 2), audit=True)
        assert ra.digest_after == rb.digest_after
        assert ra.n_migrations == rb.n_migrations and ra.paths == rb.paths
        assert _rows_held(tiny) <= _rows_allowed(tiny)
    tiny.increment(X[300:], y[300:])
    big.increment(X[300:], y[300:])
    assert tiny.state_digest() == big.state_digest()
    assert tiny.kkt_violation() == big.kkt_violation() < 1e-8
    assert _rows_held(tiny) <= _rows_allowed(tiny)
    np.testing.assert_array_equal(tiny.decision_function(X), big.decision_function(X))


def test_cache_limit_is_kept_between_calls_and_after_a_certificate():
    X, y = _digits(360)
    m = CPSVM(C=1.0, gamma=0.05, cache_size=0.3).fit(X, y)
    allowed = _rows_allowed(m)
    assert 0 < allowed < len(m.support_ids_)
    assert _rows_held(m) <= allowed
    m.kkt_violation()
    assert _rows_held(m) <= allowed
    m.decrement(m.support_ids_[:3].tolist())
    assert _rows_held(m) <= allowed
    assert m.kkt_violation() < 1e-8


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "big", None])
def test_bad_cache_size_refused(bad):
    X, y = _digits(60)
    with pytest.raises(InvalidInputError, match="cache_size"):
        CPSVM(cache_size=bad).fit(X, y)
