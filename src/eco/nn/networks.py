"""Small convolutional networks for the ECO experiments.

Each network is split the way the ECO model needs it: ``features`` is the
feature extractor Phi (every layer but the last linear one) and ``classifier``
is that last linear layer. ``forward`` is ``classifier(features(x))``, so the
whole network trains with an ordinary softmax cross-entropy loss and Phi can
then be cut off with :func:`feature_extractor`.

The networks accept images either as flat rows (``(N, H*W)``, the layout of
:func:`eco.datasets.load_digits` and :func:`eco.datasets.load_mnist`) or as
``(N, H, W)`` / ``(N, 1, H, W)`` tensors; the first layer reshapes them.
"""

from typing import Any, Optional

import torch
from torch import nn

__all__ = [
    "ImageReshape",
    "DigitsCNN",
    "MnistCNN",
    "make_network",
    "feature_extractor",
    "NETWORKS",
]


class ImageReshape(nn.Module):
    """Reshape a batch of one-channel images to ``(N, 1, height, width)``.

    Parameters
    ----------
    height, width : int
        Image size in pixels.

    Notes
    -----
    Accepted input shapes are ``(N, height*width)``, ``(N, height, width)``
    and ``(N, 1, height, width)``; anything else raises ``ValueError`` naming
    the shape, since a silent reshape of the wrong data would train on noise.
    """

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height = int(height)
        self.width = int(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_pixels = self.height * self.width
        image_shape = (self.height, self.width)
        if x.dim() == 2 and x.shape[1] == n_pixels:
            return x.reshape(x.shape[0], 1, self.height, self.width)
        if x.dim() == 3 and tuple(x.shape[1:]) == image_shape:
            return x.unsqueeze(1)
        if x.dim() == 4 and tuple(x.shape[1:]) == (1, *image_shape):
            return x
        raise ValueError(
            f"expected images of shape (N, {n_pixels}), (N, {self.height}, {self.width}) "
            f"or (N, 1, {self.height}, {self.width}); got {tuple(x.shape)}"
        )

    def extra_repr(self) -> str:
        return f"height={self.height}, width={self.width}"


class _SplitNetwork(nn.Module):
    """A network made of a feature extractor and a final linear classifier."""

    def __init__(self, features: nn.Module, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    @property
    def n_features(self) -> int:
        """Dimension of the feature vectors that ``features`` produces."""
        return self.classifier.in_features

    @property
    def n_classes(self) -> int:
        """Number of outputs (classes) of ``classifier``."""
        return self.classifier.out_features


class DigitsCNN(_SplitNetwork):
    """A small CNN for the 8x8 digits of scikit-learn.

    Two 3x3 convolutions (8 and 16 channels), one 2x2 max-pooling and a
    hidden layer of ``n_features`` units form Phi; a linear layer maps them
    to ``n_classes`` logits. Small enough to train in about a second on a CPU,
    which keeps the naive-retraining baseline affordable in the experiment.

    Parameters
    ----------
    n_classes : int, default=10
        Number of outputs.
    n_features : int, default=64
        Dimension of the feature vectors of Phi.

    Examples
    --------
    >>> import torch
    >>> net = DigitsCNN()
    >>> net(torch.zeros(5, 64)).shape
    torch.Size([5, 10])
    >>> net.features(torch.zeros(5, 1, 8, 8)).shape
    torch.Size([5, 64])
    """

    def __init__(self, n_classes: int = 10, n_features: int = 64) -> None:
        features = nn.Sequential(
            ImageReshape(8, 8),
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, n_features),
            nn.ReLU(),
        )
        super().__init__(features, nn.Linear(n_features, n_classes))


class MnistCNN(_SplitNetwork):
    """A small CNN for 28x28 MNIST digits.

    Two blocks of 3x3 convolution + ReLU + 2x2 max-pooling (16 and 32
    channels) and a hidden layer of ``n_features`` units form Phi; a linear
    layer maps them to ``n_classes`` logits.

    Parameters
    ----------
    n_classes : int, default=10
        Number of outputs.
    n_features : int, default=128
        Dimension of the feature vectors of Phi.

    Examples
    --------
    >>> import torch
    >>> net = MnistCNN()
    >>> net(torch.zeros(2, 784)).shape
    torch.Size([2, 10])
    """

    def __init__(self, n_classes: int = 10, n_features: int = 128) -> None:
        features = nn.Sequential(
            ImageReshape(28, 28),
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14x14 -> 7x7
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, n_features),
            nn.ReLU(),
        )
        super().__init__(features, nn.Linear(n_features, n_classes))


#: Network class for each dataset name that the experiment knows.
NETWORKS = {"digits": DigitsCNN, "mnist": MnistCNN}


def make_network(name: str, *, n_classes: int = 10, seed: Optional[int] = None, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised network for a dataset.

    Parameters
    ----------
    name : {"digits", "mnist"}
        Which network.
    n_classes : int, default=10
        Number of outputs.
    seed : int or None, default=None
        When given, the weights are initialised from a private generator
        seeded with it, so the same seed gives the same initial network (the
        global torch RNG state is restored afterwards).
    **kwargs
        Passed to the network class (for example ``n_features``).

    Returns
    -------
    torch.nn.Module
        A :class:`DigitsCNN` or :class:`MnistCNN` in training mode.
    """
    try:
        network_class = NETWORKS[name]
    except KeyError:
        raise ValueError(f"unknown network {name!r}; expected one of {sorted(NETWORKS)}") from None
    if seed is None:
        return network_class(n_classes=n_classes, **kwargs)
    # fork_rng keeps the caller's global RNG stream untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return network_class(n_classes=n_classes, **kwargs)


def feature_extractor(network: nn.Module) -> nn.Module:
    """Return Phi, the part of ``network`` before its last linear layer.

    Parameters
    ----------
    network : torch.nn.Module
        A network with a ``features`` attribute (as the networks of this
        module have), or an ``nn.Sequential`` whose last layer is
        ``nn.Linear``.

    Returns
    -------
    torch.nn.Module
        A module sharing its parameters with ``network`` (no copy).
    """
    features = getattr(network, "features", None)
    if isinstance(features, nn.Module):
        return features
    if isinstance(network, nn.Sequential) and len(network) > 1 and isinstance(network[-1], nn.Linear):
        return network[:-1]
    raise TypeError(
        f"cannot find the feature extractor of {type(network).__name__}: expected a "
        "'features' submodule or an nn.Sequential ending in nn.Linear"
    )
