"""Reading an ECO model folder that may come from an untrusted source.

:meth:`eco.nn.ECO.load` reads a folder written by :meth:`eco.nn.ECO.save`:
``manifest.json``, ``feature_extractor.pt``, the head's file and, when Phi has
a lineage, ``ccp_inputs.npy`` and ``ccp_labels.npy``. Anyone may have written
that folder, so nothing in it is trusted before it is checked:

- every file is opened without following symbolic links and without blocking
  (``O_NOFOLLOW | O_NONBLOCK``), and refused unless it is a regular file: a
  symlink to ``/dev/zero``, a FIFO or a device never gets read;
- every name the manifest gives is a plain file name inside the folder (no
  separator, no ``..``, not absolute), and the manifest lists a digest for
  exactly the files the format has, nothing else;
- every read is bounded before it starts: the manifest by
  :data:`MAX_MANIFEST_BYTES` and its JSON nesting by :data:`MAX_JSON_DEPTH`;
  Phi's weights by what the given module's ``state_dict`` needs; the ``.npy``
  files by the shape their header declares, which must match the manifest's
  ids and the file's size before the payload is read;
- a file is read once, and its SHA-256 is checked on the bytes that are then
  parsed (no window between the check and the use), except the head's file,
  which is hashed in bounded chunks and then handed to the head's loader;
- every key of the manifest is checked for presence and type.

Any violation raises :class:`~eco.exceptions.ModelFileError` naming the
problem; never ``KeyError``, ``TypeError``, ``RecursionError`` or
``MemoryError``.
"""

import hashlib
import io
import json
import math
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np

from eco.exceptions import ModelFileError

__all__ = [
    "MANIFEST",
    "EXTRACTOR_FILE",
    "HEAD_FILE",
    "INPUTS_FILE",
    "LABELS_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_MANIFEST_BYTES",
    "MAX_JSON_DEPTH",
    "read_manifest",
    "read_bounded",
    "read_npy",
    "sha256_file",
    "extractor_size_bound",
]

MANIFEST = "manifest.json"
EXTRACTOR_FILE = "feature_extractor.pt"
HEAD_FILE = "head.eco"
INPUTS_FILE = "ccp_inputs.npy"
LABELS_FILE = "ccp_labels.npy"
FORMAT = "eco.nn.ECO"
FORMAT_VERSION = 2

#: Largest manifest read (it lists every id of C_CP and of Phi's lineage:
#: about 10 bytes per id, so this admits millions of ids).
MAX_MANIFEST_BYTES = 64 << 20
#: Deepest JSON nesting accepted in a manifest (a valid one nests 2 deep).
MAX_JSON_DEPTH = 8

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1 << 20
# dtype kinds of saved inputs (numbers) and labels (numbers or strings)
_INPUT_KINDS = frozenset("biuf")
_LABEL_KINDS = frozenset("biufU")
# .npy header: magic (6) + version (2) + length (2 or 4) + the header text;
# NumPy itself refuses header texts over 10,000 bytes by default.
_NPY_PREFIX = 4096 + 16 + 10_000


def _open_regular(path):
    """A file descriptor of the regular file ``path``, never following a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ModelFileError(f"missing file {path}") from None
    except OSError as error:
        # ELOOP: the last component is a symbolic link (O_NOFOLLOW)
        raise ModelFileError(f"cannot open {path}: {error.strerror} (symbolic links are refused)") from None
    try:
        info = os.fstat(fd)
    except OSError as error:
        os.close(fd)
        raise ModelFileError(f"cannot stat {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ModelFileError(f"{path} is not a regular file (a device, FIFO, socket or folder); refusing to read it")
    return fd, info.st_size


def read_bounded(path, limit, what):
    """All bytes of the regular file ``path``, refused beyond ``limit`` bytes before reading."""
    fd, size = _open_regular(path)
    try:
        if size > limit:
            raise ModelFileError(f"{path}: {what} of {size} bytes exceeds the bound of {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)  # +1: a file grown since fstat is noticed
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ModelFileError(f"{path}: {what} grew beyond the bound of {limit} bytes while being read")
    return data


def sha256_file(path):
    """SHA-256 hex digest of a regular file, read in bounded chunks."""
    fd, _ = _open_regular(path)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            for chunk in iter(lambda: handle.read(_CHUNK), b""):
                digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _check_digest(path, data, digests):
    if hashlib.sha256(data).hexdigest() != digests[path.name]:
        raise ModelFileError(f"{path} was altered since it was saved (SHA-256 mismatch)")


def _json_depth(text):
    """Deepest nesting of a JSON text, strings ignored, without recursion.

    Scanned in chunks so that the work arrays stay small whatever the text.
    """
    skeleton = np.frombuffer(re.sub(rb'"(?:[^"\\]|\\.)*"', b"", text), dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, skeleton.size, _CHUNK):
        part = skeleton[start:start + _CHUNK]
        delta = (part == 0x5B).astype(np.int64) + (part == 0x7B) - (part == 0x5D) - (part == 0x7D)
        running = depth + np.cumsum(delta)
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def _plain_name(name, where):
    """A file name inside the folder: no separator, not '.' or '..', not absolute."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ModelFileError(f"{where}: file name {name!r} is not a non-empty string of at most 255 characters")
    if (
        name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or os.path.isabs(name)
        or Path(name).name != name
    ):
        raise ModelFileError(
            f"{where}: file name {name!r} is not a plain name inside the model folder (path traversal refused)"
        )
    return name


def _is_id(value):
    return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)


def _check_ids(value, key, where, *, unique):
    if not isinstance(value, list) or not all(_is_id(identifier) for identifier in value):
        raise ModelFileError(f"{where}: {key!r} must be a list of int or str ids")
    if unique and len(set(value)) != len(value):
        raise ModelFileError(f"{where}: {key!r} repeats ids")
    return value


def _require(manifest, key, kinds, where):
    if key not in manifest:
        raise ModelFileError(f"{where}: the manifest lacks the key {key!r}")
    value = manifest[key]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        names = "/".join(kind.__name__ for kind in kinds)
        raise ModelFileError(f"{where}: {key!r} must be of type {names}, got {type(value).__name__}")
    return value


def _check_fields(manifest, where):
    """Presence, type and range of every key; return the names of the files."""
    version = _require(manifest, "format_version", (int,), where)
    if version not in (1, FORMAT_VERSION):
        raise ModelFileError(f"{where}: format_version {version!r} is not supported (this eco reads 1 and {FORMAT_VERSION})")
    head_file = _plain_name(_require(manifest, "head_file", (str,), where), where)
    if head_file in (MANIFEST, EXTRACTOR_FILE, INPUTS_FILE, LABELS_FILE):
        raise ModelFileError(f"{where}: head_file {head_file!r} names another file of the model")
    batch_size = _require(manifest, "batch_size", (int,), where)
    if batch_size < 1:
        raise ModelFileError(f"{where}: batch_size must be >= 1, got {batch_size}")
    tolerance = manifest.get("kkt_tolerance", 1e-6)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not (math.isfinite(tolerance) and tolerance >= 0):
        raise ModelFileError(f"{where}: kkt_tolerance must be a finite number >= 0, got {tolerance!r}")
    n_features = _require(manifest, "n_features", (int,), where)
    if n_features < 1:
        raise ModelFileError(f"{where}: n_features must be >= 1, got {n_features}")
    _check_ids(_require(manifest, "feature_ids", (list,), where), "feature_ids", where, unique=True)
    fingerprint = manifest.get("phi_fingerprint")
    if version >= 2 or fingerprint is not None:
        if not isinstance(fingerprint, str) or not _SHA256_HEX.fullmatch(fingerprint):
            raise ModelFileError(f"{where}: phi_fingerprint must be a SHA-256 hex digest")
    files = [EXTRACTOR_FILE, head_file]
    if manifest.get("ccp_input_ids") is not None:
        _check_ids(manifest["ccp_input_ids"], "ccp_input_ids", where, unique=True)
        files += [INPUTS_FILE, LABELS_FILE]
    digests = _require(manifest, "sha256", (dict,), where)
    if set(digests) != set(files):
        raise ModelFileError(
            f"{where}: the manifest must list a digest for exactly the files {sorted(files)}, "
            f"it lists {sorted(map(str, digests))[:10]}"
        )
    for name, digest in digests.items():
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ModelFileError(f"{where}: the digest of {name!r} is not a SHA-256 hex digest")
    return files


def read_manifest(folder):
    """The validated manifest of a model folder; the head's file hashed and checked.

    The other files' digests are checked when they are read (:func:`read_npy`
    and the caller's read of Phi's weights), on the very bytes parsed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"{folder} is not a folder holding an eco.nn.ECO model")
    where = str(folder / MANIFEST)
    text = read_bounded(folder / MANIFEST, MAX_MANIFEST_BYTES, "the manifest")
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ModelFileError(f"{where}: JSON nested {depth} deep (at most {MAX_JSON_DEPTH})")
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ModelFileError(f"cannot read {where}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{folder} does not hold an eco.nn.ECO model")
    _check_fields(manifest, where)
    head = folder / manifest["head_file"]
    if sha256_file(head) != manifest["sha256"][head.name]:
        raise ModelFileError(f"{head} was altered since it was saved (SHA-256 mismatch)")
    return manifest


def extractor_size_bound(module):
    """Most bytes a saved ``state_dict`` of ``module`` may take.

    ``torch.save`` stores each tensor's data (``save`` writes compact
    copies) plus a small zip and pickle framing per entry.
    """
    state = module.state_dict()
    payload = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
    return 2 * payload + 4096 * (len(state) + 1) + (1 << 20)


def read_extractor_bytes(folder, manifest, module):
    """The bytes of Phi's weights, bounded by ``module``'s size, digest checked.

    ``torch.save`` writes a zip archive of stored (uncompressed) members; a
    compressed member could inflate far beyond the file's size inside
    ``torch.load``, so the archive's directory is checked first: stored
    members only, their declared sizes within the same bound.
    """
    path = Path(folder) / EXTRACTOR_FILE
    limit = extractor_size_bound(module)
    data = read_bounded(path, limit, f"the weights of {type(module).__name__}")
    _check_digest(path, data, manifest["sha256"])
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            members = zipfile.ZipFile(io.BytesIO(data)).infolist()
        except (zipfile.BadZipFile, ValueError, OSError) as error:
            raise ModelFileError(f"{path}: corrupt archive ({error})") from None
        if any(member.compress_type != zipfile.ZIP_STORED for member in members):
            raise ModelFileError(f"{path}: compressed members; torch.save writes stored ones only")
        if sum(member.file_size for member in members) > limit:
            raise ModelFileError(f"{path}: its members declare more than the bound of {limit} bytes")
    return data


def read_npy(folder, name, manifest, n_rows, kinds, *, ndim=None):
    """A ``.npy`` file of ``n_rows`` rows, its declared size checked before the payload is read."""
    path = Path(folder) / name
    fd, size = _open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            prefix = handle.read(min(size, _NPY_PREFIX))
            try:
                header = io.BytesIO(prefix)
                version = np.lib.format.read_magic(header)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(header)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(header)
                else:
                    raise ValueError(f"format version {version} is not written by ECO.save")
            except (ValueError, SyntaxError, EOFError, TypeError) as error:
                raise ModelFileError(f"{path}: not a plain .npy file ({error})") from None
            if dtype.kind not in kinds or dtype.hasobject:
                raise ModelFileError(f"{path}: dtype {dtype} is not allowed here")
            if not shape or shape[0] != n_rows or (ndim is not None and len(shape) != ndim):
                raise ModelFileError(f"{path}: shape {shape} does not match the {n_rows} ids of the manifest")
            expected = header.tell() + math.prod(shape) * dtype.itemsize
            if size != expected:
                raise ModelFileError(
                    f"{path}: {size} bytes, but its header declares shape {shape} of {dtype} ({expected} bytes)"
                )
            data = prefix + handle.read(size - len(prefix) + 1)
    finally:
        os.close(fd)
    if len(data) != size:
        raise ModelFileError(f"{path} changed size while being read")
    _check_digest(path, data, manifest["sha256"])
    try:
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError) as error:
        raise ModelFileError(f"{path}: not a plain .npy file ({error})") from None


def is_replaceable(folder):
    """An empty folder, or one that holds a model written by ECO.save."""
    folder = Path(folder)
    if not any(folder.iterdir()):
        return True
    try:
        text = read_bounded(folder / MANIFEST, MAX_MANIFEST_BYTES, "the manifest")
        if _json_depth(text) > MAX_JSON_DEPTH:
            return False
        return json.loads(text.decode("utf-8")).get("format") == FORMAT
    except (ModelFileError, ValueError, AttributeError, RecursionError):
        return False
