"""The reference solve is bounded: iterations scaled with n, an optional wall-clock limit.

A libsvm run stopped at its bound is never presented as a reference: it raises
ReferenceLimitError, and ``verify(reference=True)`` with it.
"""

import numpy as np
import pytest

from eco import CPSVM
from eco.audit import verify_model
from eco.exceptions import InvalidInputError, ReferenceLimitError
from eco.reference import ITER_PER_ROW, MIN_ITER, iteration_bound, reference_solve
from exact_helpers import noisy_classes


def _badly_scaled(n=200, scale=1e3, seed=0):
    # linear kernel on features of size 1e3 with C = 100: libsvm needs far
    # more than a million iterations here (measured: none converged in 1e6)
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * scale
    y = np.where(X[:, 0] + rng.normal(size=n) * scale > 0, 1.0, -1.0)
    return X @ X.T, y, np.full(n, 100.0)


def test_bound_scales_with_n():
    assert iteration_bound(10) == MIN_ITER
    assert iteration_bound(10 * MIN_ITER // ITER_PER_ROW) == 10 * MIN_ITER


def test_well_posed_problem_solves_within_small_bounds():
    X, y = noisy_classes(n=60, n_classes=2, d=3, noise=0.7, seed=3)
    K = X @ X.T
    y = np.where(y == y[0], 1.0, -1.0)
    sol = reference_solve(K, y, np.ones(len(y)), max_iter=100_000, time_limit=60.0)
    assert sol.polished and sol.kkt_violation < 1e-9


def test_iteration_bound_hit_raises():
    K, y, C = _badly_scaled()
    with pytest.raises(ReferenceLimitError, match="did not converge within 5000 iterations") as ei:
        reference_solve(K, y, C, max_iter=5000)
    assert ei.value.n_iter == 5000


def test_time_limit_hit_raises():
    K, y, C = _badly_scaled()
    # the first attempt (1e5 iterations) does not converge; four times as many
    # cannot be expected to fit in the microsecond left
    with pytest.raises(ReferenceLimitError, match="time limit") as ei:
        reference_solve(K, y, C, time_limit=1e-6)
    assert 0 < ei.value.n_iter <= 100_000


def test_verify_raises_when_the_reference_is_out_of_bounds():
    X, y = noisy_classes(n=60, n_classes=3, d=3, noise=0.7, seed=4)
    model = CPSVM(C=1.0).fit(X, y)
    digest = model.state_digest()
    with pytest.raises(ReferenceLimitError, match="did not converge within 1 iterations"):
        verify_model(model, reference=True, reference_max_iter=1)
    rep = verify_model(model, reference=True, reference_max_iter=100_000,
                       reference_time_limit=120.0)
    assert rep.ok and rep.max_decision_diff < 1e-9
    assert model.state_digest() == digest


@pytest.mark.parametrize("kw", [dict(max_iter=0), dict(max_iter=2.5), dict(max_iter=True),
                                dict(time_limit=0.0), dict(time_limit=-1.0),
                                dict(time_limit=float("nan")), dict(time_limit="1")])
def test_bad_bounds_refused(kw):
    K, y, C = _badly_scaled(n=10)
    with pytest.raises(InvalidInputError):
        reference_solve(K, y, C, **kw)
