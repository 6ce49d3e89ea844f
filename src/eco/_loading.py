"""Loading a saved model: the file's state (:mod:`eco.persistence`) made an estimator."""

import os

from .exceptions import ModelFileError
from .persistence import read_state
from .svm import CPSVM

__all__ = ["load", "load_model"]

def load(path):
    """Load a model saved by :meth:`CPSVM.save` (or :func:`eco.save_model`).

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
        The file is not an eco model file, is truncated, has a member whose
        digest does not match, is of another format version, or holds an
        inconsistent state (see :mod:`eco.persistence`).
    eco.exceptions.InvalidInputError
        `path` is not a path.
    OSError
        The file could not be read (for example, it does not exist).
    """
    state = read_state(path)
    where = repr(os.fspath(path))
    known = set(CPSVM().get_params()) - {"backend"}  # an execution setting, not saved
    if set(state.params) != known:
        raise ModelFileError(f"{where}: inconsistent model file: the parameters are "
                             f"{sorted(state.params)}, expected {sorted(known)}")
    try:
        return CPSVM.from_state(state)
    except Exception as exc:  # bad parameters, a state the engine refuses
        raise ModelFileError(f"{where}: inconsistent model file: "
                             f"{type(exc).__name__}: {exc}") from exc


#: Alias of :func:`load`.
load_model = load
