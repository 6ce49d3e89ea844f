"""What eco.nn accepts as data, turned into batches or arrays, in order.

Every entry point of :mod:`eco.nn` (``fit``, ``increment``, ``transform``,
``predict``, ``score``, NR) takes the same kinds of data:

- a ``torch.Tensor`` or anything ``numpy.asarray`` turns into a numeric
  array, the first axis indexing examples;
- a map-style ``torch.utils.data.Dataset`` yielding ``x`` or ``(x, y, ...)``,
  read in index order, so its row ``i`` is example ``i``;
- a ``torch.utils.data.DataLoader`` over such a dataset. Where the order of
  the rows matters (ids, predictions, features) the loader must read its
  dataset in order: a shuffling loader (or any sampler other than
  ``SequentialSampler``) is refused, since its rows would no longer line up
  with ids or with the caller's labels. ``score`` with labels from the
  loader itself does not depend on the order and accepts any loader.

The default ids of data are the row positions ``0 .. n-1``, for arrays,
datasets and loaders alike.
"""

from typing import Any, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

from eco.exceptions import InvalidInputError

__all__ = ["iterate_batches", "collect", "check_loader_order"]


def check_loader_order(loader: DataLoader, what: str = "data") -> None:
    """Refuse a loader that does not read its dataset in index order.

    Raises
    ------
    InvalidInputError
        If the loader shuffles, uses another sampler, or drops the last batch.
    """
    if isinstance(loader.dataset, IterableDataset):
        return  # an iterable dataset has no index order but its own
    if not isinstance(loader.sampler, SequentialSampler):
        raise InvalidInputError(
            f"{what}: the DataLoader reads its dataset with {type(loader.sampler).__name__}, "
            "not in order (shuffle=True?); rows would not line up with ids or labels. "
            "Pass a loader with shuffle=False, or the Dataset itself"
        )
    if loader.drop_last:
        raise InvalidInputError(f"{what}: the DataLoader has drop_last=True and would lose rows; pass drop_last=False")


def _split_item(batch: Any) -> Tuple[Any, Any]:
    # Datasets and loaders commonly yield (input, label, ...) tuples.
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise InvalidInputError("a batch from the data is empty")
        return batch[0], (batch[1] if len(batch) > 1 else None)
    if isinstance(batch, dict):
        raise InvalidInputError("batches given as dicts are not supported; yield x or (x, y) tuples")
    return batch, None


def _as_tensor(data: Any, what: str = "inputs") -> torch.Tensor:
    if isinstance(data, torch.Tensor):
        return data
    array = np.asarray(data)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInputError(f"{what} must be numeric, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(array))


def iterate_batches(data: Any, batch_size: int = 256, *, ordered: bool = True) -> Iterator[Tuple[torch.Tensor, Optional[Any]]]:
    """Yield ``(inputs, labels or None)`` batches from any supported data.

    Parameters
    ----------
    data : torch.Tensor, array-like, Dataset or DataLoader
        See the module docstring.
    batch_size : int, default=256
        Rows per batch for tensors, arrays and datasets (a loader keeps its own).
    ordered : bool, default=True
        Refuse a loader that does not read its dataset in order.
    """
    if not (isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1):
        raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(data, DataLoader):
        if ordered:
            check_loader_order(data)
        loader = data
    elif isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=int(batch_size), shuffle=False)
    else:
        tensor = _as_tensor(data)
        if tensor.dim() == 0:
            raise InvalidInputError("inputs must have a first axis indexing examples, got a scalar")
        for block in tensor.split(int(batch_size)):
            yield block, None
        return
    for batch in loader:
        inputs, labels = _split_item(batch)
        yield _as_tensor(inputs), labels


def _labels_array(labels: Any, what: str) -> np.ndarray:
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    array = np.asarray(labels)
    if array.ndim != 1:
        raise InvalidInputError(f"{what} must be 1-D, got shape {array.shape}")
    return array


def collect(data: Any, y: Any = None, *, need_labels: bool, ordered: bool = True,
            batch_size: int = 256) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """All rows of ``data`` as a NumPy array, with their labels.

    Labels come from ``y`` or from the data (a dataset or loader yielding
    ``(x, y)``), never both.

    Returns
    -------
    inputs : numpy.ndarray of shape (n, ...)
    labels : numpy.ndarray of shape (n,) or None
        None only when ``need_labels`` is False and no labels were found.

    Raises
    ------
    InvalidInputError
        Empty or non-numeric data, labels given twice or missing, a label
        count that differs from the row count, a loader out of order.
    """
    inputs, found = [], []
    for batch, labels in iterate_batches(data, batch_size, ordered=ordered):
        inputs.append(batch.detach().cpu().numpy())
        found.append(labels)
    if not inputs or sum(len(block) for block in inputs) == 0:
        raise InvalidInputError("no inputs (zero rows)")
    array = np.concatenate(inputs)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InvalidInputError(f"inputs must be numeric, got dtype {array.dtype}")
    from_data = [labels for labels in found if labels is not None]
    if from_data and y is not None:
        raise InvalidInputError("labels were given twice: as y and by the data's (x, y) items; give one")
    if from_data:
        if len(from_data) != len(found):
            raise InvalidInputError("some items of the data carry labels and others do not")
        labels = np.concatenate([_labels_array(block, "labels of the data") for block in from_data])
    elif y is not None:
        labels = _labels_array(y, "y")
    elif need_labels:
        raise InvalidInputError("labels are needed: pass y, or data whose items are (x, y)")
    else:
        labels = None
    if labels is not None and labels.shape[0] != array.shape[0]:
        raise InvalidInputError(f"got {labels.shape[0]} labels for {array.shape[0]} rows of inputs")
    return array, labels
