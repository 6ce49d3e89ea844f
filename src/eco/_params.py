"""Changing the parameters of a fitted :class:`eco.CPSVM` without leaving it inconsistent.

Parameters that define the fitted model (C, the kernel and its parameters,
class weights) cannot change under a fitted state: setting one un-fits the
model. Execution settings (threads, step bound, precomputation, cache size)
can: the same state moves, bit for bit, into a head set built with them.
"""

from ._validation import check_params

_MODEL_PARAMS = ("C", "kernel", "gamma", "degree", "coef0", "class_weight")
_WORK_PARAMS = ("n_jobs", "max_steps", "precompute", "cache_size", "screening")
_FITTED_ATTRS = ("head_set_", "classes_", "gamma_", "class_weight_", "n_features_in_",
                 "feature_names_in_")


def _same_value(a, b):
    if type(a) is not type(b):
        return False
    try:
        return bool(a == b)
    except Exception:  # values without a truth value for ==
        return a is b


def set_params(est, params, base_set_params):
    """``est.set_params(**params)`` through `base_set_params` (scikit-learn's), all or nothing."""
    saved = dict(est.__dict__)
    fitted = hasattr(est, "head_set_")
    old = est.get_params(deep=False)
    try:
        base_set_params(**params)
    except BaseException:
        est.__dict__.clear()
        est.__dict__.update(saved)
        raise
    if not fitted:
        return est
    new = est.get_params(deep=False)
    if any(not _same_value(old[k], new[k]) for k in _MODEL_PARAMS):
        for name in _FITTED_ATTRS:
            est.__dict__.pop(name, None)
        return est
    if any(not _same_value(old[k], new[k]) for k in _WORK_PARAMS):
        # an execution setting changed: the same state, bit for bit, in a
        # head set (of the same backend) built with the new settings, so
        # that the model and its parameters agree
        try:
            # the checks fit makes: a value fit refuses is refused here too,
            # before the head set is rebuilt with it
            check_params(est)
            est.head_set_ = type(est.head_set_).from_state(
                est.to_state(), max_steps=est.max_steps or 0, n_jobs=est.n_jobs)
        except BaseException:
            est.__dict__.clear()
            est.__dict__.update(saved)
            raise
    return est
