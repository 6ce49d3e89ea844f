"""Batched feature extraction: run Phi over inputs and return a NumPy matrix.

The CP head works on float64 NumPy matrices; this module is the one place
that turns the output of a PyTorch feature extractor into one, and checks
that the extractor really produces one feature vector per input. Its
:func:`forward_batches` is the one batched inference loop of eco.nn (NR's
softmax uses it too), and :func:`untouched` the one place that runs a user's
module: eval mode, no gradients, every submodule's mode and the module's
device given back as they were.

Shape rule
----------
The output of the extractor for a batch of ``N`` inputs must be ``(N, D)``.
Trailing dimensions of size one are dropped first, so ``(N, D, 1, 1)`` (the
output of a global average pooling without ``Flatten``) is accepted as
``(N, D)``. Every other shape, for example a spatial map ``(N, C, H, W)``
with ``H * W > 1``, a 1-D output, or a different ``N``, raises
:class:`eco.exceptions.InvalidInputError` naming the shape: flattening a map
silently would usually hide a network cut at the wrong layer.
"""

import contextlib
import hashlib
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch

from eco.exceptions import InvalidInputError
from eco.nn.data import iterate_batches

__all__ = [
    "resolve_device",
    "extract_features",
    "iterate_input_batches",
    "features_as_matrix",
    "forward_batches",
    "untouched",
    "module_fingerprint",
]

DeviceLike = Union[str, torch.device, None]


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """Turn a device specification into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when it is available, else the CPU; anything
        else is passed to ``torch.device``.

    Returns
    -------
    torch.device

    Raises
    ------
    InvalidInputError
        An unknown device, or CUDA asked for where this torch has no CUDA device.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise InvalidInputError(f"unknown device {device!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            f"device {str(device)!r} asked for, but this torch sees no CUDA device "
            "(torch.cuda.is_available() is False); use cpu or auto"
        )
    return device


def iterate_input_batches(data: Any, batch_size: int = 256) -> Iterator[torch.Tensor]:
    """Yield batches of inputs (tensors) from any supported kind of data.

    See :mod:`eco.nn.data` for what is accepted; labels carried by the data
    are dropped, and a loader that does not read its dataset in order is
    refused.
    """
    for inputs, _ in iterate_batches(data, batch_size, ordered=True):
        yield inputs


def module_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters and buffers (names, dtypes, shapes, bytes).

    Two modules with the same fingerprint compute the same function in eval
    mode (for the same code); any optimizer step, fine-tuning or update of
    BatchNorm statistics changes it.
    """
    digest = hashlib.sha256()
    for name, tensor in module.state_dict(keep_vars=False).items():
        value = tensor.detach()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _module_device(module: torch.nn.Module) -> Union[torch.device, None]:
    """The one device of the module's tensors; None without tensors or when spread over several."""
    devices = {tensor.device for tensor in module.parameters()} | {tensor.device for tensor in module.buffers()}
    return devices.pop() if len(devices) == 1 else None


@contextlib.contextmanager
def untouched(module: torch.nn.Module, device: torch.device) -> Iterator[torch.nn.Module]:
    """Run ``module`` in eval mode on ``device``, then give it back as it was.

    The training flag of every submodule is recorded and restored one module
    at a time: ``Module.train(mode)`` on a container would reset every child
    to the container's flag (a user's sliced ``nn.Sequential`` in eval mode
    would come back with its BatchNorm and Dropout in training mode). A module
    moved to ``device`` is moved back to where it was; one spread over several
    devices by its user is run where it is. Gradients are off
    (``torch.inference_mode``), and eval mode keeps BatchNorm statistics fixed.
    """
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    home = _module_device(module)
    moved = home is not None and home != device
    try:
        if moved:
            module.to(device)
        module.eval()
        with torch.inference_mode():
            yield module
    finally:
        for submodule, mode in modes:
            submodule.training = mode  # not .train(mode): that recurses into children
        if moved:
            module.to(home)


def _module_dtype(module: torch.nn.Module) -> torch.dtype:
    for parameter in module.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return torch.float32


def forward_batches(
    module: torch.nn.Module,
    data: Any,
    transform: Callable[[torch.Tensor, int], torch.Tensor],
    *,
    batch_size: int = 256,
    device: DeviceLike = "auto",
) -> np.ndarray:
    """The one batched inference loop of eco.nn (features and NR's softmax).

    Parameters
    ----------
    module : torch.nn.Module
        The network, run through :func:`untouched`.
    data : torch.Tensor, array-like, Dataset or DataLoader
        Inputs, see :mod:`eco.nn.data` (in order).
    transform : callable
        ``transform(output, n_inputs) -> (n_inputs, k)`` tensor for one batch.
    batch_size : int, default=256
        Rows per forward pass (a loader keeps its own).
    device : str or torch.device, default="auto"
        Where to run.

    Returns
    -------
    numpy.ndarray of shape (n_inputs, k), float64, C-contiguous
    """
    device = resolve_device(device)
    blocks = []
    with untouched(module, device):
        dtype = _module_dtype(module)
        for inputs in iterate_input_batches(data, batch_size):
            if inputs.shape[0] == 0:
                continue
            inputs = inputs.to(device=device, dtype=dtype, non_blocking=True)
            try:
                output = module(inputs)
            except (RuntimeError, ValueError) as error:
                raise InvalidInputError(
                    f"the network failed on inputs of shape {tuple(inputs.shape)}: {error}"
                ) from error
            blocks.append(transform(output, inputs.shape[0]).to("cpu", torch.float64))
    if not blocks:
        raise InvalidInputError("no inputs (zero rows)")
    widths = {block.shape[1] for block in blocks}
    if len(widths) > 1:
        raise InvalidInputError(f"the network returned different widths across batches: {sorted(widths)}")
    return np.ascontiguousarray(torch.cat(blocks).numpy())


def features_as_matrix(output: torch.Tensor, n_inputs: int) -> torch.Tensor:
    """Check the output of an extractor for one batch and make it ``(N, D)``.

    Parameters
    ----------
    output : torch.Tensor
        What the extractor returned for a batch of ``n_inputs`` inputs.
    n_inputs : int
        Number of inputs in the batch.

    Returns
    -------
    torch.Tensor
        The output as a 2-D tensor, see the shape rule of this module.

    Raises
    ------
    InvalidInputError
        If the output is not a tensor or not 2-D after dropping trailing
        dimensions of size one, or has a different number of rows.
    """
    if not isinstance(output, torch.Tensor):
        raise InvalidInputError(
            f"the feature extractor must return a tensor, got {type(output).__name__}"
        )
    shape = tuple(output.shape)
    matrix = output
    while matrix.dim() > 2 and matrix.shape[-1] == 1:
        matrix = matrix.squeeze(-1)
    if matrix.dim() != 2 or matrix.shape[0] != n_inputs:
        raise InvalidInputError(
            f"the feature extractor returned shape {shape} for {n_inputs} inputs; expected "
            f"({n_inputs}, n_features) (trailing size-one dimensions are dropped, nothing else "
            "is flattened: add nn.Flatten() to the extractor if a flat map is meant)"
        )
    return matrix


def extract_features(
    feature_extractor: torch.nn.Module, data: Any, *, batch_size: int = 256, device: DeviceLike = "auto"
) -> np.ndarray:
    """Compute the features of ``data`` with ``feature_extractor``.

    Parameters
    ----------
    feature_extractor : torch.nn.Module
        Phi, run through :func:`untouched`: eval mode, no gradients, and
        given back with every submodule's mode and its device as they were.
    data : torch.Tensor, array-like, torch.utils.data.Dataset or DataLoader
        Inputs; see :func:`iterate_input_batches`.
    batch_size : int, default=256
        Rows per forward pass (not used for a ``DataLoader``).
    device : str or torch.device, default="auto"
        Where to run; ``"auto"`` is CUDA when available, else the CPU.

    Returns
    -------
    numpy.ndarray of shape (n_inputs, n_features), dtype float64
        The features, C-contiguous.

    Raises
    ------
    InvalidInputError
        If the data is empty or not numeric, the output of the extractor is
        not one feature vector per input (see the module's shape rule), or
        the features are not finite.
    """
    if not isinstance(feature_extractor, torch.nn.Module):
        raise InvalidInputError(
            f"feature_extractor must be a torch.nn.Module, got {type(feature_extractor).__name__}"
        )
    features = forward_batches(feature_extractor, data, features_as_matrix, batch_size=batch_size, device=device)
    if not np.isfinite(features).all():
        raise InvalidInputError("the feature extractor returned NaN or infinite features")
    return features
