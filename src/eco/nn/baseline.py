"""NR, naive retraining: the reference every unlearning method is measured against.

To unlearn D_f, NR trains the same network from scratch, with the same recipe
(:class:`eco.nn.training.TrainingConfig`, same seed, same epochs), on the
training data minus D_f, and predicts with its own softmax. It is exact by
definition and costs a full training per request.
"""

import time

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from eco.exceptions import DuplicateIdError, InvalidInputError
from eco.nn.features import iterate_input_batches, resolve_device
from eco.nn.training import TrainingConfig, train_network

__all__ = ["NaiveRetraining", "predict_proba"]


def predict_proba(network, X, *, batch_size=256, device="auto"):
    """Softmax outputs of ``network`` on ``X``, in eval mode.

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
    device = resolve_device(device)
    network.to(device)
    parameter = next(network.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = network.training
    network.eval()
    blocks = []
    try:
        with torch.inference_mode():
            for inputs in iterate_input_batches(X, batch_size):
                logits = network(inputs.to(device=device, dtype=dtype))
                blocks.append(torch.softmax(logits, dim=1).to("cpu", torch.float64))
    finally:
        network.train(was_training)
    if not blocks:
        raise InvalidInputError("no inputs (zero rows)")
    return torch.cat(blocks).numpy()


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

    def __init__(self, network_factory, config=None, *, batch_size=256):
        if not callable(network_factory):
            raise InvalidInputError("network_factory must be callable () -> torch.nn.Module")
        self.network_factory = network_factory
        self.config = config if config is not None else TrainingConfig()
        self.batch_size = batch_size

    def fit(self, X, y, ids=None):
        """Train a fresh network on (X, y).

        Parameters
        ----------
        X : array-like or torch.Tensor of shape (n_samples, ...)
            Inputs.
        y : array-like of shape (n_samples,)
            Labels (any values; they are encoded to class indices).
        ids : sequence of hashable, optional
            One id per row, default ``0 .. n_samples-1``.

        Returns
        -------
        self
        """
        inputs = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != inputs.shape[0]:
            raise InvalidInputError(f"y must be 1-D with one label per row of X, got shape {labels.shape}")
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

    def unlearn(self, ids):
        """Retrain from scratch without ``ids``.

        Unknown ids are ignored, as in :meth:`eco.nn.ECO.unlearn`.

        Returns
        -------
        float
            Wall-clock seconds of the retraining.
        """
        if not hasattr(self, "network_"):
            raise NotFittedError("This NaiveRetraining is not fitted yet. Call 'fit' first.")
        forget = {i.item() if isinstance(i, np.generic) else i for i in np.atleast_1d(np.asarray(ids, dtype=object)).tolist()}
        keep = np.array([identifier not in forget for identifier in self.ids_])
        start = time.perf_counter()
        self._train(
            self._inputs[keep],
            self._encoded[keep],
            self.classes_,
            [identifier for identifier, kept in zip(self.ids_, keep) if kept],
        )
        return time.perf_counter() - start

    def predict_proba(self, X):
        """Softmax outputs, one column per class of :attr:`classes_`."""
        if not hasattr(self, "network_"):
            raise NotFittedError("This NaiveRetraining is not fitted yet. Call 'fit' first.")
        return predict_proba(self.network_, X, batch_size=self.batch_size, device=self.config.device)

    def predict(self, X):
        """Predicted class labels."""
        probabilities = self.predict_proba(X)  # raises NotFittedError first
        return self.classes_[probabilities.argmax(axis=1)]

    def score(self, X, y):
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
