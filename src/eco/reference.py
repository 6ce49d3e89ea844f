"""An independent from-scratch solve, the yardstick of exactness.

``reference_solve`` trains scikit-learn's libsvm at a tight tolerance and then
polishes its solution in float64: libsvm keeps kernel values in single
precision in its cache, so its decision values carry relative errors of about
1e-7. Taking its sets and solving the bordered system on the margin vectors
with alpha_E = C_E in float64 gives a reference that agrees with an exact
state to about 1e-12. Nothing here shares code with the CP engine: the
kernel comes from :mod:`sklearn.metrics.pairwise` and the linear algebra from
NumPy.

The solve is bounded: libsvm gets at most :func:`iteration_bound` iterations
(``max(MIN_ITER, ITER_PER_ROW * n)``) and optionally a wall-clock limit. When
it stops at a bound, the polish of the sets it reached is accepted only if
its KKT certificate holds (:data:`ACCEPT_KKT`); otherwise
:class:`~eco.exceptions.ReferenceLimitError` says there is no reference.
"""

import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import linear_kernel, polynomial_kernel, rbf_kernel
from sklearn.svm import SVC

from .exceptions import InvalidInputError, ReferenceLimitError

__all__ = ["ReferenceSolution", "reference_kernel", "reference_solve", "iteration_bound",
           "ITER_PER_ROW", "MIN_ITER"]


def reference_kernel(A, B, kernel, gamma, degree, coef0):
    """Kernel matrix by scikit-learn's pairwise functions (float64)."""
    if kernel == "linear":
        return linear_kernel(A, B)
    if kernel == "rbf":
        return rbf_kernel(A, B, gamma=gamma)
    if kernel == "poly":
        return polynomial_kernel(A, B, degree=degree, gamma=gamma, coef0=coef0)
    raise ValueError(f"no reference kernel for {kernel!r}")


@dataclass
class ReferenceSolution:
    """Coefficients of a binary SVM solved from scratch.

    Attributes
    ----------
    alpha : ndarray of shape (n,)
    b : float
    kkt_violation : float
        KKT violation of the polished solution.
    polished : bool
        False when the polish failed and the raw libsvm solution is returned.
    """

    alpha: np.ndarray
    b: float
    kkt_violation: float
    polished: bool

    def decision(self, K_eval_train, y):
        """Decision values from the kernel between evaluation and training rows."""
        return K_eval_train @ (self.alpha * y) + self.b


#: Iterations of libsvm allowed per example (the bound is ``max(MIN_ITER, ITER_PER_ROW * n)``).
ITER_PER_ROW = 1000
#: Fewest iterations any reference solve may use.
MIN_ITER = 1_000_000
#: Largest KKT violation of the polished solution accepted when libsvm stopped
#: at a bound before converging (its sets are then only a guess).
ACCEPT_KKT = 1e-9
#: First attempt's share of the bound: a solve that has not converged by then
#: is restarted with four times as many iterations (libsvm cannot resume), so
#: that a wall-clock limit is checked between attempts.
_FIRST_TRY = 100_000


def iteration_bound(n):
    """The default bound on libsvm's iterations for `n` examples: ``max(MIN_ITER, ITER_PER_ROW * n)``."""
    return max(MIN_ITER, ITER_PER_ROW * int(n))


def check_limits(max_iter, time_limit):
    """InvalidInputError unless `max_iter` is None or an int >= 1 and `time_limit` None or > 0."""
    if max_iter is not None and (isinstance(max_iter, (bool, np.bool_)) or not isinstance(
            max_iter, (int, np.integer)) or max_iter < 1):
        raise InvalidInputError(f"max_iter must be a positive int, got {max_iter!r}")
    if time_limit is not None and (isinstance(time_limit, (bool, np.bool_)) or not isinstance(
            time_limit, (int, float, np.integer, np.floating)) or not np.isfinite(time_limit)
            or not time_limit > 0):
        raise InvalidInputError(
            f"time_limit must be a positive number of seconds, got {time_limit!r}")


def reference_solve(K, y, C, *, max_iter=None, time_limit=None):
    """Solve the binary SVM dual from scratch and polish it in float64.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Kernel matrix of the training rows.
    y : ndarray of shape (n,)
        Labels in {-1, +1}.
    C : ndarray of shape (n,)
        Box bound of every row.
    max_iter : int, optional
        Bound on libsvm's iterations; default :func:`iteration_bound` of `n`.
    time_limit : float, optional
        Seconds the solve may take. libsvm cannot be interrupted, so it runs
        in attempts of growing iteration bounds (100,000 first, then four
        times more each, up to `max_iter`); a further attempt is started only
        when the time it is expected to take (four times the previous one's)
        fits in what is left. The first attempt always runs. None: no limit
        besides `max_iter`.

    Returns
    -------
    ReferenceSolution

    Raises
    ------
    eco.exceptions.ReferenceLimitError
        libsvm did not converge within `max_iter` iterations or `time_limit`
        seconds, and the float64 polish of the sets it reached is not
        certified (KKT violation above :data:`ACCEPT_KKT`): there is no
        reference. An unconverged solution is never returned uncertified.
    eco.exceptions.InvalidInputError
        `max_iter` or `time_limit` is not a positive number (:func:`check_limits`).
    """
    K = np.asarray(K, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    n = len(y)
    check_limits(max_iter, time_limit)
    max_iter = iteration_bound(n) if max_iter is None else int(max_iter)
    if n == 0:
        return ReferenceSolution(np.zeros(0), 0.0, 0.0, True)
    if np.all(y == y[0]):
        # one class: every alpha is 0 and the decision is that class (b = y)
        return ReferenceSolution(np.zeros(n), float(y[0]), 0.0, True)
    keep = np.flatnonzero(C > 0)
    svc, stopped = _bounded_libsvm(K[np.ix_(keep, keep)], y[keep], C[keep], int(max_iter),
                                   time_limit)
    alpha = np.zeros(n)
    alpha[keep[svc.support_]] = np.abs(svc.dual_coef_[0])
    raw = ReferenceSolution(alpha.copy(), float(svc.intercept_[0]), np.inf, False)
    sol = _polish(K, y, C, alpha)
    if stopped is not None:
        # libsvm stopped early: its sets are accepted only when the polished
        # solution is certified (the KKT conditions make it the optimum,
        # however it was found); else there is no reference
        viol = np.inf if sol is None else sol.kkt_violation
        if not viol <= ACCEPT_KKT:
            raise ReferenceLimitError(
                f"{stopped}, and the polish of its partial solution is not certified (KKT "
                f"violation {viol:.3g} > {ACCEPT_KKT:g}): no reference is available; the "
                "data may be badly scaled", stopped.n_iter, stopped.elapsed)
    return raw if sol is None else sol


def _polish(K, y, C, alpha):
    """Exact coefficients for the sets of `alpha` (float64), or None when that fails."""
    Q = (y[:, None] * y[None, :]) * K
    free = (alpha > 0) & (alpha < C)
    upper = (alpha >= C) & (C > 0)
    for _ in range(10):
        a = np.where(upper, C, 0.0)
        S = np.flatnonzero(free)
        if len(S) == 0:
            # b is an interval: take its midpoint, as libsvm does
            g0 = y * (K @ (a * y)) - 1.0
            act = C > 0
            up_b = (upper & (y > 0)) | (~upper & (y < 0))
            bounds = -y * g0
            hi = np.min(bounds[act & up_b], initial=np.inf)
            lo = np.max(bounds[act & ~up_b], initial=-np.inf)
            b = 0.5 * (lo + hi) if np.isfinite(lo) and np.isfinite(hi) else (
                lo if np.isfinite(lo) else hi)
        else:
            m = len(S)
            A = np.zeros((m + 1, m + 1))
            A[0, 1:] = y[S]
            A[1:, 0] = y[S]
            A[1:, 1:] = Q[np.ix_(S, S)]
            rhs = np.concatenate([[-np.dot(y, a)], 1.0 - Q[S] @ a])
            # least squares: with duplicates or linearly dependent margin
            # vectors A is singular but the system is consistent, and any of
            # its solutions gives the same decision function
            sol = np.linalg.lstsq(A, rhs, rcond=None)[0]
            b = sol[0]
            a[S] = sol[1:]
            low, high = a[S] < 0, a[S] > C[S]
            if low.any() or high.any():
                free[S[low]] = False
                free[S[high]] = False
                upper[S[high]] = True
                continue
        g = y * (K @ (a * y) + b) - 1.0
        viol = _violation(a, y, C, g)
        return ReferenceSolution(a, float(b), viol, True)
    return None


class _Stopped(str):
    """Why libsvm stopped before converging (a sentence), with its counts."""

    def __new__(cls, text, n_iter, elapsed):
        self = super().__new__(cls, text)
        self.n_iter, self.elapsed = int(n_iter), float(elapsed)
        return self


def _bounded_libsvm(K, y, C, max_iter, time_limit):
    """libsvm within `max_iter` and `time_limit`: (fitted SVC, None or why it stopped early)."""
    # libsvm only has to find the sets; the polish makes the numbers exact. A
    # tolerance of 1e-12 can take minutes on flat, degenerate problems (many
    # points exactly on the margin), hence 1e-10 and the bounds.
    start = time.perf_counter()
    budget = min(_FIRST_TRY, max_iter)
    while True:
        t0 = time.perf_counter()
        svc = SVC(C=1.0, kernel="precomputed", tol=1e-10, shrinking=True, cache_size=1000,
                  max_iter=budget)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            svc.fit(K, y, sample_weight=C)
        took = time.perf_counter() - t0
        n_iter = int(np.max(getattr(svc, "n_iter_", [0])))
        if n_iter < budget and not any(issubclass(w.category, ConvergenceWarning)
                                       for w in caught):
            return svc, None
        elapsed = time.perf_counter() - start
        if budget >= max_iter:
            return svc, _Stopped(f"the reference solve (libsvm) did not converge within "
                                 f"{max_iter} iterations ({len(y)} examples, {elapsed:.3g} s)",
                                 n_iter, elapsed)
        if time_limit is not None and elapsed + 4.0 * took > time_limit:
            return svc, _Stopped(f"the reference solve (libsvm) did not converge within its "
                                 f"time limit of {time_limit:g} s ({n_iter} iterations in "
                                 f"{elapsed:.3g} s, {len(y)} examples)", n_iter, elapsed)
        budget = min(4 * budget, max_iter)


def _violation(a, y, C, g):
    act = C > 0
    worst = abs(float(np.dot(y, a))) / max(C.max(), 1e-300)
    a, C, g = a[act], C[act], g[act]
    free = (a > 0) & (a < C)
    worst = max(worst, float(np.max(np.abs(g[free]), initial=0.0)))
    worst = max(worst, float(np.max(-g[a <= 0], initial=0.0)))
    worst = max(worst, float(np.max(g[a >= C], initial=0.0)))
    return worst
