"""Data sets for eco: embedded digits and MNIST from IDX files.

Nothing here downloads anything.

- :func:`load_digits` returns scikit-learn's embedded 8x8 digits (1,797 images).
- :func:`read_idx` and :func:`write_idx` read and write the IDX format in which
  MNIST is distributed, plain or gzip-compressed, validating every byte.
- :func:`load_mnist` reads an MNIST image/label pair from a directory the user
  names.
- :func:`default_mnist_dir` reads the ``ECO_MNIST_DIR`` environment variable.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), then one big-endian unsigned 32-bit size per dimension, then
the values in C order, big-endian.
"""

import gzip
import math
import numbers
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from .exceptions import DataFormatError, InvalidInputError

__all__ = [
    "load_digits",
    "read_idx",
    "write_idx",
    "load_mnist",
    "default_mnist_dir",
]

# IDX type code -> big-endian NumPy dtype of the stored values.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (kind, itemsize) of a NumPy dtype -> IDX type code, for writing.
_IDX_CODES = {(dt.kind, dt.itemsize): code for code, dt in _IDX_DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MNIST_KINDS = ("t10k", "train")


def load_digits(*, scale=True):
    """Load scikit-learn's embedded handwritten digits (no download).

    Parameters
    ----------
    scale : bool, default=True
        If True, divide the pixel values (integers 0 to 16) by 16 so that they
        lie in [0, 1].

    Returns
    -------
    X : ndarray of shape (1797, 64), dtype float64
        One flattened 8x8 image per row.
    y : ndarray of shape (1797,), dtype int64
        The digit, 0 to 9, of each image.

    Examples
    --------
    >>> from eco.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, float(X.max()), y.dtype.name
    ((1797, 64), 1.0, 'int64')
    """
    from sklearn.datasets import load_digits as _sk_load_digits

    X, y = _sk_load_digits(return_X_y=True)
    X = np.ascontiguousarray(X, dtype=np.float64)
    if scale:
        X /= 16.0
    return X, np.ascontiguousarray(y, dtype=np.int64)


def read_idx(path):
    """Read an IDX file, plain or gzip-compressed, into a NumPy array.

    Compression is detected from the gzip magic bytes, not from the file name.
    The header and the payload size are checked against each other before any
    array is built. Memory is bounded by the size the header declares: a gzip
    stream is decompressed in 1 MiB pieces into a buffer of that size, a
    declared size beyond what the compressed file can hold (deflate expands
    at most about 1032:1) is refused before decompressing, and bytes after the
    payload are counted, not kept. Only regular files are read: a FIFO, a
    device (``/dev/zero``) or a symbolic link to one is refused without
    blocking.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.

    Returns
    -------
    array : ndarray
        A writable array in native byte order with the shape stored in the
        header and the dtype given by its type code: uint8 (0x08), int8
        (0x09), int16 (0x0B), int32 (0x0C), float32 (0x0D) or float64 (0x0E).

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    eco.exceptions.DataFormatError
        If the file is not valid IDX: a corrupt gzip stream, a header that is
        too short, a magic number that does not start with two zero bytes, an
        unknown type code, a payload shorter than the header declares
        (truncated) or longer (trailing bytes), or a path that is not a
        regular file. The message names the file and the problem.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from eco.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "a-idx2-ubyte.gz")
    >>> write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(path)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    return _read_idx(Path(path))


# Deflate expands at most about 1032:1, so a gzip file of n bytes cannot hold
# more than this many times n bytes of payload: a larger declared shape is a
# truncated (or hostile) file, refused before anything is decompressed.
_MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 20
# Trailing bytes after the payload are counted for the message, not kept;
# past this many the count stops (a gzip bomb behind a valid payload).
_MAX_TRAILING_COUNT = 64 << 20


def _open_data_file(path):
    """Open a regular file for reading; refuse devices, FIFOs and sockets without blocking."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # FileNotFoundError names the path
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataFormatError(f"{path}: not a regular file (a device, FIFO or socket); refusing to read it")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return handle, info.st_size


class _GzipChunks:
    """Decompress a gzip file (one or more members) in bounded pieces."""

    def __init__(self, handle, path):
        self._handle, self._path = handle, path
        self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes not yet given to zlib

    def read_some(self, limit):
        """At most `limit` decompressed bytes; b"" at the end of the data."""
        while True:
            if len(self._pending) < 2:
                self._pending += self._handle.read(_CHUNK)
            if self._decompressor.eof:
                if not self._pending:
                    return b""
                if self._pending[:2] == _GZIP_MAGIC:
                    self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif not self._pending.strip(b"\0"):
                    self._pending = b""  # zero padding after the last member, as gzip allows
                    continue
                else:
                    raise DataFormatError(f"{self._path}: corrupt gzip stream (garbage after its end)")
            if not self._pending:
                raise DataFormatError(f"{self._path}: corrupt gzip stream (truncated: it ends before its end marker)")
            try:
                out = self._decompressor.decompress(self._pending, limit)
            except zlib.error as exc:
                raise DataFormatError(f"{self._path}: corrupt gzip stream ({exc})") from exc
            done = self._decompressor.eof
            self._pending = self._decompressor.unused_data if done else self._decompressor.unconsumed_tail
            if out:
                return out


class _PlainChunks:
    def __init__(self, handle):
        self._handle = handle

    def read_some(self, limit):
        return self._handle.read(min(limit, _CHUNK))


def _read_up_to(chunks, n):
    """Up to `n` bytes from `chunks` (fewer only at the end of the data)."""
    out = bytearray()
    while len(out) < n:
        piece = chunks.read_some(n - len(out))
        if not piece:
            break
        out += piece
    return bytes(out)


def _read_idx(path, check=None):
    """Read an IDX file, every resource bounded by its header before it is used.

    `check(shape, dtype)` may refuse the header (by raising) before the
    payload is read.
    """
    handle, size = _open_data_file(path)
    with handle:
        compressed = handle.read(2) == _GZIP_MAGIC
        handle.seek(0)
        chunks = _GzipChunks(handle, path) if compressed else _PlainChunks(handle)
        shape, dtype, header_len = _read_idx_header(chunks, path)
        expected = math.prod(shape) * dtype.itemsize
        if check is not None:
            check(shape, dtype)
        if compressed and expected > _MAX_DEFLATE_RATIO * size + _CHUNK:
            raise DataFormatError(
                f"{path}: truncated IDX payload: the header declares shape {shape} of "
                f"{dtype.name} ({expected} bytes), more than a gzip file of {size} bytes can hold"
            )
        if not compressed and size - header_len < expected:
            actual = size - header_len
            raise DataFormatError(
                f"{path}: truncated IDX payload: the header declares shape {shape} of "
                f"{dtype.name} ({expected} bytes), the file holds {actual} bytes after the header"
            )
        payload = np.empty(expected, dtype=np.uint8)
        filled = 0
        while filled < expected:
            piece = chunks.read_some(min(expected - filled, _CHUNK))
            if not piece:
                break
            payload[filled:filled + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            filled += len(piece)
        if filled < expected:
            raise DataFormatError(
                f"{path}: truncated IDX payload: the header declares shape {shape} of "
                f"{dtype.name} ({expected} bytes), the file holds {filled} bytes after the header"
            )
        trailing = _count_trailing(chunks)
    if trailing:
        more = "more than " if trailing > _MAX_TRAILING_COUNT else ""
        raise DataFormatError(
            f"{path}: {more}{trailing} trailing bytes after the IDX payload of shape "
            f"{shape} of {dtype.name} ({expected} bytes)"
        )
    native = dtype.newbyteorder("=")
    return payload.view(dtype).astype(native, copy=False).reshape(shape) if expected else np.empty(shape, dtype=native)


def _count_trailing(chunks):
    """Bytes left after the payload, counted (not kept) up to a bound."""
    count = 0
    while count <= _MAX_TRAILING_COUNT:
        piece = chunks.read_some(_CHUNK)
        if not piece:
            break
        count += len(piece)
    return count


def _read_idx_header(chunks, path):
    """(shape, big-endian dtype, header length) from the start of an IDX stream."""
    data = _read_up_to(chunks, 4)
    if len(data) < 4:
        raise DataFormatError(
            f"{path}: truncated IDX header: {len(data)} bytes, the magic number needs 4"
        )
    if data[0] != 0 or data[1] != 0:
        raise DataFormatError(
            f"{path}: wrong IDX magic number 0x{data[:4].hex()}: "
            "it must start with two zero bytes"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataFormatError(f"{path}: unknown IDX dtype code 0x{code:02X} (known: {known})")
    header_len = 4 + 4 * ndim
    sizes = _read_up_to(chunks, 4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataFormatError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} "
            f"header bytes, the file holds {4 + len(sizes)}"
        )
    return struct.unpack(f">{ndim}I", sizes), _IDX_DTYPES[code], header_len


def write_idx(path, array):
    """Write an array to an IDX file, gzip-compressed when `path` ends in ``.gz``.

    The inverse of :func:`read_idx`.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; it is replaced if it exists. A name ending in
        ``.gz`` gives a gzip-compressed file (with a zero timestamp, so the
        same array always gives the same bytes).
    array : array_like
        Values of dtype uint8, int8, int16, int32, float32 or float64 (in any
        byte order), with at most 255 dimensions of fewer than 2**32 entries
        each.

    Raises
    ------
    eco.exceptions.InvalidInputError
        If the dtype has no IDX type code (for example int64, bool or
        complex), or the shape cannot be stored in an IDX header.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from eco.datasets import read_idx, write_idx
    >>> path = os.path.join(tempfile.mkdtemp(), "b-idx1-float")
    >>> write_idx(path, np.array([0.5, -1.0]))
    >>> read_idx(path)
    array([ 0.5, -1. ])
    """
    arr = np.asarray(array)
    code = _IDX_CODES.get((arr.dtype.kind, arr.dtype.itemsize))
    if code is None:
        raise InvalidInputError(
            f"write_idx: dtype {arr.dtype} has no IDX type code; use one of "
            "uint8, int8, int16, int32, float32, float64"
        )
    if arr.ndim > 255:
        raise InvalidInputError(f"write_idx: {arr.ndim} dimensions, IDX stores at most 255")
    if any(size >= 2**32 for size in arr.shape):
        raise InvalidInputError(f"write_idx: shape {arr.shape} has a size of 2**32 or more")
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload = np.ascontiguousarray(arr, dtype=_IDX_DTYPES[code]).tobytes()
    data = header + payload
    path = Path(path)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(data)


def _mnist_file(data_dir, stem):
    """The existing file ``stem.gz`` or ``stem`` in `data_dir`, or None."""
    for name in (stem + ".gz", stem):
        candidate = data_dir / name
        # exists(), not is_file(): a FIFO or device under the name is found
        # and then refused by the reader, rather than reported missing
        if candidate.exists() and not candidate.is_dir():
            return candidate
    return None


def _mnist_files(data_dir, kind):
    """(images path or None, labels path or None) for an MNIST `kind` in `data_dir`."""
    if kind not in _MNIST_KINDS:
        raise InvalidInputError(f"kind must be one of {_MNIST_KINDS}, got {kind!r}")
    return (
        _mnist_file(data_dir, f"{kind}-images-idx3-ubyte"),
        _mnist_file(data_dir, f"{kind}-labels-idx1-ubyte"),
    )


def _label_header_check(path):
    def check(shape, dtype):
        if len(shape) != 1:
            raise DataFormatError(f"{path}: expected a 1-D label array, got shape {shape}")
        if dtype.kind not in "iu":
            raise DataFormatError(f"{path}: expected integer labels, got {dtype.newbyteorder('=')}")
    return check


def _image_header_check(path, labels_path, n_labels):
    def check(shape, dtype):
        if len(shape) != 3:
            raise DataFormatError(
                f"{path}: expected a 3-D image array (count, rows, cols), got shape {shape}"
            )
        if dtype != np.dtype(">u1"):
            raise DataFormatError(f"{path}: expected uint8 pixels, got {dtype.newbyteorder('=')}")
        if shape[0] != n_labels:
            raise DataFormatError(
                f"image/label count mismatch: {path} holds {shape[0]} images "
                f"but {labels_path} holds {n_labels} labels"
            )
    return check


def _check_count(name, value, low, high=None):
    """Validate an integer parameter in [low, high]; return it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInputError(f"{name} must be {bound}, got {value}")
    return value


def load_mnist(data_dir=None, *, n=None, kind="t10k"):
    """Read MNIST images and labels from IDX files in a directory (no download).

    The directory must hold ``{kind}-images-idx3-ubyte`` and
    ``{kind}-labels-idx1-ubyte``, each either plain or gzip-compressed with a
    ``.gz`` suffix (the ``.gz`` name is used when both exist).

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        The directory holding the IDX files; default the directory named by
        the ``ECO_MNIST_DIR`` environment variable (see
        :func:`default_mnist_dir`).
    n : int or None, default=None
        Return only the first `n` examples (1 <= n <= the number in the
        files); None returns all of them.
    kind : {"t10k", "train"}, default="t10k"
        Which file pair to read: the 10,000-image test set or the 60,000-image
        training set.

    Returns
    -------
    X : ndarray of shape (n, rows * cols), dtype float64
        The images, flattened, with pixel values divided by 255 so that they
        lie in [0, 1]; rows * cols is 784 for MNIST's 28x28 images.
    y : ndarray of shape (n,), dtype int64
        The labels.

    Raises
    ------
    FileNotFoundError
        If `data_dir` or one of the two files does not exist; the message
        names what is missing.
    eco.exceptions.DataFormatError
        If a file is not valid IDX (see :func:`read_idx`), the images are not
        a 3-D uint8 array, the labels are not a 1-D integer array, or the
        numbers of images and labels differ.
    eco.exceptions.InvalidInputError
        If `n` or `kind` is not valid.

    Examples
    --------
    >>> from eco.datasets import load_mnist  # doctest: +SKIP
    >>> X, y = load_mnist("data/mnist", n=1000)  # doctest: +SKIP
    >>> X.shape  # doctest: +SKIP
    (1000, 784)
    """
    if data_dir is None:
        data_dir = os.environ.get("ECO_MNIST_DIR", "")
        if not data_dir:
            raise FileNotFoundError("no MNIST directory given and ECO_MNIST_DIR is not set")
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"MNIST directory not found: {data_dir}")
    images_path, labels_path = _mnist_files(data_dir, kind)
    for found, stem in ((images_path, "images-idx3"), (labels_path, "labels-idx1")):
        if found is None:
            name = f"{kind}-{stem}-ubyte"
            raise FileNotFoundError(
                f"MNIST file not found: neither {name}.gz nor {name} in {data_dir}"
            )
    # Labels first (one byte per example), then the images' header is checked
    # against them before any pixel is decompressed.
    labels = _read_idx(labels_path, check=_label_header_check(labels_path))
    images = _read_idx(images_path, check=_image_header_check(images_path, labels_path, labels.shape[0]))
    if images.ndim != 3:
        raise DataFormatError(
            f"{images_path}: expected a 3-D image array (count, rows, cols), "
            f"got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise DataFormatError(f"{images_path}: expected uint8 pixels, got {images.dtype}")
    if labels.ndim != 1:
        raise DataFormatError(
            f"{labels_path}: expected a 1-D label array, got shape {labels.shape}"
        )
    if labels.dtype.kind not in "iu":
        raise DataFormatError(f"{labels_path}: expected integer labels, got {labels.dtype}")
    if images.shape[0] != labels.shape[0]:
        raise DataFormatError(
            f"image/label count mismatch: {images_path} holds {images.shape[0]} images "
            f"but {labels_path} holds {labels.shape[0]} labels"
        )
    total = images.shape[0]
    if n is None:
        n = total
    else:
        n = _check_count("n", n, 1, total)
    X = images[:n].reshape(n, -1).astype(np.float64)
    X /= 255.0
    return X, labels[:n].astype(np.int64)


def default_mnist_dir():
    """The MNIST directory named by the ``ECO_MNIST_DIR`` environment variable.

    Returns
    -------
    path : pathlib.Path or None
        The directory in ``ECO_MNIST_DIR`` if the variable is set, non-empty
        and names an existing directory; None otherwise. Whether the MNIST
        files are in it is not checked here (see :func:`load_mnist`).

    Examples
    --------
    >>> from eco.datasets import default_mnist_dir, load_mnist
    >>> X, y = load_mnist(default_mnist_dir(), n=500)  # doctest: +SKIP
    """
    value = os.environ.get("ECO_MNIST_DIR", "")
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_dir() else None
