"""Loading a saved model: the file's state (:mod:`eco.persistence`) made an estimator, certified.

A model file is untrusted input. :mod:`eco.persistence` bounds every
resource and validates the structure (shapes, sets against coefficients and
bounds, labels, ids); here the loaded model is certified from scratch before
it is returned: the gradients are recomputed from the kernel and compared
with the stored ones, the KKT conditions are checked on the recomputed ones
(a wrong bias or coefficient shows there), and the stored inverse bordered
margin matrix must invert the bordered matrix rebuilt from the kernel. The
stored derived state is kept only once certified, so the loaded model
computes bit for bit as the saved one did.
"""

import os

import numpy as np

from .exceptions import ModelFileError
from .persistence import read_state
from .svm import CPSVM

__all__ = ["load", "load_model", "CERTIFY_TOL"]

#: Largest KKT violation (the engine's relative certificate) and relative
#: inverse residual ``|Rinv A - I|`` a loaded model may show. An exact model
#: shows about 1e-12; on degenerate data (poly on features scaled by 1e-3,
#: C = 100) a live model was measured at 3.8e-6 after a decrement, and a file
#: must load what the model was. Tampering shows as 0.1 to 100.
CERTIFY_TOL = 1e-5
# relative rounding allowed in a kernel sum, as in the engine's certificate
_CANCEL = 1e-6
# The stored gradients are the engine's incremental ones: on degenerate data
# (features scaled by 1e3 or 1e-3, near-singular margin sets) they drift from
# the recomputed ones by up to ~1e-4 of their size while the KKT certificate,
# recomputed, holds. A gradient off by more misleads the path (its end check
# then re-solves the head); garbage (zeros, a wrong bias) is off by O(1).
_GRADIENT_TOL = 1e-3


def load(path):
    """Load a model saved by :meth:`CPSVM.save` (or :func:`eco.save_model`) and certify it.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    CPSVM
        The model, bit for bit as saved.

    Raises
    ------
    eco.exceptions.ModelFileError
        The file is not a regular file or not an eco model file, is
        truncated, has a member whose digest does not match, is of another
        format version, holds an inconsistent state, or its model fails the
        certificate (see :mod:`eco.persistence` and :data:`CERTIFY_TOL`).
    eco.exceptions.InvalidInputError
        `path` is not a path.
    OSError
        The file could not be read (for example, it does not exist).
    """
    state = read_state(path)
    where = repr(os.fspath(path))
    known = set(CPSVM().get_params()) - {"backend", "screening"}  # execution settings, not saved
    if set(state.params) != known:
        raise ModelFileError(f"{where}: inconsistent model file: the parameters are "
                             f"{sorted(state.params)[:20]}, expected {sorted(known)}")
    try:
        model = CPSVM.from_state(state)
    except Exception as exc:  # bad parameters, a state the engine refuses
        raise ModelFileError(f"{where}: inconsistent model file: "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        problem = certificate_problem(model)
    except Exception as exc:  # the kernel of a crafted state can fail to compute
        raise ModelFileError(f"{where}: the model could not be certified: "
                             f"{type(exc).__name__}: {exc}") from exc
    if problem is not None:
        raise ModelFileError(f"{where}: the model fails its certificate: {problem}")
    return model


def certificate_problem(model, tol=CERTIFY_TOL):
    """None when `model` is an exact SVM state, else a sentence naming the first problem.

    Checks every head from scratch: stored gradients against gradients
    recomputed from the kernel, the KKT conditions, and the inverse bordered
    margin matrix against the matrix rebuilt from the kernel.
    """
    heads = model.head_set_
    active = heads.active_slots()
    for h in range(heads.n_heads):
        st = heads.head_state(h)
        g = heads.engine(h).recompute_gradients()
        gap = float(np.max(np.abs(g[active] - st.g[active]), initial=0.0))
        # g_i sums alpha_j y_j K_ij, each at most alpha_j max_k K_kk: allow for
        # the rounding of that sum as the engine's certificate does (1e-6 of it)
        size = 1.0 + abs(float(st.b)) + _CANCEL * float(np.sum(np.abs(st.alpha[active]))) \
            * float(heads.store.max_diag)
        if not gap <= _GRADIENT_TOL * size:
            return (f"head {h}: the stored gradients differ from the recomputed ones by "
                    f"{gap:.3g} (allowed: {_GRADIENT_TOL * size:.3g})")
        viol = heads.violation(h)
        if not viol <= tol:
            return f"head {h}: KKT violation {viol:.3g} (coefficients or bias are not the SVM's)"
        res = _inverse_residual(heads, st)
        if not res <= tol:
            return f"head {h}: the inverse margin matrix is wrong (|Rinv A - I| = {res:.3g})"
    return None


def _inverse_residual(heads, st):
    """max |Rinv A - I| / max(1, max|Rinv| max|A|), A = [[0, y_S'], [y_S, Q_SS]]."""
    S = np.asarray(st.margin_order, dtype=np.intp)
    if len(S) == 0:
        return 0.0
    y = np.asarray(st.y)[S]
    A = np.empty((len(S) + 1, len(S) + 1))
    A[0, 0] = 0.0
    A[0, 1:] = A[1:, 0] = y
    A[1:, 1:] = heads.kernel_block(S)[:, S] * np.outer(y, y)
    R = np.asarray(st.Rinv, dtype=np.float64)
    # relative to the sizes of the factors: an ill-conditioned but exact inverse passes
    scale = max(1.0, float(np.max(np.abs(R))) * float(np.max(np.abs(A))))
    return float(np.max(np.abs(R @ A - np.eye(len(S) + 1)))) / scale


#: Alias of :func:`load`.
load_model = load
