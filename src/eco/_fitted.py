"""The fitted attributes of :class:`eco.CPSVM`, read from its head set and state.

A mixin of their own so that ``svm.py`` stays the estimator's facade; every
attribute reads the head set (``head_set_``) through its public methods.
"""

import numpy as np
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from . import _cp_core
from . import _validation as V
from ._concurrency import model_lock, reads
from ._headset import HeadSet
from .exceptions import InvalidInputError
from .state import ModelState

__all__ = ["FittedAttributes"]

_SET_RESERVE = _cp_core.SET_RESERVE
_SET_MARGIN = _cp_core.SET_MARGIN
_SET_ERROR = _cp_core.SET_ERROR


class FittedAttributes:
    """Fitted attributes and state export of :class:`eco.CPSVM` (see its docstring)."""

    # The compiled state cannot be pickled as such; in memory (copy, joblib)
    # the model travels as its ModelState (plain arrays). Files are written
    # by save() in eco's own format, never with pickle.

    def __getstate__(self):
        # the lock is never copied: a copy gets its own (model_lock)
        with model_lock(self).reading():
            state = {k: v for k, v in super().__getstate__().items() if k != "_eco_lock"}
            if "head_set_" in state:
                state = {k: v for k, v in state.items() if k != "head_set_"}
                state["_eco_state"] = self.to_state()
        return state

    def __setstate__(self, state):
        state = dict(state)
        state.pop("_eco_lock", None)
        exported = state.pop("_eco_state", None)
        super().__setstate__(state)
        if exported is not None:
            self.head_set_ = self._head_set_type().from_state(
                exported, max_steps=self.max_steps or 0, n_jobs=self.n_jobs)

    def _head_set_type(self):
        """The head-set class of ``backend`` (Ray is imported only for "ray")."""
        backend = getattr(self, "backend", "threads")
        if backend == "threads":
            return HeadSet
        if backend == "ray":
            from ._ray_backend import RayHeadSet

            return RayHeadSet
        raise InvalidInputError(f'backend must be "threads" or "ray", got {backend!r}')

    def with_backend(self, backend):
        """This fitted model on another backend: a new CPSVM with the same state, bit for bit.

        Parameters
        ----------
        backend : {"threads", "ray"}

        Returns
        -------
        CPSVM
        """
        state = self.to_state()
        model = type(self)(**{**self.get_params(), "backend": backend})
        heads_type = model._head_set_type()
        for name, value in self.__dict__.items():
            if name.endswith("_") and not name.startswith("_") and name != "head_set_":
                setattr(model, name, value)
        model.head_set_ = heads_type.from_state(state, max_steps=model.max_steps or 0,
                                                n_jobs=model.n_jobs)
        return model

    @reads
    def to_state(self):
        """The fitted model as an :class:`eco.state.ModelState` (plain arrays, copies).

        Holds the active examples only: nothing of a removed one.
        """
        check_is_fitted(self)
        return ModelState(
            # the backend is where the heads run, not part of the model
            params={k: v for k, v in self.get_params().items() if k not in ("backend", "screening")},
            gamma_=float(self.gamma_),
            n_features_in_=int(self.n_features_in_), classes_=np.asarray(self.classes_),
            class_weight_=np.asarray(self.class_weight_, dtype=np.float64),
            feature_names_in_=(np.asarray(self.feature_names_in_)
                               if hasattr(self, "feature_names_in_") else None),
            **self.head_set_.export_state())

    @classmethod
    def from_state(cls, state):
        """A model holding `state` (an :class:`eco.state.ModelState`), bit for bit."""
        model = cls(**state.params)
        V.check_params(model)
        model.classes_ = state.classes_
        model.gamma_ = float(state.gamma_)
        model.class_weight_ = state.class_weight_
        model.n_features_in_ = int(state.n_features_in_)
        if state.feature_names_in_ is not None:
            model.feature_names_in_ = state.feature_names_in_
        model.head_set_ = HeadSet.from_state(state, max_steps=model.max_steps or 0,
                                             n_jobs=model.n_jobs)
        model.hyper_paths_ = {}
        return model

    def __sklearn_is_fitted__(self):
        return hasattr(self, "head_set_")

    def _per_head(self, fn):
        heads = self.head_set_
        values = [fn(h) for h in range(heads.n_heads)]
        return values[0] if len(values) == 1 else values

    @property
    @reads
    def ids_(self):
        self._require_fitted()
        return self.head_set_.slot_ids[self.head_set_.active_slots()]

    @property
    @reads
    def n_active_(self):
        self._require_fitted()
        return self.head_set_.n_active

    @property
    @reads
    def alpha_(self):
        self._require_fitted()
        a = self.head_set_.alphas()[:, self.head_set_.active_slots()]
        return a[0] if len(a) == 1 else a

    @property
    @reads
    def intercept_(self):
        self._require_fitted()
        return self.head_set_.biases()

    def _ids_in(self, code):
        heads = self.head_set_
        return self._per_head(lambda h: heads.slot_ids[np.flatnonzero(heads.sets(h) == code)])

    @property
    @reads
    def margin_(self):
        self._require_fitted()
        return self._ids_in(_SET_MARGIN)

    @property
    @reads
    def error_(self):
        self._require_fitted()
        return self._ids_in(_SET_ERROR)

    @property
    @reads
    def reserve_(self):
        self._require_fitted()
        return self._ids_in(_SET_RESERVE)

    @property
    @reads
    def support_ids_(self):
        self._require_fitted()
        heads = self.head_set_
        mask = np.zeros(heads.n_slots, dtype=bool)
        for h in range(heads.n_heads):
            sets = heads.sets(h)
            mask |= (sets == _SET_MARGIN) | (sets == _SET_ERROR)
        return heads.slot_ids[mask]

    def _require_fitted(self):
        if not hasattr(self, "head_set_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first.")
