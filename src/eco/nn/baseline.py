"""NR, naive retraining: the reference every unlearning method is measured against.

To unlearn D_f, NR trains the same network from scratch, with the same recipe
(:class:`eco.nn.training.TrainingConfig`, same seed, same epochs), on the
training data minus D_f, and predicts with its own softmax. It is exact by
definition and costs a full training per request.
"""

import time
from typing import Any, Callable, Optional

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from eco.exceptions import DuplicateIdError, InvalidInputError, UnknownIdError
from eco.nn.data import collect
from eco.nn.features import forward_batches
from eco.nn.training import TrainingConfig, train_network

__all__ = ["NaiveRetraining", "predict_proba"]


def predict_proba(network: torch.nn.Module, X: Any, *, batch_size: int = 256, device: Any = "auto") -> np.ndarray:
    """Softmax outputs of ``network`` on ``X`` (eval mode, the network given back untouched).

    Parameters
    ----------
    network : torch.nn.Module
        A classifier producing one logit per class.
    X : torch.Tensor, array-like, Dataset or DataLoader
        Inputs.
    batch_size : int, default=256
        Rows per forward pass.
    device : str or torch.device, default="auto"
        Where to run.

    Returns
    -------
    numpy.ndarray of shape (n_inputs, n_classes), float64
    """
    return forward_batches(network, X, lambda logits, n: torch.softmax(logits, dim=1), batch_size=batch_size, device=device)


class NaiveRetraining:
    """Unlearning by retraining the whole network from scratch.

    Parameters
    ----------
    network_factory : callable
        ``network_factory() -> torch.nn.Module``: a freshly initialised
        network. It must return the same initial weights on every call (seed
        it) so that NR is deterministic.
    config : TrainingConfig, optional
        The recipe, default ``TrainingConfig()``.
    batch_size : int, default=256
        Rows per forward pass at prediction.

    Attributes
    ----------
    network_ : torch.nn.Module
        The network trained on the current training data.
    ids_ : list
        Ids of the current training data.
    classes_ : numpy.ndarray
        Class labels; the network's output ``k`` is ``classes_[k]``.
    history_ : TrainingHistory
        The last training run (its ``wall_time_s`` is the cost of a request).
    """

    def __init__(self, network_factory: Callable[[], torch.nn.Module], config: Optional[TrainingConfig] = None, *,
                 batch_size: int = 256) -> None:
        if not callable(network_factory):
            raise InvalidInputError("network_factory must be callable () -> torch.nn.Module")
        self.network_factory = network_factory
        self.config = config if config is not None else TrainingConfig()
        self.batch_size = batch_size

    def fit(self, X: Any, y: Any = None, ids: Optional[Any] = None) -> "NaiveRetraining":
        """Train a fresh network on (X, y).

        Parameters
        ----------
        X : array-like, torch.Tensor, Dataset or DataLoader
            Inputs (see :mod:`eco.nn.data`); a dataset or loader may carry
            the labels as ``(x, y)`` items.
        y : array-like of shape (n_samples,), optional
            Labels (any values; they are encoded to class indices).
        ids : sequence of hashable, optional
            One id per row, default ``0 .. n_samples-1``.

        Returns
        -------
        self
        """
        inputs, labels = collect(X, y, need_labels=True)
        ids = list(range(inputs.shape[0])) if ids is None else [
            i.item() if isinstance(i, np.generic) else i for i in ids
        ]
        if len(ids) != inputs.shape[0]:
            raise InvalidInputError(f"got {len(ids)} ids for {inputs.shape[0]} rows of X")
        if len(set(ids)) != len(ids):
            raise DuplicateIdError("ids must be unique")
        classes, encoded = np.unique(labels, return_inverse=True)
        self._train(inputs, encoded, classes, ids)
        return self

    def _train(self, inputs, encoded, classes, ids):
        network = self.network_factory()
        history = train_network(network, inputs, encoded, self.config)
        self.network_, self.history_ = network, history
        self.classes_, self.ids_ = classes, list(ids)
        self._inputs, self._encoded = inputs, encoded

    def _keep_mask(self, ids, errors):
        if not hasattr(self, "network_"):
            raise NotFittedError("This NaiveRetraining is not fitted yet. Call 'fit' first.")
        if errors not in ("raise", "ignore"):
            raise InvalidInputError(f"errors must be 'raise' or 'ignore', got {errors!r}")
        forget = {i.item() if isinstance(i, np.generic) else i for i in np.atleast_1d(np.asarray(ids, dtype=object)).tolist()}
        unknown = forget - set(self.ids_)
        if unknown and errors == "raise":
            raise UnknownIdError(f"{len(unknown)} ids are not in the training data: {sorted(map(repr, unknown))[:10]}")
        return np.array([identifier not in forget for identifier in self.ids_])

    def unlearn(self, ids: Any, *, errors: str = "raise") -> float:
        """Retrain from scratch without ``ids``.

        Parameters
        ----------
        ids : sequence of hashable
            The ids to forget.
        errors : {"raise", "ignore"}, default="raise"
            What to do with ids not in the training data, as in
            :meth:`eco.nn.ECO.unlearn`.

        Returns
        -------
        float
            Wall-clock seconds of the retraining.
        """
        keep = self._keep_mask(ids, errors)
        start = time.perf_counter()
        self._train(
            self._inputs[keep],
            self._encoded[keep],
            self.classes_,
            [identifier for identifier, kept in zip(self.ids_, keep) if kept],
        )
        return time.perf_counter() - start

    def without(self, ids: Any, *, errors: str = "raise") -> "NaiveRetraining":
        """A new NR model trained from scratch without ``ids``; this one is unchanged.

        The new model's ``history_.wall_time_s`` is the cost of the request.
        """
        keep = self._keep_mask(ids, errors)
        other = NaiveRetraining(self.network_factory, self.config, batch_size=self.batch_size)
        other._train(
            self._inputs[keep],
            self._encoded[keep],
            self.classes_,
            [identifier for identifier, kept in zip(self.ids_, keep) if kept],
        )
        return other

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax outputs, one column per class of :attr:`classes_`."""
        if not hasattr(self, "network_"):
            raise NotFittedError("This NaiveRetraining is not fitted yet. Call 'fit' first.")
        return predict_proba(self.network_, X, batch_size=self.batch_size, device=self.config.device)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels."""
        probabilities = self.predict_proba(X)  # raises NotFittedError first
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X: Any, y: Any) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
