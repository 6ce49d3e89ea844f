"""Byte searches for erased rows in ECO models, their memory and their files.

A removed row is "found" when the exact bytes of any of its traces occur in an
artefact: its input row or its features Phi(x) (float64, bit for bit, as ECO
and the head store them), or its id (int ids as little-endian int64 and as
decimal text; str ids as UTF-8 and as UTF-32-LE, NumPy's unicode storage). Use
ids and data that are distinctive (large ints, long strings, real-valued rows)
so that a hit is a trace, not a coincidence.

Two views of a model:

- :func:`eco_own_bytes`: what ECO itself holds and writes, the head left out
  (its pickled state without ``head_``, and its saved files without the head's
  member). ECO is responsible for these.
- :func:`whole_artefact_bytes`: everything, the head included (``pickle.dumps``
  of the model and every file of its saved folder).
- :func:`head_memory_bytes`: what the head holds in memory (its stored rows,
  kernel rows, slot tables and head states), which neither view above shows
  (the head pickles and saves its active examples only).
"""

import pickle
from pathlib import Path

import numpy as np

__all__ = ["id_encodings", "find_traces", "assert_erased", "assert_present", "eco_own_bytes", "whole_artefact_bytes",
           "head_memory_bytes"]

# What ECO.save writes, and which of it is the head's.
HEAD_MEMBER = "head.eco"


def id_encodings(identifier):
    """The byte strings by which an id may be stored."""
    if isinstance(identifier, (int, np.integer)) and not isinstance(identifier, bool):
        value = int(identifier)
        minimal = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)  # pickle's LONG1
        return [np.int64(value).tobytes(), str(value).encode("ascii"), minimal]
    if isinstance(identifier, str):
        return [identifier.encode("utf-8"), identifier.encode("utf-32-le")]
    raise TypeError(f"use int or str ids in erasure tests, got {type(identifier).__name__}")


def find_traces(artefact_bytes, rows=(), ids=()):
    """The traces of ``rows`` (arrays, searched as float64) and ``ids`` found in the bytes."""
    found = []
    for index, row in enumerate(rows):
        needle = np.ascontiguousarray(row, dtype=np.float64).tobytes()
        if needle in artefact_bytes:
            found.append(f"row {index} ({len(needle)} bytes)")
    for identifier in ids:
        for encoding in id_encodings(identifier):
            if encoding in artefact_bytes:
                found.append(f"id {identifier!r} as {encoding!r}")
    return found


def assert_erased(artefact_bytes, rows=(), ids=()):
    """Fail if any trace of the given rows or ids is in ``artefact_bytes``."""
    found = find_traces(artefact_bytes, rows, ids)
    assert not found, f"traces of removed rows remain: {found[:10]}"


def assert_present(artefact_bytes, rows=(), ids=()):
    """The control: every trace of retained rows and ids is found (the search works)."""
    missing = []
    for index, row in enumerate(rows):
        if not find_traces(artefact_bytes, rows=[row]):
            missing.append(f"row {index}")
    for identifier in ids:
        if not find_traces(artefact_bytes, ids=[identifier]):
            missing.append(f"id {identifier!r}")
    assert not missing, f"retained rows not found by the search: {missing[:10]}"


def _folder_bytes(folder, *, skip=()):
    return b"".join(path.read_bytes() for path in sorted(Path(folder).iterdir()) if path.name not in skip)


def eco_own_bytes(model, folder=None):
    """ECO's own storage, the head left out: its pickled state and its saved files.

    ``phi_trainer`` (the caller's callable) and the head are not ECO's storage.
    """
    state = {key: value for key, value in model.__getstate__().items() if key not in ("head_", "phi_trainer")}
    data = pickle.dumps(state)
    if folder is not None:
        data += _folder_bytes(folder, skip=(HEAD_MEMBER,))
    return data


def whole_artefact_bytes(model, folder=None):
    """Everything: ``pickle.dumps(model)`` and every file ECO.save wrote, the head included."""
    data = pickle.dumps(model)
    if folder is not None:
        data += _folder_bytes(folder)
    return data


def _as_bytes(array):
    array = np.asarray(array)
    if array.dtype == object:
        return b"".join(str(v).encode("utf-8") + str(v).encode("utf-32-le") for v in array.ravel().tolist())
    if array.dtype.kind == "U":
        return array.tobytes() + "".join(array.ravel().tolist()).encode("utf-8")
    return np.ascontiguousarray(array).tobytes()


def head_memory_bytes(head):
    """The head's memory: stored rows, kernel rows, slot tables, coefficients, head states."""
    heads = head.head_set_
    every = np.arange(heads.n_slots)
    parts = [heads.stored_data(), heads.kernel_block(every), heads.slot_ids, heads.slot_labels,
             heads.slot_C, heads.alphas(), heads.coefficients()]
    for h in range(heads.n_heads):
        state = heads.head_state(h)
        parts += [getattr(state, name) for name in state.ARRAYS]
    return b"".join(_as_bytes(part) for part in parts)
