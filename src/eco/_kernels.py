"""Kernel parameters: resolution and freezing.

A kernel is defined exactly as scikit-learn defines it:

- ``linear``: ``<x, x'>``
- ``rbf``: ``exp(-gamma ||x - x'||^2)``
- ``poly``: ``(gamma <x, x'> + coef0) ** degree``
- ``precomputed``: the user supplies kernel values.

The compiled kernel (training rows and ``cross_kernel``) computes the poly
kernel less its constant monomial ``coef0 ** degree`` when ``coef0 > 0``,
``gamma > 0`` and ``degree >= 1``: the constant changes no dual solution,
intercept or decision value (``sum_i y_i alpha_i = 0``) but buried the
informative part on small features (docs/cp-engine.md, section 4).

``gamma="scale"`` and ``"auto"`` depend on the training data, so they are
resolved once, at ``fit``, to a number that every later update and every
comparison with a retrain from scratch uses.
"""

from numbers import Integral, Real

import numpy as np

from ._cp_core import KERNEL_CODES, kernel_matrix
from .exceptions import InvalidInputError

KERNELS = tuple(KERNEL_CODES)


def resolve_gamma(gamma, X, kernel):
    """Return gamma as a non-negative float, resolving "scale" and "auto" on ``X``.

    Parameters
    ----------
    gamma : {"scale", "auto"} or float
    X : ndarray of shape (n_samples, n_features)
    kernel : str

    Returns
    -------
    float
        ``1 / (n_features * X.var())`` for "scale" (1.0 when the variance is
        0, as scikit-learn does), ``1 / n_features`` for "auto", else gamma.
        ``gamma=0`` is accepted, as scikit-learn accepts it: the rbf kernel
        is then the constant 1 and the poly kernel the constant
        ``coef0 ** degree``.
    """
    if kernel in ("linear", "precomputed"):
        # unused by these kernels; keep a number so the state is complete
        return float(gamma) if isinstance(gamma, Real) else 1.0
    if isinstance(gamma, str):
        if gamma == "scale":
            var = float(X.var()) if X.size else 0.0
            return 1.0 / (X.shape[1] * var) if var != 0.0 else 1.0
        if gamma == "auto":
            return 1.0 / X.shape[1]
        raise InvalidInputError(
            f"gamma must be 'scale', 'auto' or a non-negative float, got {gamma!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, Real) or not np.isfinite(gamma) or gamma < 0:
        raise InvalidInputError(
            f"gamma must be 'scale', 'auto' or a non-negative float, got {gamma!r}")
    return float(gamma)


def check_kernel_params(kernel, degree, coef0):
    """Validate the kernel name and its numeric parameters."""
    if kernel not in KERNEL_CODES:
        raise InvalidInputError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if isinstance(degree, bool) or not isinstance(degree, Integral) or degree < 0:
        raise InvalidInputError(f"degree must be a non-negative integer, got {degree!r}")
    if isinstance(coef0, bool) or not isinstance(coef0, Real) or not np.isfinite(coef0):
        raise InvalidInputError(f"coef0 must be a finite number, got {coef0!r}")


def cross_kernel(A, B, kernel, gamma, degree, coef0):
    """Kernel matrix between the rows of ``A`` and ``B`` (float64, one BLAS call)."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    B = np.ascontiguousarray(B, dtype=np.float64)
    return kernel_matrix(A, B, kernel, float(gamma), int(degree), float(coef0))
