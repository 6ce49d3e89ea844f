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

from .exceptions import ModelFileError
from .persistence import read_state
from .state import CERTIFY_TOL, head_set_problem
from .svm import CPSVM

__all__ = ["load", "load_model", "CERTIFY_TOL"]


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

    :func:`eco.state.head_set_problem` on the model's heads.
    """
    return head_set_problem(model.head_set_, tol)


#: Alias of :func:`load`.
load_model = load
