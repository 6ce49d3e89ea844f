"""Loading a saved model: the file's state (:mod:`eco.persistence`) made an estimator, certified.

A model file is untrusted input. :mod:`eco.persistence` bounds every
resource and validates the structure (shapes, sets against coefficients and
bounds, labels, ids); the file holds the primary state only. Here the
derived state is recomputed (:func:`eco.state.install_primary`: the inverse
bordered margin matrix by refactorisation, the gradients from the kernel
rows) and the model is certified from scratch before it is returned: the
KKT conditions on the recomputed gradients (a wrong bias or coefficient
shows there), every coefficient in its box and consistent with its set
(:meth:`eco.state.ModelState.validate`), and the refactorised inverse must
invert the bordered matrix rebuilt from the kernel (a singular or
numerically meaningless margin set shows there).
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


def load(path):
    """Load a model saved by :meth:`CPSVM.save` (or :func:`eco.save_model`) and certify it.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    CPSVM
        The model: its primary state (and so its digest and predictions) bit
        for bit as saved, its derived state recomputed.

    Raises
    ------
    eco.exceptions.ModelFileError
        The file is not a regular file or not an eco model file, is
        truncated, has a member whose digest does not match, is of another
        format version, holds an inconsistent state, or its model fails the
        certificate (see :mod:`eco.persistence` and :data:`CERTIFY_TOL`), or
        its margin matrix cannot be refactorised.
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

    Checks every head from scratch: the KKT conditions on gradients
    recomputed from the kernel, and the inverse bordered margin matrix
    against the matrix rebuilt from the kernel.
    """
    heads = model.head_set_
    for h in range(heads.n_heads):
        viol = heads.violation(h)
        if not viol <= tol:
            return f"head {h}: KKT violation {viol:.3g} (coefficients or bias are not the SVM's)"
        res = _inverse_residual(heads, heads.head_state(h))
        if not res <= tol:
            return (f"head {h}: the margin matrix is numerically singular (|Rinv A - I| = "
                    f"{res:.3g} after refactorisation)")
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
