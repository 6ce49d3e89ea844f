"""An independent from-scratch solve, the yardstick of exactness.

``reference_solve`` trains scikit-learn's libsvm at a tight tolerance and then
polishes its solution in float64: libsvm keeps kernel values in single
precision in its cache, so its decision values carry relative errors of about
1e-7. Taking its sets and solving the bordered system on the margin vectors
with alpha_E = C_E in float64 gives a reference that agrees with an exact
state to about 1e-12. Nothing here shares code with the CP engine: the
kernel comes from :mod:`sklearn.metrics.pairwise` and the linear algebra from
NumPy.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import linear_kernel, polynomial_kernel, rbf_kernel
from sklearn.svm import SVC

__all__ = ["ReferenceSolution", "reference_kernel", "reference_solve"]


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


def reference_solve(K, y, C):
    """Solve the binary SVM dual from scratch and polish it in float64.

    Parameters
    ----------
    K : ndarray of shape (n, n)
        Kernel matrix of the training rows.
    y : ndarray of shape (n,)
        Labels in {-1, +1}.
    C : ndarray of shape (n,)
        Box bound of every row.

    Returns
    -------
    ReferenceSolution
    """
    K = np.asarray(K, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    C = np.asarray(C, dtype=np.float64)
    n = len(y)
    if n == 0:
        return ReferenceSolution(np.zeros(0), 0.0, 0.0, True)
    if np.all(y == y[0]):
        # one class: every alpha is 0 and the decision is that class (b = y)
        return ReferenceSolution(np.zeros(n), float(y[0]), 0.0, True)
    keep = np.flatnonzero(C > 0)
    # libsvm only has to find the sets; the polish below makes the numbers
    # exact. A tolerance of 1e-12 can take minutes on flat, degenerate
    # problems (many points exactly on the margin), hence 1e-10 and a cap.
    svc = SVC(C=1.0, kernel="precomputed", tol=1e-10, shrinking=True, cache_size=1000,
              max_iter=20_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svc.fit(K[np.ix_(keep, keep)], y[keep], sample_weight=C[keep])
    alpha = np.zeros(n)
    alpha[keep[svc.support_]] = np.abs(svc.dual_coef_[0])
    raw = ReferenceSolution(alpha.copy(), float(svc.intercept_[0]), np.inf, False)
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
    return raw


def _violation(a, y, C, g):
    act = C > 0
    worst = abs(float(np.dot(y, a))) / max(C.max(), 1e-300)
    a, C, g = a[act], C[act], g[act]
    free = (a > 0) & (a < C)
    worst = max(worst, float(np.max(np.abs(g[free]), initial=0.0)))
    worst = max(worst, float(np.max(-g[a <= 0], initial=0.0)))
    worst = max(worst, float(np.max(g[a >= C], initial=0.0)))
    return worst
