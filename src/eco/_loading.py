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
numerically meaningless margin set shows there). Before that, what the
certificate takes as given is checked against the parameters: a
precomputed kernel must be symmetric, and ``gamma_`` and ``class_weight_``
must be what the parameters resolve to on the active rows
(:func:`resolved_problem`); else a file could be certified exact for
another problem than the one it names.
"""

import os

import numpy as np

from ._hyper import balanced_weights
from ._kernels import resolve_gamma
from ._validation import check_symmetric, resolve_class_weight
from .exceptions import InvalidInputError, ModelFileError
from .persistence import read_state
from .state import CERTIFY_TOL, head_set_problem
from .svm import CPSVM

__all__ = ["load", "load_model", "CERTIFY_TOL"]

# A resolved hyper-parameter that follows the rows (gamma="scale", "balanced"
# weights) is recomputed on the loaded rows and must agree to this relative
# difference: bit for bit on the machine that saved it, a few units in the
# last place where another CPU sums the variance in another order.
_RESOLVED_RTOL = 1e-12


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
    if state.params["kernel"] == "precomputed":
        try:  # as fit refuses it
            check_symmetric(state.data, "the saved kernel matrix")
        except InvalidInputError as exc:
            raise ModelFileError(f"{where}: inconsistent model file: {exc}") from exc
    try:
        model = CPSVM.from_state(state)
    except Exception as exc:  # bad parameters, a state the engine refuses
        raise ModelFileError(f"{where}: inconsistent model file: "
                             f"{type(exc).__name__}: {exc}") from exc
    try:
        problem = resolved_problem(model)
    except Exception as exc:  # a parameter fit would refuse (a class_weight dict)
        raise ModelFileError(f"{where}: inconsistent model file: "
                             f"{type(exc).__name__}: {exc}") from exc
    if problem is not None:
        raise ModelFileError(f"{where}: inconsistent model file: {problem}")
    try:
        problem = certificate_problem(model)
    except Exception as exc:  # the kernel of a crafted state can fail to compute
        raise ModelFileError(f"{where}: the model could not be certified: "
                             f"{type(exc).__name__}: {exc}") from exc
    if problem is not None:
        raise ModelFileError(f"{where}: the model fails its certificate: {problem}")
    return model


def resolved_problem(model):
    """None when ``gamma_`` and ``class_weight_`` are what the parameters give on the rows.

    The certificate checks that the coefficients solve the SVM of the saved
    ``gamma_`` and class weights; this checks that those are the ones the
    saved parameters resolve to on the active rows, as ``fit``, ``increment``
    and ``decrement`` resolve them. Else the model would be certified exact
    for another problem than ``CPSVM(**params).fit(rows)``, and every later
    update would follow it. Returns a sentence naming the first difference.
    """
    heads = model.head_set_
    active = heads.active_slots()
    labels = heads.slot_labels[active]
    # with no row left, "scale" keeps the value it had (as an update leaves it)
    if model.kernel != "precomputed" and not (model.gamma == "scale" and len(active) == 0):
        rows = heads.features_of(active) if model.gamma == "scale" else \
            np.empty((0, model.n_features_in_))
        want = resolve_gamma(model.gamma, rows, model.kernel)
        if not _close(model.gamma_, want):
            return f"gamma_ is {model.gamma_!r}; gamma={model.gamma!r} gives {want!r} on its rows"
    if model.class_weight == "balanced":
        # a class with no row left keeps its previous weight (no bound uses it)
        want = balanced_weights(labels, len(model.classes_), model.class_weight_)
    else:
        want = resolve_class_weight(model, model.classes_, labels)
    if not all(_close(w, v) for w, v in zip(model.class_weight_.tolist(), want.tolist())):
        return (f"class_weight_ is {model.class_weight_.tolist()[:10]}; "
                f"class_weight={model.class_weight!r} gives {want.tolist()[:10]} on its rows")
    return None


def _close(value, want):
    return abs(float(value) - float(want)) <= _RESOLVED_RTOL * abs(float(want))


def certificate_problem(model, tol=CERTIFY_TOL):
    """None when `model` is an exact SVM state, else a sentence naming the first problem.

    :func:`eco.state.head_set_problem` on the model's heads.
    """
    return head_set_problem(model.head_set_, tol)


#: Alias of :func:`load`.
load_model = load
