"""Tests of eco.datasets: digits, the IDX reader and writer, MNIST.

Everything runs without network and without ../shared: the IDX tests write
their own files, and load_mnist is tested on an MNIST-shaped directory made
from scikit-learn's digits (8x8 padded to 28x28). Only the tests on the real
MNIST files are skipped when ../shared/data/mnist is absent.
"""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from eco.datasets import (
    default_mnist_dir,
    load_digits,
    load_mnist,
    read_idx,
    write_idx,
)
from eco.exceptions import DataFormatError, EcoError, InvalidInputError

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
MNIST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
             np.float32: 0x0D, np.float64: 0x0E}

needs_real_mnist = pytest.mark.skipif(
    not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST files not found in {SHARED_MNIST}",
)


# --------------------------------------------------------------------------- helpers


def idx_bytes(code, shape, payload):
    """Hand-made IDX bytes, independent of write_idx."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def sample_array(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)


def write_digits_mnist(directory, *, kind="t10k", compressed=True, images=None, labels=None):
    """Write scikit-learn's digits as MNIST IDX files: 8x8 centred in 28x28, pixel*15."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    X, y = load_digits(scale=False)
    if images is None:
        images = np.zeros((X.shape[0], 28, 28), dtype=np.uint8)
        images[:, 10:18, 10:18] = (X.reshape(-1, 8, 8) * 15).astype(np.uint8)
    if labels is None:
        labels = y.astype(np.uint8)
    suffix = ".gz" if compressed else ""
    write_idx(directory / f"{kind}-images-idx3-ubyte{suffix}", images)
    write_idx(directory / f"{kind}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture(scope="module")
def digits_mnist_dir(tmp_path_factory):
    return write_digits_mnist(tmp_path_factory.mktemp("digits_mnist"))


# --------------------------------------------------------------------------- digits


def test_load_digits_shapes_and_ranges():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y).tolist()) == set(range(10))
    assert X.flags.c_contiguous and X.flags.writeable


def test_load_digits_unscaled_is_sixteen_times_scaled():
    X_raw, y_raw = load_digits(scale=False)
    X, y = load_digits()
    assert X_raw.max() == 16.0
    np.testing.assert_array_equal(X_raw, np.rint(X_raw))
    np.testing.assert_array_equal(X_raw / 16.0, X)
    np.testing.assert_array_equal(y_raw, y)


def test_load_digits_scale_is_keyword_only():
    with pytest.raises(TypeError):
        load_digits(False)


# --------------------------------------------------------------------------- IDX round trips


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5), (2, 1, 3, 2)], ids=str)
def test_idx_round_trip(tmp_path, dtype, suffix, shape):
    array = sample_array(dtype, shape)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == shape
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_idx_extreme_values_round_trip(tmp_path, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        values = [0.0, -0.0, info.min, info.max, info.tiny, np.inf, -np.inf, np.nan]
    else:
        info = np.iinfo(dtype)
        values = [info.min, info.min + 1, 0, 1, info.max - 1, info.max]
    array = np.array(values, dtype=dtype)
    write_idx(tmp_path / "x", array)
    back = read_idx(tmp_path / "x")
    np.testing.assert_array_equal(back, array)
    assert back.tobytes() == array.tobytes()  # bit-exact, signed zero and NaN included


@pytest.mark.parametrize("dtype", IDX_DTYPES, ids=lambda d: np.dtype(d).name)
def test_write_idx_layout_is_big_endian(tmp_path, dtype):
    array = sample_array(dtype, (2, 3), seed=1)
    write_idx(tmp_path / "x", array)
    expected = idx_bytes(IDX_CODES[dtype], (2, 3), array.astype(np.dtype(dtype).newbyteorder(">")).tobytes())
    assert (tmp_path / "x").read_bytes() == expected


def test_read_idx_hand_made_file(tmp_path):
    (tmp_path / "x").write_bytes(idx_bytes(0x0B, (2, 2), struct.pack(">4h", 1, -2, 300, -32768)))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [[1, -2], [300, -32768]])


def test_write_idx_accepts_any_byte_order_and_layout(tmp_path):
    array = np.arange(12, dtype=">i4").reshape(3, 4).T  # big-endian, not C-contiguous
    write_idx(tmp_path / "x", array)
    back = read_idx(tmp_path / "x")
    assert back.dtype == np.int32 and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_write_idx_accepts_lists_and_str_paths(tmp_path):
    write_idx(str(tmp_path / "x.gz"), np.array([[1.5, 2.5]]))
    np.testing.assert_array_equal(read_idx(str(tmp_path / "x.gz")), [[1.5, 2.5]])


def test_idx_empty_and_zero_dimensional(tmp_path):
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "e.gz", empty)
    back = read_idx(tmp_path / "e.gz")
    assert back.shape == (0, 28, 28) and back.dtype == np.uint8
    write_idx(tmp_path / "s", np.float64(2.5))
    back = read_idx(tmp_path / "s")
    assert back.shape == () and back == 2.5


def test_gzip_detected_by_magic_not_by_name(tmp_path):
    array = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "a.gz").rename(tmp_path / "compressed-without-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed-without-suffix"), array)
    write_idx(tmp_path / "plain", array)
    (tmp_path / "plain").rename(tmp_path / "plain-with-suffix.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "plain-with-suffix.gz"), array)


def test_write_idx_gzip_is_deterministic(tmp_path):
    array = sample_array(np.uint8, (50, 28, 28))
    write_idx(tmp_path / "a.gz", array)
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


@pytest.mark.parametrize(
    "array",
    [
        np.arange(3, dtype=np.int64),
        np.arange(3, dtype=np.uint16),
        np.array([True, False]),
        np.array([1 + 2j]),
        np.array(["a"]),
        np.array([None], dtype=object),
    ],
    ids=lambda a: a.dtype.name,
)
def test_write_idx_rejects_dtypes_without_a_code(tmp_path, array):
    with pytest.raises(InvalidInputError, match="dtype"):
        write_idx(tmp_path / "x", array)
    assert not (tmp_path / "x").exists()


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        dtype=st.sampled_from(IDX_DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    compressed=st.booleans(),
)
def test_idx_round_trip_property(tmp_path_factory, array, compressed):
    path = tmp_path_factory.mktemp("prop") / ("a.gz" if compressed else "a")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


# --------------------------------------------------------------------------- IDX corruption


GOOD = idx_bytes(0x08, (2, 3), bytes(range(6)))


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "truncated IDX header"),
        (b"\x00\x00\x08", "truncated IDX header"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x03", "truncated IDX header"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "wrong IDX magic"),
        (b"\x00\x07\x08\x01\x00\x00\x00\x01\x05", "wrong IDX magic"),
        (b"PK\x03\x04 zip file, not IDX", "wrong IDX magic"),
        (idx_bytes(0x07, (1,), b"\x05"), "unknown IDX dtype code 0x07"),
        (idx_bytes(0x0A, (1,), b"\x05"), "unknown IDX dtype code 0x0A"),
        (GOOD[:-1], "truncated IDX payload"),
        (idx_bytes(0x08, (2, 3), b""), "truncated IDX payload"),
        (idx_bytes(0x0E, (2,), b"\x00" * 15), "truncated IDX payload"),
        (idx_bytes(0x08, (2**32 - 1, 2**32 - 1), b"\x00"), "truncated IDX payload"),
        (GOOD + b"\x00", "1 trailing bytes"),
        (GOOD + b"garbage", "7 trailing bytes"),
    ],
    ids=[
        "empty", "short-magic", "short-sizes", "magic-byte0", "magic-byte1", "zip",
        "code-07", "code-0A", "payload-minus-1", "no-payload", "float64-short",
        "huge-shape", "one-trailing", "garbage-trailing",
    ],
)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gz"])
def test_corrupt_idx_raises_data_format_error(tmp_path, data, problem, compressed):
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(DataFormatError, match=problem) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, EcoError)


@pytest.mark.parametrize(
    "data",
    [
        b"\x1f\x8b",  # gzip magic and nothing else
        b"\x1f\x8b\x08\x00" + b"\xff" * 40,  # gzip magic, garbage after
        gzip.compress(GOOD)[:-5],  # truncated gzip stream
        gzip.compress(GOOD)[:-4] + b"\x00\x00\x00\x00",  # wrong length in the trailer
        gzip.compress(GOOD)[:-8] + b"\x01\x02\x03\x04" + gzip.compress(GOOD)[-4:],  # bad CRC
    ],
    ids=["magic-only", "garbage", "truncated", "bad-length", "bad-crc"],
)
def test_bad_gzip_raises_data_format_error(tmp_path, data):
    path = tmp_path / "bad.gz"
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match="gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "missing-idx3-ubyte.gz"
    with pytest.raises(FileNotFoundError, match="missing-idx3-ubyte.gz"):
        read_idx(path)


# --------------------------------------------------------------------------- load_mnist


def test_load_mnist_on_digits_directory(digits_mnist_dir):
    X, y = load_mnist(digits_mnist_dir)
    X_digits, y_digits = load_digits(scale=False)
    assert X.shape == (1797, 784) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 240 / 255
    np.testing.assert_array_equal(y, y_digits)
    images = X.reshape(-1, 28, 28)
    np.testing.assert_array_equal(np.rint(images[:, 10:18, 10:18] * 255), X_digits.reshape(-1, 8, 8) * 15)
    border = images.copy()
    border[:, 10:18, 10:18] = 0
    assert not border.any()


def test_load_mnist_first_n_rows(digits_mnist_dir):
    X_all, y_all = load_mnist(digits_mnist_dir)
    X, y = load_mnist(digits_mnist_dir, n=100)
    np.testing.assert_array_equal(X, X_all[:100])
    np.testing.assert_array_equal(y, y_all[:100])
    X, y = load_mnist(str(digits_mnist_dir), n=np.int64(1797))
    assert X.shape == (1797, 784)


def test_load_mnist_uncompressed_and_train_names(tmp_path, digits_mnist_dir):
    write_digits_mnist(tmp_path, kind="train", compressed=False)
    X_plain, y_plain = load_mnist(tmp_path, kind="train")
    X_gz, y_gz = load_mnist(digits_mnist_dir)
    np.testing.assert_array_equal(X_plain, X_gz)
    np.testing.assert_array_equal(y_plain, y_gz)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)  # only train files there


def test_load_mnist_mixed_compression(tmp_path):
    X, y = load_digits(scale=False)
    images = np.zeros((10, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:10].astype(np.uint8))
    X, y_read = load_mnist(tmp_path)
    assert X.shape == (10, 784)
    np.testing.assert_array_equal(y_read, y[:10])


@pytest.mark.parametrize("n", [0, -1, 1798, 2.0, True, "10"])
def test_load_mnist_rejects_bad_n(digits_mnist_dir, n):
    with pytest.raises(InvalidInputError, match="n must be"):
        load_mnist(digits_mnist_dir, n=n)


def test_load_mnist_rejects_unknown_kind(digits_mnist_dir):
    with pytest.raises(InvalidInputError, match="kind"):
        load_mnist(digits_mnist_dir, kind="test")


def test_load_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_mnist(tmp_path / "nowhere")


def test_load_mnist_missing_labels_file(tmp_path):
    write_digits_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


def test_load_mnist_count_mismatch(tmp_path):
    _, y = load_digits(scale=False)
    write_digits_mnist(tmp_path, labels=y[:-1].astype(np.uint8))
    with pytest.raises(DataFormatError, match="count mismatch") as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "1797 images" in message and "1796 labels" in message
    assert "t10k-images-idx3-ubyte.gz" in message and "t10k-labels-idx1-ubyte.gz" in message


@pytest.mark.parametrize(
    "images, labels, problem",
    [
        (np.zeros((5, 784), dtype=np.uint8), np.zeros(5, dtype=np.uint8), "3-D image array"),
        (np.zeros((5, 28, 28), dtype=np.float32), np.zeros(5, dtype=np.uint8), "uint8 pixels"),
        (np.zeros((5, 28, 28), dtype=np.uint8), np.zeros((5, 1), dtype=np.uint8), "1-D label array"),
        (np.zeros((5, 28, 28), dtype=np.uint8), np.zeros(5, dtype=np.float32), "integer labels"),
    ],
    ids=["2-D-images", "float-images", "2-D-labels", "float-labels"],
)
def test_load_mnist_rejects_wrong_arrays(tmp_path, images, labels, problem):
    write_digits_mnist(tmp_path, images=images, labels=labels)
    with pytest.raises(DataFormatError, match=problem):
        load_mnist(tmp_path)


def test_load_mnist_corrupt_file(tmp_path):
    write_digits_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-1]))
    with pytest.raises(DataFormatError, match="truncated IDX payload") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


@needs_real_mnist
def test_real_mnist_test_set():
    X, y = load_mnist(SHARED_MNIST)
    assert X.shape == (10000, 784) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.dtype == np.int64
    assert np.bincount(y, minlength=10).tolist() == MNIST_COUNTS
    X_head, y_head = load_mnist(SHARED_MNIST, n=50)
    np.testing.assert_array_equal(X_head, X[:50])
    np.testing.assert_array_equal(y_head, y[:50])


# --------------------------------------------------------------------------- default_mnist_dir


def test_default_mnist_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("ECO_MNIST_DIR", raising=False)
    assert default_mnist_dir() is None
    monkeypatch.setenv("ECO_MNIST_DIR", "")
    assert default_mnist_dir() is None
    monkeypatch.setenv("ECO_MNIST_DIR", str(tmp_path / "nowhere"))
    assert default_mnist_dir() is None
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("ECO_MNIST_DIR", str(tmp_path / "file"))
    assert default_mnist_dir() is None
    monkeypatch.setenv("ECO_MNIST_DIR", str(tmp_path))
    assert default_mnist_dir() == tmp_path


# --------------------------------------------------------------------------- hostile files
#
# Each hostile read runs in a subprocess, so that a regression shows as a
# failed assertion (peak memory, exception type) or a killed child after
# SUBPROCESS_TIMEOUT, never as a hung or exhausted test run. Peak memory is the
# growth of the child's resident high-water mark (ru_maxrss) over the call.

import json
import os
import subprocess
import sys
import zlib

SUBPROCESS_TIMEOUT = 120
BOMB_ZEROS = 256 << 20  # decompressed size of the gzip bombs: 256 MiB of zeros
PEAK_BOUND = 96 << 20  # the bombed calls below must stay well under BOMB_ZEROS

_HOSTILE_CALL = r"""
import json, resource, sys
from eco import datasets
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    getattr(datasets, sys.argv[1])(sys.argv[2])
    outcome = {"raised": None}
except Exception as exc:
    outcome = {"raised": type(exc).__name__, "message": str(exc)}
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome["peak_growth"] = (after - before) * 1024  # ru_maxrss is in KiB on Linux
print(json.dumps(outcome))
"""


def hostile_call(function, path):
    """Run ``eco.datasets.<function>(path)`` in a child; its outcome and peak memory growth."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", _HOSTILE_CALL, function, str(path)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def gzip_bomb(path, header, zeros=BOMB_ZEROS):
    """A gzip file holding `header` and then `zeros` zero bytes (about 1/1000 the size)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1 << 22)
    with open(path, "wb") as handle:
        handle.write(compressor.compress(header))
        for _ in range(zeros // len(block)):
            handle.write(compressor.compress(block))
        handle.write(compressor.flush())
    return path


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory):
    """An MNIST directory of 10 labels whose images file is a gzip bomb.

    The images header declares 10 images of 28x28 (7,840 bytes) and the stream
    then decompresses to 256 MiB more.
    """
    directory = tmp_path_factory.mktemp("bomb")
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    gzip_bomb(directory / "t10k-images-idx3-ubyte.gz", idx_bytes(0x08, (10, 28, 28), b""))
    return directory


def test_gzip_bomb_after_a_valid_header_is_bounded(bomb_dir):
    path = bomb_dir / "t10k-images-idx3-ubyte.gz"
    assert path.stat().st_size < BOMB_ZEROS // 100  # it is a bomb
    for function, target in (("read_idx", path), ("load_mnist", bomb_dir)):
        outcome = hostile_call(function, target)
        assert outcome["raised"] == "DataFormatError", outcome
        assert "trailing bytes" in outcome["message"] and str(path) in outcome["message"]
        assert outcome["peak_growth"] < PEAK_BOUND, outcome


@pytest.mark.parametrize(
    "function, shape, problem",
    [
        ("read_idx", (2**31, 28, 28), "more than a gzip file"),
        ("load_mnist", (2**31, 28, 28), "count mismatch"),
        ("load_mnist", (10**6, 28, 28), "count mismatch"),
    ],
    ids=["more-than-deflate-can-hold", "mnist-huge", "mnist-more-than-the-labels"],
)
def test_gzip_bomb_declaring_a_huge_shape_is_refused_at_the_header(tmp_path, function, shape, problem):
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    path = gzip_bomb(tmp_path / "t10k-images-idx3-ubyte.gz", idx_bytes(0x08, shape, b""))
    outcome = hostile_call(function, path if function == "read_idx" else tmp_path)
    assert outcome["raised"] == "DataFormatError", outcome
    assert problem in outcome["message"] and str(path) in outcome["message"]
    assert outcome["peak_growth"] < PEAK_BOUND, outcome


def test_gzip_bomb_as_labels_is_refused_by_the_deflate_bound(tmp_path):
    path = gzip_bomb(tmp_path / "labels-idx1-ubyte.gz", idx_bytes(0x08, (2**32 - 1,), b""), zeros=1 << 22)
    outcome = hostile_call("read_idx", path)
    assert outcome["raised"] == "DataFormatError" and "truncated IDX payload" in outcome["message"], outcome
    assert outcome["peak_growth"] < PEAK_BOUND, outcome


def test_gzip_stream_is_checked_to_its_end(tmp_path):
    # a valid payload, then a corrupted CRC: the whole stream is verified
    data = bytearray(gzip.compress(GOOD))
    data[-8] ^= 0xFF
    path = tmp_path / "crc-idx2-ubyte.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(path)


def test_concatenated_gzip_members_and_zero_padding_are_read(tmp_path):
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    raw = idx_bytes(0x0B, (3, 4), array.astype(">i2").tobytes())
    path = tmp_path / "multi-idx2.gz"
    path.write_bytes(gzip.compress(raw[:9]) + gzip.compress(raw[9:]) + b"\x00" * 16)
    np.testing.assert_array_equal(read_idx(path), array)
    path.write_bytes(gzip.compress(raw) + b"junk")
    with pytest.raises(DataFormatError, match="gzip"):
        read_idx(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_blocking(tmp_path):
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10, dtype=np.uint8))
    fifo = tmp_path / "t10k-images-idx3-ubyte"
    os.mkfifo(fifo)  # nobody writes: a blocking open would hang forever
    for function, target in (("read_idx", fifo), ("load_mnist", tmp_path)):
        outcome = hostile_call(function, target)
        assert outcome["raised"] == "DataFormatError" and "not a regular file" in outcome["message"], outcome


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_symlink_to_a_device_is_refused(tmp_path):
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10, dtype=np.uint8))
    link = tmp_path / "t10k-images-idx3-ubyte.gz"
    link.symlink_to("/dev/zero")
    for function, target in (("read_idx", link), ("load_mnist", tmp_path)):
        outcome = hostile_call(function, target)
        assert outcome["raised"] == "DataFormatError" and "not a regular file" in outcome["message"], outcome
        assert outcome["peak_growth"] < PEAK_BOUND, outcome


def test_symlink_to_a_regular_idx_file_is_read(tmp_path, digits_mnist_dir):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).symlink_to(digits_mnist_dir / name)
    X, y = load_mnist(tmp_path)
    X_ref, y_ref = load_mnist(digits_mnist_dir)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)
