"""Saving and loading :class:`eco.CPSVM` models without pickle.

A saved model is one file: a zip archive (stored, not compressed) whose
members are

``eco-metadata.json``
    UTF-8 JSON object with

    - ``"format"``: the string ``"eco-cpsvm"``;
    - ``"format_version"``: an integer, :data:`FORMAT_VERSION` (``3``);
    - ``"eco_version"``: ``eco.__version__`` of the writer;
    - ``"model"``: the hyper-parameters and fitted scalars (see below);
    - ``"arrays"``: for every array member, its ``"member"`` name, ``"dtype"``
      (NumPy ``dtype.str``), ``"shape"`` and ``"sha256"`` (hex digest of the
      member's bytes);
    - ``"object_arrays"``: names of the arrays that were object arrays in
      memory and are stored as int64 or unicode arrays (they become object
      arrays again on load).
``eco-metadata.sha256``
    The hex SHA-256 digest of the bytes of ``eco-metadata.json``.
``<name>.npy``
    One array each, in NumPy's ``.npy`` format written with
    ``allow_pickle=False``, over the *active* examples only (nothing of a
    removed example is written): their features (or, for
    ``kernel="precomputed"``, their square kernel block), labels, bounds,
    ids, slots (``slot_index``) and positions given (``slot_given``), and for
    every head ``h`` its primary state: labels, bounds, coefficients, sets
    and margin order (positions among the active examples) (``head<h>_y``,
    ``head<h>_C``, ``head<h>_alpha``, ``head<h>_sets``,
    ``head<h>_margin_order``); its bias is in the ``"model"`` object
    (``"b"``). The ``"model"`` object also gives ``n_slots`` and
    ``n_given``, so that the loaded model lays its slots out as the saved
    one did. Nothing derived is stored: no gradients, no inverse bordered
    matrix (format 2 stored both; it is still read, and they are ignored).

The ``"model"`` object holds plain JSON values; values JSON cannot hold
exactly are tagged objects: ``{"__numpy__": dtype, "value": v}`` for a NumPy
scalar, ``{"__tuple__": [...]}`` for a tuple and ``{"__pairs__": [[k, v],
...]}`` for a dict with keys other than strings (so that ``class_weight``
keys keep their type: ``{0: 2.0}`` is not ``{"0": 2.0}``).

Example ids must be ints (within int64) or strings: int ids are stored as an
int64 array, string ids as a unicode array, a mix of both as the two arrays
``slot_ids_int`` and ``slot_ids_str`` with the mask ``slot_ids_is_str``.
Any other id type is refused at save time with
:class:`~eco.exceptions.InvalidInputError`; nothing is ever pickled.

Writing is atomic: the archive is written to a temporary file in the target's
folder, flushed to disk (``fsync``) and renamed over the target with
:func:`os.replace`. If anything fails, the temporary file is removed and a
file already at the target is left untouched.

Loading treats the file as untrusted. It reads only a regular file; refuses
compressed members and members whose size is not what their declared dtype
and shape need, before reading them; bounds the metadata's size (by the
number of members) and nesting; checks every digest before parsing any
array (``allow_pickle=False``); checks the format name and version and the
consistency of every array (:meth:`eco.state.ModelState.validate`); and
:func:`eco.load` recomputes the derived state (gradients from the kernel
rows, inverse bordered matrix by refactorisation) and certifies the model
from scratch. It raises :class:`~eco.exceptions.ModelFileError` naming the
problem for a truncated, tampered, crafted, foreign or newer file, in memory
bounded by the file's size. Nothing in the file is executed.

The loaded model has the saved primary state bit for bit: same
:meth:`~eco.CPSVM.state_digest` (which covers the primary state only), same
predictions. Its gradients and inverse bordered matrix are recomputed, so
they may differ from the saved model's in the last bits, and so may the
results of later updates; both are exact (they equal a fit from scratch).
"""

import errno
import hashlib
import io
import json
import os
import secrets
import stat
import zipfile
from numbers import Integral

import numpy as np

from ._version import __version__
from .exceptions import InvalidInputError, ModelFileError
from .state import HeadState, ModelState

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "save_model", "write_state", "read_state",
           "state_to_bytes", "state_from_bytes", "storable_id_kind"]

#: Value of the ``"format"`` field of every eco model file.
FORMAT_NAME = "eco-cpsvm"
#: Version of the layout described in this module, the one written.
#: 3: primary state only (no gradients, no inverse bordered matrix);
#: 2: active examples only, with their slots and positions given, and the
#: derived state; 1 kept every example ever given.
FORMAT_VERSION = 3
#: Versions :func:`read_state` reads (a version 2 file's derived arrays are ignored).
READABLE_VERSIONS = (2, 3)

_META = "eco-metadata.json"
_META_SHA = "eco-metadata.sha256"
_HEAD_KEYS = HeadState.ARRAYS
# arrays a version 2 file also holds per head: read, digests checked, ignored
_V2_DERIVED_KEYS = HeadState.DERIVED
# dtype kinds an array member may have: bool, signed int, float, unicode
_ALLOWED_KINDS = frozenset("biufU")
_INT64 = np.iinfo(np.int64)


# ---------------------------------------------------------------------- save


def save_model(model, path):
    """Save a fitted model to `path`, atomically, in eco's format (no pickle).

    The model is written through its :meth:`~eco.CPSVM.to_state`; see
    :func:`write_state`.

    Parameters
    ----------
    model : eco.CPSVM
        A fitted model.
    path : str or os.PathLike
        File to write; an existing file is replaced only once the new one is
        completely on disk.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The model is not fitted.
    eco.exceptions.InvalidInputError
        `path` is not a path, or the model holds ids, labels or parameters
        that the format cannot store without pickle (ids other than int or
        str, for example).
    OSError
        The file could not be written; nothing at `path` changed.
    """
    write_state(model.to_state(), path)


def write_state(state, path):
    """Write an :class:`eco.state.ModelState` to `path`, atomically (see :func:`save_model`)."""
    path = _fspath(path)
    _write_atomically(path, _members(state))


def state_to_bytes(state):
    """The bytes :func:`write_state` would write, built in memory (no file, no fsync)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in _members(state):
            zf.writestr(_zipinfo(name), data)
    return buf.getvalue()


def _members(state):
    """The archive members of `state`: [(name, bytes)], metadata first."""
    meta, arrays = _state_to_file(state)
    object_arrays = []
    # ids: int64, unicode, or both with a mask
    ids = arrays.pop("slot_ids")
    if ids.dtype == object:
        object_arrays.append("slot_ids")
    arrays.update(_encode_ids(ids))
    for name in list(arrays):
        arr = arrays[name]
        if arr.dtype == object:
            arrays[name] = _encode_object_array(arr, name)
            object_arrays.append(name)
        elif arr.dtype.kind not in _ALLOWED_KINDS:
            raise InvalidInputError(
                f"cannot save array {name!r} of dtype {arr.dtype} without pickle")

    members = {}
    table = {}
    for name in sorted(arrays):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.asarray(arrays[name]), allow_pickle=False)
        data = buf.getvalue()
        member = f"{name}.npy"
        members[member] = data
        table[name] = {
            "member": member,
            "dtype": arrays[name].dtype.str,
            "shape": list(arrays[name].shape),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    document = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "eco_version": __version__,
        "model": _encode_value(meta, "model metadata"),
        "arrays": table,
        "object_arrays": sorted(object_arrays),
    }
    try:
        meta_bytes = json.dumps(document, sort_keys=True, indent=1, allow_nan=False).encode()
    except ValueError as exc:  # NaN or infinity in a parameter
        raise InvalidInputError(f"cannot save the model metadata as JSON: {exc}") from exc
    return [(_META, meta_bytes), (_META_SHA, hashlib.sha256(meta_bytes).hexdigest().encode())] \
        + sorted(members.items())


def _fspath(path):
    if isinstance(path, int) or not isinstance(path, (str, bytes, os.PathLike)):
        # an int would be taken as an open file descriptor by open()
        raise InvalidInputError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if path == "":
        raise InvalidInputError("path must not be empty")
    return path


def _write_atomically(path, members):
    """Write the zip archive of `members` to `path` via a fsynced temporary file."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        # say which folder is missing, not the name of the temporary file
        raise FileNotFoundError(errno.ENOENT, "the folder to save into does not exist", folder)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as open() does
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
                for name, data in members:
                    zf.writestr(_zipinfo(name), data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_folder(folder)


def _zipinfo(name):
    # a fixed timestamp: the same model gives the same bytes
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16
    return info


def _fsync_folder(folder):
    # makes the rename durable; not possible on every platform
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _encode_ids(ids):
    """Ids as non-object arrays: int64, unicode, or both plus a mask."""
    ids = np.asarray(ids)
    if ids.dtype.kind == "i":
        return {"slot_ids": ids.astype(np.int64)}
    values = ids.tolist()
    is_str = np.zeros(len(values), dtype=bool)
    ints = np.zeros(len(values), dtype=np.int64)
    strs = []
    for k, v in enumerate(values):
        if storable_id_kind(v) == "str":
            _check_str(v, f"id {v!r}")
            is_str[k] = True
            strs.append(v)
        else:
            ints[k] = int(v)
            strs.append("")
    if is_str.all():
        return {"slot_ids": np.array(strs, dtype=str) if strs else np.zeros(0, dtype="<U1")}
    if not is_str.any():
        return {"slot_ids": ints}
    return {"slot_ids_int": ints, "slot_ids_str": np.array(strs, dtype=str),
            "slot_ids_is_str": is_str}


def storable_id_kind(v, what="id"):
    """``"str"`` or ``"int"`` for an id the format stores, else InvalidInputError naming `what`.

    The format holds str ids and int ids within int64, nothing pickled.
    """
    if isinstance(v, str):
        return "str"
    if isinstance(v, Integral) and not isinstance(v, (bool, np.bool_)):
        if not _INT64.min <= int(v) <= _INT64.max:
            raise InvalidInputError(f"cannot save {what} {v!r}: int ids must fit in int64")
        return "int"
    raise InvalidInputError(
        f"cannot save {what} {v!r} of type {type(v).__name__}: the eco format stores "
        "only int and str ids (no pickle)")


def _check_str(v, what):
    # NumPy unicode arrays drop trailing NUL characters
    if v.endswith("\x00"):
        raise InvalidInputError(f"cannot save {what}: it ends with a NUL character")


def _encode_object_array(arr, name):
    """A homogeneous object array of str, int, float or bool as a plain array."""
    values = arr.ravel().tolist()
    kinds = {type(v) for v in values}
    if kinds <= {str}:
        for v in values:
            _check_str(v, f"{name} value {v!r}")
        return np.array(values, dtype=str).reshape(arr.shape) if values else \
            np.zeros(arr.shape, dtype="<U1")
    if kinds <= {bool}:
        return np.array(values, dtype=bool).reshape(arr.shape)
    if kinds <= {int}:
        if any(not _INT64.min <= v <= _INT64.max for v in values):
            raise InvalidInputError(f"cannot save {name}: int values must fit in int64")
        return np.array(values, dtype=np.int64).reshape(arr.shape)
    if kinds <= {float}:
        return np.array(values, dtype=np.float64).reshape(arr.shape)
    raise InvalidInputError(
        f"cannot save {name} holding values of type "
        f"{', '.join(sorted(t.__name__ for t in kinds))}: the eco format stores only "
        "arrays of str, int, float or bool (no pickle)")


def _encode_value(v, what):
    """A JSON value that decodes (:func:`_decode_value`) to exactly `v`."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, np.generic):
        if v.dtype.kind not in "biuf":
            raise InvalidInputError(f"cannot save {what}: NumPy scalar of dtype {v.dtype}")
        return {"__numpy__": v.dtype.str, "value": v.item()}
    if isinstance(v, (int, float)):
        if type(v) not in (int, float):
            raise InvalidInputError(f"cannot save {what}: value of type {type(v).__name__}")
        return v
    if isinstance(v, list):
        return [_encode_value(x, what) for x in v]
    if isinstance(v, tuple):
        return {"__tuple__": [_encode_value(x, what) for x in v]}
    if isinstance(v, dict):
        if all(type(k) is str and not k.startswith("__") for k in v):
            return {k: _encode_value(x, what) for k, x in v.items()}
        # keys JSON would turn into strings (or that look like tags): pairs
        return {"__pairs__": [[_encode_value(k, what), _encode_value(x, what)]
                              for k, x in v.items()]}
    raise InvalidInputError(f"cannot save {what}: value {v!r} of type {type(v).__name__} "
                            "is not storable without pickle")


# ---------------------------------------------------------------------- load


def read_state(path):
    """Read the :class:`eco.state.ModelState` of a file written by :func:`save_model`.

    :func:`eco.load` turns it into a model and certifies it (this module
    knows the file, not the estimator). The file is untrusted: only a
    regular file is read; every member must be stored (not compressed), of
    the size its table entry's dtype and shape need, and match its digest,
    before it is parsed; the metadata is bounded in size and nesting. Any
    malformed file raises :class:`~eco.exceptions.ModelFileError`, in memory
    bounded by the file's size.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    eco.state.ModelState
        The primary state, validated, bit for bit as saved; its heads' derived
        fields (``g``, ``Rinv``) are None, to be recomputed when installed.

    Raises
    ------
    eco.exceptions.ModelFileError
        The file is not a regular file, not an eco model file, is truncated,
        has a member whose digest does not match, is of another format
        version, or holds an inconsistent state.
    eco.exceptions.InvalidInputError
        `path` is not a path.
    OSError
        The file could not be read (for example, it does not exist).
    """
    path = _fspath(path)
    where = f"{path!r}"
    return state_from_bytes(_read_regular_file(path, where), where)


def state_from_bytes(data, where="model bytes"):
    """:func:`read_state` of a file's bytes held in memory (`where` names them in errors)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInputError(f"{where}: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not zipfile.is_zipfile(io.BytesIO(data)):
        if data[:4] == b"PK\x03\x04":
            raise ModelFileError(f"{where} is truncated or corrupt: its zip directory is missing")
        raise ModelFileError(f"{where} is not an eco model file (not a zip archive)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except Exception as exc:  # BadZipFile, NotImplementedError, ...: any parse failure
        raise ModelFileError(f"{where} is truncated or corrupt: {type(exc).__name__}: "
                             f"{exc}") from exc
    with zf:
        document, arrays = _read_archive(zf, where, len(data))
    try:
        meta = _decode_value(document.get("model"))
        object_arrays = document.get("object_arrays", [])
        if not isinstance(object_arrays, list) or \
                not all(isinstance(n, str) for n in object_arrays):
            raise ValueError("object_arrays is not a list of names")
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ModelFileError(f"{where}: bad model metadata ({exc})") from exc
    try:
        return _build(meta, arrays, object_arrays, where, document["format_version"])
    except ModelFileError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, AttributeError) as exc:
        # _build names every inconsistency it knows of; this is the net under
        # it: whatever a crafted file still gets past them is refused alike
        raise ModelFileError(f"{where}: inconsistent model file ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from exc


#: Largest metadata member read (the JSON document: parameters, biases, array table).
MAX_METADATA_BYTES = 16 << 20
#: Deepest nesting of JSON values accepted in the metadata.
MAX_NESTING = 16
#: Longest string (in characters) a unicode array may hold per element.
MAX_STR_CHARS = 4096


def _read_regular_file(path, where):
    """The bytes of `path`; ModelFileError when it is not a regular file (device, FIFO...)."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{where} is not a regular file (a device, FIFO, socket or "
                                 "folder, or a link to one)")
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check_members(zf, where, size):
    """Every member stored uncompressed, within the archive; returns {name: ZipInfo}."""
    infos = zf.infolist()
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        raise ModelFileError(f"{where} has duplicate members")
    total = 0
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ModelFileError(f"{where}: member {info.filename!r} is compressed (method "
                                 f"{info.compress_type}); eco files store members uncompressed")
        total += info.file_size
        if info.file_size > size or total > size:
            raise ModelFileError(f"{where}: member {info.filename!r} declares "
                                 f"{info.file_size} bytes, more than the file holds")
    return {i.filename: i for i in infos}


def _parse_metadata(meta_bytes, where):
    """The JSON document, bounded in nesting depth."""
    try:
        document = json.loads(meta_bytes.decode("utf-8"))
    # ValueError: json.JSONDecodeError, and an integer of more digits than
    # Python converts (sys.get_int_max_str_digits)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(f"{where}: {_META} is not valid JSON ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from exc
    stack = [(document, 0)]
    while stack:  # iterative: no recursion on untrusted nesting
        v, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ModelFileError(f"{where}: {_META} is nested deeper than {MAX_NESTING} levels")
        items = v.values() if isinstance(v, dict) else v
        stack.extend((x, depth + 1) for x in items if isinstance(x, (dict, list)))
    return document


def _read_archive(zf, where, size):
    """The metadata document and the arrays of an open archive, every digest checked."""
    infos = _check_members(zf, where, size)
    names = list(infos)
    if _META not in infos:
        raise ModelFileError(
            f"{where} is not an eco model file: it has no {_META} member "
            f"(members: {', '.join(names[:5])}{'...' if len(names) > 5 else ''})")
    # the document grows with the number of arrays (a table entry, a bias, a
    # counter per head), so the members bound it before it is parsed
    limit = min(MAX_METADATA_BYTES, 65536 + 1024 * len(infos))
    if infos[_META].file_size > limit:
        raise ModelFileError(f"{where}: {_META} is {infos[_META].file_size} bytes, more than "
                             f"the {limit} its {len(infos)} members allow")
    meta_bytes = _read_member(zf, _META, where)
    if _META_SHA not in infos or infos[_META_SHA].file_size > 256:
        raise ModelFileError(f"{where}: the member {_META_SHA} is missing or too long")
    expected = _read_member(zf, _META_SHA, where).decode("ascii", "replace").strip()
    if hashlib.sha256(meta_bytes).hexdigest() != expected:
        raise ModelFileError(f"{where}: checksum mismatch in member {_META} (file tampered "
                             "with or corrupt)")
    document = _parse_metadata(meta_bytes, where)
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        found = document.get("format") if isinstance(document, dict) else None
        raise ModelFileError(f"{where} is not an eco model file (format is {found!r}, "
                             f"expected {FORMAT_NAME!r})")
    version = document.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:  # True == 1 in Python
        raise ModelFileError(
            f"{where} has format version {version!r}; this eco "
            f"reads format versions {', '.join(map(str, READABLE_VERSIONS))} only "
            f"(file written by eco {document.get('eco_version')!r})")
    table = document.get("arrays")
    if not isinstance(table, dict):
        raise ModelFileError(f"{where}: the metadata has no array table")
    if len(table) > len(infos):
        raise ModelFileError(f"{where}: the array table lists {len(table)} arrays, more than "
                             f"the {len(infos)} members")
    expected_members = {_META, _META_SHA}
    raws = {}
    for name, entry in table.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("member"), str):
            raise ModelFileError(f"{where}: bad table entry for array {name!r}")
        member = entry["member"]
        if member in expected_members:
            raise ModelFileError(f"{where}: member {member!r} is listed twice")
        expected_members.add(member)
        if member not in infos:
            raise ModelFileError(f"{where}: member {member!r} is missing (truncated file?)")
        raws[name] = _read_raw(zf, infos[member], entry, where)
    extra = set(names) - expected_members
    if extra:
        raise ModelFileError(f"{where}: unexpected members {sorted(extra)[:5]}")
    # parsed only once every member is known intact
    arrays = {name: _parse_array(raw, table[name], where) for name, raw in raws.items()}
    return document, arrays


def _declared(entry, member, where):
    """The dtype and shape a table entry declares, checked before anything is read."""
    try:
        dtype = np.dtype(entry.get("dtype"))
    except Exception as exc:  # TypeError, ValueError, and others for odd strings
        raise ModelFileError(f"{where}: member {member!r} declares dtype "
                             f"{str(entry.get('dtype'))[:40]!r} ({exc})") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.hasobject or dtype.fields is not None \
            or dtype.str != entry.get("dtype") \
            or (dtype.kind == "U" and dtype.itemsize > 4 * MAX_STR_CHARS):
        raise ModelFileError(f"{where}: member {member!r} declares dtype {dtype}, not a plain "
                             "bool, int, float or bounded unicode array")
    shape = entry.get("shape")
    if not isinstance(shape, list) or len(shape) > 2 or not all(
            type(k) is int and k >= 0 for k in shape):
        raise ModelFileError(f"{where}: member {member!r} declares shape {str(shape)[:40]}")
    return dtype, tuple(shape)


def _read_raw(zf, info, entry, where):
    """The bytes of one array member: declared size checked against the member, then digest."""
    member = info.filename
    dtype, shape = _declared(entry, member, where)
    need = dtype.itemsize
    for k in shape:
        need *= k
    # a .npy member is a header (at most a few KiB) and then the array's bytes
    if not need <= info.file_size <= need + 65536:
        raise ModelFileError(f"{where}: member {member!r} has {info.file_size} bytes; "
                             f"dtype {dtype} and shape {shape} need {need} plus a header")
    raw = _read_member(zf, member, where)
    if hashlib.sha256(raw).hexdigest() != entry.get("sha256"):
        raise ModelFileError(f"{where}: checksum mismatch in member {member!r} "
                             "(file tampered with or corrupt)")
    return raw


def _parse_array(raw, entry, where):
    """The array of an intact member; ModelFileError unless plain and as declared."""
    member, shape = entry["member"], tuple(entry["shape"])
    try:
        arr = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:  # object arrays, bad headers: never unpickle
        raise ModelFileError(f"{where}: member {member!r} is not a plain .npy "
                             f"array ({exc})") from exc
    if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.str != entry.get("dtype") \
            or arr.shape != shape:
        raise ModelFileError(f"{where}: member {member!r} has dtype {arr.dtype} and "
                             f"shape {arr.shape}, not what the metadata says")
    return arr


def _read_member(zf, name, where):
    try:
        return zf.read(name)
    except Exception as exc:  # BadZipFile (CRC), EOFError, NotImplementedError, ...
        raise ModelFileError(f"{where}: member {name!r} is truncated or corrupt "
                             f"({type(exc).__name__}: {exc})") from exc


def _decode_value(v):
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    if isinstance(v, dict):
        if set(v) == {"__numpy__", "value"}:
            dtype = np.dtype(v["__numpy__"])
            if dtype.kind not in "biuf":
                raise ValueError(f"NumPy scalar of dtype {dtype}")
            return dtype.type(v["value"])
        if set(v) == {"__tuple__"}:
            return tuple(_decode_value(x) for x in v["__tuple__"])
        if set(v) == {"__pairs__"}:
            return {_decode_value(k): _decode_value(x) for k, x in v["__pairs__"]}
        if any(k.startswith("__") for k in v):
            raise ValueError(f"unknown tagged object with keys {sorted(v)}")
        return {k: _decode_value(x) for k, x in v.items()}
    return v


def _state_to_file(state):
    """The JSON metadata and the named arrays of the file layout, from a ModelState."""
    meta = {
        "params": state.params,
        "gamma_": float(state.gamma_),
        "n_features_in_": int(state.n_features_in_),
        "n_heads": state.n_heads,
        "b": [float(hd.b) for hd in state.heads],
        "n_slots": int(state.n_slots),
        "n_given": int(state.n_given),
    }
    arrays = {
        "classes_": np.asarray(state.classes_),
        "class_weight_": np.asarray(state.class_weight_, dtype=np.float64),
        "slot_labels": np.asarray(state.slot_labels, dtype=np.int64),
        "slot_C": np.asarray(state.slot_C, dtype=np.float64),
        "slot_ids": state.slot_ids,
        "slot_index": np.asarray(state.slot_index, dtype=np.int64),
        "slot_given": np.asarray(state.slot_given, dtype=np.int64),
        _data_key(state.params): state.data,
    }
    if state.feature_names_in_ is not None:
        arrays["feature_names_in_"] = np.asarray(state.feature_names_in_)
    for h, hd in enumerate(state.heads):
        for key in _HEAD_KEYS:
            arrays[f"head{h}_{key}"] = getattr(hd, key)
    return meta, arrays


def _data_key(params):
    return "kernel" if params.get("kernel") == "precomputed" else "features"


def _build(meta, arrays, object_arrays, where, version=FORMAT_VERSION):
    """Check the decoded content and return the validated ModelState; ModelFileError when not."""

    def bad(msg):
        return ModelFileError(f"{where}: inconsistent model file: {msg}")

    if not isinstance(meta, dict):
        raise bad("the model metadata is not an object")
    for key in ("params", "gamma_", "n_features_in_", "n_heads", "b", "n_slots", "n_given"):
        if key not in meta:
            raise bad(f"the model metadata lacks {key!r}")
    params = meta["params"]
    if not isinstance(params, dict):
        raise bad(f"the parameters are {params!r}")
    n_heads = meta["n_heads"]
    classes = arrays.get("classes_")
    if classes is None or classes.ndim != 1 or len(classes) < 2:
        raise bad("classes_ is missing or holds fewer than two classes")
    # checked before anything is built per head: the count is bounded by the classes
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) \
            or n_heads != (1 if len(classes) == 2 else len(classes)):
        raise bad(f"{str(n_heads)[:20]} heads declared for {len(classes)} classes")
    if not isinstance(meta["b"], list) or len(meta["b"]) != n_heads:
        raise bad("the number of heads does not match the biases")
    _check_layout(meta, arrays, params, bad)
    arrays["slot_ids"] = _decode_ids(arrays, bad)
    _restore_object_arrays(arrays, object_arrays, bad)
    data_key = _data_key(params)
    required = ["classes_", "class_weight_", "slot_labels", "slot_C", "slot_index",
                "slot_given", data_key]
    head_keys = _HEAD_KEYS + (_V2_DERIVED_KEYS if version == 2 else ())
    required += [f"head{h}_{k}" for h in range(n_heads) for k in head_keys]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise bad(f"arrays {missing} are missing")
    extra = sorted(set(arrays) - set(required) - {"slot_ids", "feature_names_in_"})
    if extra:  # nothing is read that the layout does not name (no derived state in v3)
        raise bad(f"unexpected arrays {extra[:5]} for format version {version}")
    # the derived state is never taken from a file: eco.load recomputes it
    heads = [HeadState(b=meta["b"][h], g=None, Rinv=None,
                       **{k: arrays[f"head{h}_{k}"] for k in _HEAD_KEYS})
             for h in range(n_heads)]
    state = ModelState(
        params=params, gamma_=meta["gamma_"], n_features_in_=meta["n_features_in_"],
        classes_=arrays["classes_"], class_weight_=arrays["class_weight_"],
        slot_labels=arrays["slot_labels"], slot_C=arrays["slot_C"],
        slot_ids=arrays["slot_ids"], data=arrays[data_key], heads=heads,
        slot_index=arrays["slot_index"], n_slots=meta.get("n_slots"),
        slot_given=arrays["slot_given"], n_given=meta.get("n_given"),
        feature_names_in_=arrays.get("feature_names_in_"))
    try:
        state.validate()
    except ValueError as exc:
        raise bad(str(exc)) from exc
    return state


#: Most examples a file may declare ever given: default ids are positions among
#: them and must stay int64 through any increment that follows (2**53: exact in
#: float64 as well).
MAX_GIVEN = 1 << 53

#: A precomputed kernel is laid out over every example given (erased ones as zeros):
#: a file may declare at most this many times its active examples, or 2048 slots.
_MAX_PRECOMPUTED_SLOTS_RATIO = 8


def _check_layout(meta, arrays, params, bad):
    """Bound the declared slot layout by what the file holds, before memory is laid out."""
    n_slots, n_given, idx = meta["n_slots"], meta["n_given"], arrays.get("slot_index")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (n_slots, n_given)):
        raise bad("n_slots or n_given is not an integer")
    if not 0 <= n_given <= MAX_GIVEN:
        raise bad(f"{str(n_given)[:40]} examples declared given (at most {MAX_GIVEN})")
    if idx is None or idx.ndim != 1:
        raise bad("slot_index is missing")
    n = len(idx)
    data = arrays.get(_data_key(params))
    if params.get("kernel") == "precomputed":
        top = max(_MAX_PRECOMPUTED_SLOTS_RATIO * n, 2048)
    elif data is not None and data.ndim == 2 and data.shape[1] == 0:
        # no rows laid out (a Ray checkpoint of one head): O(n_slots) memory
        top = max(64 * n, 1 << 16)
    else:
        # a live model compacts once erased slots exceed max(COMPACT_MIN, half of them)
        top = max(2 * n, n + 64) + 1
    if not n <= n_slots <= top or not n_slots <= n_given:
        raise bad(f"{n_slots} slots declared for {n} examples")


def _decode_ids(arrays, bad):
    """The ids back to what the model held in memory (int64, unicode or object)."""
    # the format holds int and str ids only (_encode_ids): a float id (NaN
    # among them, which no set can find again) is refused as fit refuses it
    if "slot_ids" in arrays:
        ids = arrays.pop("slot_ids")
        if ids.ndim != 1 or ids.dtype.kind not in "iU":
            raise bad(f"ids of dtype {ids.dtype} and shape {ids.shape} (int or str, 1-D)")
        return ids
    if {"slot_ids_int", "slot_ids_str", "slot_ids_is_str"} <= set(arrays):
        ints = arrays.pop("slot_ids_int")
        strs = arrays.pop("slot_ids_str")
        is_str = arrays.pop("slot_ids_is_str")
        if ints.ndim != 1 or not (ints.shape == strs.shape == is_str.shape):
            raise bad("the id arrays disagree in shape")
        if ints.dtype.kind != "i" or strs.dtype.kind != "U" or is_str.dtype != bool:
            raise bad(f"id arrays of dtypes {ints.dtype}, {strs.dtype}, {is_str.dtype} "
                      "(int, str, bool)")
        ids = np.empty(len(ints), dtype=object)
        ids[:] = [s if m else i for i, s, m in zip(ints.tolist(), strs.tolist(), is_str.tolist())]
        return ids
    raise bad("no ids")


def _restore_object_arrays(arrays, object_arrays, bad):
    for name in object_arrays:
        if name == "slot_ids":
            continue
        if name not in arrays:
            raise bad(f"object array {name!r} is missing")
        obj = np.empty(arrays[name].shape, dtype=object)
        obj[...] = arrays[name].tolist() if arrays[name].ndim else arrays[name].item()
        arrays[name] = obj
