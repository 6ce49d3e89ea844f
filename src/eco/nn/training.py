"""Deterministic training of a classification network.

One recipe, :class:`TrainingConfig`, is used both to train the network whose
feature extractor becomes Phi and to retrain it from scratch in the naive
retraining baseline, so that both see exactly the same procedure.
"""

import contextlib
import dataclasses
import random
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch import nn

from eco.exceptions import InvalidInputError
from eco.nn.features import resolve_device

__all__ = ["TrainingConfig", "TrainingHistory", "train_network", "seed_everything", "deterministic"]


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The training recipe.

    Parameters
    ----------
    epochs : int, default=15
        Passes over the training data.
    lr : float, default=1e-3
        Learning rate.
    batch_size : int, default=64
        Examples per optimisation step.
    weight_decay : float, default=0.0
        L2 penalty passed to the optimiser.
    optimizer : {"adam", "sgd"}, default="adam"
        Optimiser.
    momentum : float, default=0.9
        Momentum of SGD (ignored by Adam).
    seed : int, default=0
        Seed of every random choice of training (batch order, dropout).
    device : str or torch.device, default="auto"
        ``"auto"`` trains on CUDA when available, else on the CPU.
    progress : bool, default=False
        Show a tqdm progress bar over the epochs.
    """

    epochs: int = 15
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    seed: int = 0
    device: object = "auto"
    progress: bool = False

    def __post_init__(self):
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 0):
            raise InvalidInputError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise InvalidInputError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise InvalidInputError(f"lr must be a positive number, got {self.lr!r}")
        if not (np.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidInputError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise InvalidInputError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")

    def replace(self, **changes: Any) -> "TrainingConfig":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass
class TrainingHistory:
    """What :func:`train_network` did.

    Attributes
    ----------
    losses : list of float
        Mean training loss of each epoch.
    wall_time_s : float
        Wall-clock seconds of the whole training.
    n_examples : int
        Number of training examples.
    """

    losses: list
    wall_time_s: float
    n_examples: int


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators.

    Parameters
    ----------
    seed : int
        The seed.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Turn on torch's deterministic algorithms for the duration of a block.

    The previous setting is restored afterwards, so training does not leave a
    global switch flipped in the caller's process. ``warn_only=True`` because
    a few CUDA kernels have no deterministic version; torch then warns instead
    of failing.
    """
    was_enabled = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_deterministic = torch.backends.cudnn.deterministic
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_enabled, warn_only=was_warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = cudnn_benchmark


def _as_training_tensors(X, y):
    X = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if X.shape[0] != y.shape[0]:
        raise InvalidInputError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels")
    if y.dim() != 1:
        raise InvalidInputError(f"y must be 1-D, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point:
        if not torch.all(y == torch.round(y)):
            raise InvalidInputError("y must hold integer class indices")
    elif y.dtype == torch.bool or y.dtype.is_complex:
        raise InvalidInputError(f"y must hold integer class indices, got dtype {y.dtype}")
    if not X.dtype.is_floating_point:
        X = X.to(torch.float32)
    if not torch.isfinite(X).all():
        raise InvalidInputError("X contains NaN or infinite values")
    return X, y.to(torch.int64)


def _make_optimizer(parameters, config):
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _dataset_batches(dataset, config, generator):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=True, generator=generator
    )
    for batch in loader:
        yield batch[0], batch[1]


def _epoch(network, batches, optimizer, loss_function, device):
    """One pass over the batches; the mean loss."""
    # Summed on the device and read once per epoch: a .item() per step
    # would synchronise a GPU at every step.
    total, count = torch.zeros((), device=device), 0
    for inputs, labels in batches:
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(network(inputs), labels)
        loss.backward()
        optimizer.step()
        total += loss.detach() * labels.shape[0]
        count += labels.shape[0]
    return total.item() / max(count, 1)


def train_network(network: nn.Module, X: Any, y: Any = None, config: Optional["TrainingConfig"] = None,
                  **overrides: Any) -> "TrainingHistory":
    """Train ``network`` in place with softmax cross-entropy.

    Parameters
    ----------
    network : torch.nn.Module
        A network whose output is one logit per class.
    X : array-like, torch.Tensor or torch.utils.data.Dataset
        Training inputs; a ``Dataset`` must yield ``(input, label)`` pairs
        and then ``y`` must be None.
    y : array-like of int, optional
        Class indices in ``[0, n_outputs)``.
    config : TrainingConfig, optional
        The recipe; default ``TrainingConfig()``.
    **overrides
        Fields of the recipe to change (for example ``epochs=3``).

    Returns
    -------
    TrainingHistory
        Losses per epoch and the wall time.

    Notes
    -----
    The run is deterministic for a given ``config.seed``: the global
    generators are seeded, torch's deterministic algorithms are on during
    training, and the batch order comes from a dedicated ``torch.Generator``.
    Arrays and tensors are batched by indexing with a seeded permutation
    (cheaper than a ``DataLoader`` for data already in memory); a
    ``Dataset`` goes through a ``DataLoader`` driven by the same generator.
    The network is left in eval mode.
    """
    from tqdm.auto import tqdm

    config = config if config is not None else TrainingConfig()
    if overrides:
        config = config.replace(**overrides)
    device = resolve_device(config.device)
    is_dataset = isinstance(X, torch.utils.data.Dataset)
    if is_dataset:
        if y is not None:
            raise InvalidInputError("give y only with array inputs; a Dataset yields its own labels")
        n_examples = len(X)
    else:
        if y is None:
            raise InvalidInputError("y is required when X is an array or a tensor")
        X, y = _as_training_tensors(X, y)
        n_examples = X.shape[0]
        n_outputs = getattr(network, "n_classes", None)
        if n_examples and (y.min() < 0 or (n_outputs is not None and y.max() >= n_outputs)):
            raise InvalidInputError(
                f"labels must be class indices in [0, {n_outputs}), got range "
                f"[{int(y.min())}, {int(y.max())}]"
            )
    if n_examples == 0:
        raise InvalidInputError("cannot train on zero examples")

    start = time.perf_counter()
    seed_everything(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network.to(device)
    if not is_dataset:
        parameter = next(network.parameters(), None)
        dtype = parameter.dtype if parameter is not None else torch.float32
        X = X.to(device=device, dtype=dtype)
        y = y.to(device)
    optimizer = _make_optimizer(network.parameters(), config)
    loss_function = nn.CrossEntropyLoss()
    losses = []
    with deterministic():
        network.train()
        epochs = tqdm(range(config.epochs), desc="training", unit="epoch", disable=not config.progress, leave=False)
        for _ in epochs:
            if is_dataset:
                batches = _dataset_batches(X, config, generator)
            else:
                order = torch.randperm(n_examples, generator=generator).to(device)
                batches = (
                    (X[index], y[index]) for index in order.split(config.batch_size)
                )
            losses.append(_epoch(network, batches, optimizer, loss_function, device))
            epochs.set_postfix(loss=f"{losses[-1]:.4f}")
        network.eval()
    return TrainingHistory(losses=losses, wall_time_s=time.perf_counter() - start, n_examples=n_examples)
