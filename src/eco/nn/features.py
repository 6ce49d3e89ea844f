"""Batched feature extraction: run Phi over inputs and return a NumPy matrix.

The CP head works on float64 NumPy matrices; this module is the one place
that turns the output of a PyTorch feature extractor into one, and checks
that the extractor really produces one feature vector per input.

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

import numpy as np
import torch

from eco.exceptions import InvalidInputError

__all__ = ["resolve_device", "extract_features", "iterate_input_batches", "features_as_matrix"]


def resolve_device(device="auto"):
    """Turn a device specification into a ``torch.device``.

    Parameters
    ----------
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when it is available, else the CPU; anything
        else is passed to ``torch.device``.

    Returns
    -------
    torch.device
    """
    if isinstance(device, torch.device):
        return device
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"unknown device {device!r}: {error}") from None


def _first_element(batch):
    # Datasets and loaders commonly yield (input, label, ...) tuples; the
    # extractor only needs the input.
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise InvalidInputError("a batch from the data loader is empty")
        return batch[0]
    if isinstance(batch, dict):
        raise InvalidInputError("batches given as dicts are not supported; yield (input, ...) tuples")
    return batch


def _as_tensor(data):
    if isinstance(data, torch.Tensor):
        return data
    array = np.asarray(data)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInputError(f"inputs must be numeric, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def iterate_input_batches(data, batch_size=256):
    """Yield batches of inputs (tensors) from any supported kind of data.

    Parameters
    ----------
    data : torch.Tensor, array-like, torch.utils.data.Dataset or DataLoader
        Inputs, the first axis indexing examples. A ``Dataset`` or a
        ``DataLoader`` may yield ``(input, label, ...)`` tuples; only the
        first element is used. A ``DataLoader`` is iterated as it is, so its
        own batch size and order are kept; a ``Dataset`` is read in order.
    batch_size : int, default=256
        Rows per batch for tensors, arrays and datasets.

    Yields
    ------
    torch.Tensor
        One batch of inputs, on the CPU or wherever the data lives.
    """
    if not (isinstance(batch_size, (int, np.integer)) and batch_size >= 1):
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(data, torch.utils.data.DataLoader):
        for batch in data:
            yield _as_tensor(_first_element(batch))
        return
    if isinstance(data, torch.utils.data.Dataset):
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
        for batch in loader:
            yield _as_tensor(_first_element(batch))
        return
    tensor = _as_tensor(data)
    if tensor.dim() == 0:
        raise InvalidInputError("inputs must have a first axis indexing examples, got a scalar")
    yield from tensor.split(batch_size)


def features_as_matrix(output, n_inputs):
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


def _module_dtype(module):
    for parameter in module.parameters():
        if parameter.dtype.is_floating_point:
            return parameter.dtype
    return torch.float32


def extract_features(feature_extractor, data, *, batch_size=256, device="auto"):
    """Compute the features of ``data`` with ``feature_extractor``.

    Parameters
    ----------
    feature_extractor : torch.nn.Module
        Phi. It is moved to ``device`` (in place, as ``Module.to`` does) and
        run in eval mode under ``torch.inference_mode()``; its previous
        training mode is restored afterwards.
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
    device = resolve_device(device)
    feature_extractor.to(device)
    dtype = _module_dtype(feature_extractor)
    was_training = feature_extractor.training
    blocks = []
    feature_extractor.eval()
    try:
        with torch.inference_mode():
            for inputs in iterate_input_batches(data, batch_size):
                if inputs.shape[0] == 0:
                    continue
                if inputs.dtype != dtype:  # e.g. uint8 images or float64 arrays
                    inputs = inputs.to(dtype)
                inputs = inputs.to(device, non_blocking=True)
                try:
                    output = feature_extractor(inputs)
                except (RuntimeError, ValueError) as error:
                    raise InvalidInputError(
                        f"the feature extractor failed on inputs of shape {tuple(inputs.shape)}: {error}"
                    ) from error
                blocks.append(features_as_matrix(output, inputs.shape[0]).to("cpu", torch.float64))
    finally:
        feature_extractor.train(was_training)
    if not blocks:
        raise InvalidInputError("no inputs to extract features from (zero rows)")
    widths = {block.shape[1] for block in blocks}
    if len(widths) > 1:
        raise InvalidInputError(f"the feature extractor returned different widths across batches: {sorted(widths)}")
    features = torch.cat(blocks).numpy()
    if not np.isfinite(features).all():
        raise InvalidInputError("the feature extractor returned NaN or infinite features")
    return np.ascontiguousarray(features)
