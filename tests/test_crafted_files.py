"""Model files from untrusted sources: a corpus of crafted files, each refused with ModelFileError.

Every crafted file has valid checksums (the digests are recomputed after
the change), so only the checks of the content and the certificate can
catch it. The corpus is loaded in a subprocess that reports each outcome and
its peak resident memory, so that a file making the loader allocate much
more than the file needs fails the test (and a crash fails it too).
"""

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest

import eco
from eco.exceptions import ModelFileError

META, META_SHA = "eco-metadata.json", "eco-metadata.sha256"
# peak resident memory a malformed file may add to the loader, beyond a good load
MEMORY_BOUND_MB = 150


def _small_model(kind="binary"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(24, 3))
    if kind == "binary":
        y = (X[:, 0] + 0.3 * rng.normal(size=24) > 0).astype(int)
    else:
        y = np.argmax(X + 0.3 * rng.normal(size=(24, 3)), axis=1)
    m = eco.CPSVM(C=1.0, gamma=0.5).fit(X, y, ids=[f"row-{k}" for k in range(24)])
    m.decrement(["row-3", "row-7"])
    return m


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i.filename) for i in zf.infolist()}


def _npy(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
    return buf.getvalue()


def _load_npy(raw):
    return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)


def _write(path, members, compress=None):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = (compress or {}).get(name, zipfile.ZIP_STORED)
            zf.writestr(info, data)


def _craft(good, path, arrays=None, meta=None, raw_meta=None):
    """Copy of the file `good` with arrays replaced and the metadata edited, digests recomputed."""
    members = _members(good)
    doc = json.loads(members[META])
    for name, fn in (arrays or {}).items():
        arr = fn(_load_npy(members[f"{name}.npy"]).copy())
        data = _npy(arr)
        members[f"{name}.npy"] = data
        doc["arrays"][name].update(dtype=arr.dtype.str, shape=list(arr.shape),
                                   sha256=hashlib.sha256(data).hexdigest())
    if meta is not None:
        meta(doc)
    meta_bytes = raw_meta if raw_meta is not None else json.dumps(doc).encode()
    members[META] = meta_bytes
    members[META_SHA] = hashlib.sha256(meta_bytes).hexdigest().encode()
    _write(path, members)
    return path


def _edited_meta(good, old, new):
    """The metadata of `good` as bytes, its first `old` replaced by `new` (for JSON that
    json.dumps cannot write)."""
    text = _members(good)[META].decode()
    assert old in text
    return text.replace(old, new, 1).encode()


def _add_arrays(good, path, arrays, version=None):
    """Copy of `good` with extra array members (digests right), optionally another version."""
    members = _members(good)
    doc = json.loads(members[META])
    for name, arr in arrays.items():
        data = _npy(arr)
        members[f"{name}.npy"] = data
        doc["arrays"][name] = dict(member=f"{name}.npy", dtype=arr.dtype.str,
                                   shape=list(arr.shape), sha256=hashlib.sha256(data).hexdigest())
    if version is not None:
        doc["format_version"] = version
    meta_bytes = json.dumps(doc).encode()
    members[META] = meta_bytes
    members[META_SHA] = hashlib.sha256(meta_bytes).hexdigest().encode()
    _write(path, members)
    return path


def _as_version_2(good, path, st, drop=(), garbage=False):
    """`good` as a version 2 file: with every head's gradients and inverse margin matrix.

    With `garbage`, those derived arrays are zeros and random numbers (version 2
    files are read with their derived arrays ignored: they must not matter).
    """
    rng = np.random.default_rng(5)
    extra = {}
    for h, hd in enumerate(st.heads):
        g, R = np.asarray(hd.g), np.asarray(hd.Rinv)
        extra[f"head{h}_g"] = np.zeros_like(g) if garbage else g
        extra[f"head{h}_Rinv"] = rng.normal(size=R.shape) if garbage else R
    for name in drop:
        extra.pop(name)
    return _add_arrays(good, path, extra, version=2)


def _singular_margin(good, path, st):
    """A reserve example given the features of a margin vector and put in the margin set."""
    sets = np.asarray(st.heads[0].sets)
    m, r = _first(st, 1), _first(st, 0)
    order = np.concatenate([np.asarray(st.heads[0].margin_order), [r]]).astype(
        np.asarray(st.heads[0].margin_order).dtype)
    path = _craft(good, path, {"features": _copy_row(m, r), "head0_sets": _set(r, 1)})
    return _craft(path, path, {"head0_margin_order": lambda a: order})


def _copy_row(src, dst):
    def fn(a):
        a[dst] = a[src]
        return a
    return fn


def _set(index, value):
    def fn(a):
        a[index] = value
        return a
    return fn


def _first(st, code):
    return int(np.flatnonzero(np.asarray(st.heads[0].sets) == code)[0])


def _corpus(tmp_path):
    """{case: (path, words the error must contain)}."""
    m = _small_model()
    good = tmp_path / "good.eco"
    m.save(good)
    st = m.to_state()
    C = float(st.slot_C[0])
    margin, reserve = _first(st, 1), _first(st, 0)
    p = lambda name: tmp_path / f"{name}.eco"  # noqa: E731
    cases = {
        "alpha above C": (_craft(good, p("a"), {"head0_alpha": _set(margin, 2 * C + 1)}),
                          "outside [0, C]"),
        "alpha below 0": (_craft(good, p("a0"), {"head0_alpha": _set(margin, -0.5)}),
                          "outside [0, C]"),
        "alpha contradicts its set": (
            _craft(good, p("b"), {"head0_alpha": _set(reserve, C / 2)}), "contradicts its set"),
        "head labels not +-1": (_craft(good, p("c"), {"head0_y": _set(0, 0.5)}), "+1/-1"),
        "head labels flipped": (_craft(good, p("d"), {"head0_y": lambda a: -a}), "+1/-1"),
        "bias 123": (_craft(good, p("e"), meta=lambda d: d["model"]["b"].__setitem__(0, 123.0)),
                     "certificate"),
        "singular margin set (a duplicate row made a margin vector)": (
            _singular_margin(good, p("f"), st), ("refactorised", "singular")),
        "gradients smuggled into a version 3 file": (
            _add_arrays(good, p("g"), {"head0_g": np.zeros(st.n_active)}), "unexpected arrays"),
        "version 2 file without its inverse matrix": (
            _as_version_2(good, p("g2"), st, drop=("head0_Rinv",)), "head0_Rinv"),
        "negative gamma_": (_craft(good, p("h"), meta=lambda d: d["model"].__setitem__(
            "gamma_", -0.5)), "gamma_"),
        "negative gamma parameter": (_craft(good, p("h2"), meta=lambda d: d["model"][
            "params"].__setitem__("gamma", -0.5)), "gamma"),
        "repeated ids": (_craft(good, p("i"), {"slot_ids": _set(1, "row-0")}), "repeated ids"),
        "2,000,000 declared heads": (
            _craft(good, p("j"), meta=lambda d: d["model"].update(
                n_heads=2_000_000, b=[0.0] * 2_000_000)), "members allow"),
        "2,000,000 heads, short lists": (
            _craft(good, p("j2"), meta=lambda d: d["model"].update(n_heads=2_000_000)), "heads"),
        "JSON nested 200,000 deep": (
            _craft(good, p("k"), raw_meta=b"[" * 200_000 + b"]" * 200_000), "eco-metadata.json"),
        "JSON nested 40,000 deep (within the size bound)": (
            _craft(good, p("k1"), raw_meta=b"[" * 40_000 + b"]" * 40_000), "not valid JSON"),
        "metadata nested 40 deep": (
            _craft(good, p("k2"), meta=lambda d: d["model"].__setitem__(
                "deep", json.loads("[" * 40 + "]" * 40))), "nested deeper"),
        "huge slot count": (_craft(good, p("l"), meta=lambda d: d["model"].update(
            n_slots=10**12, n_given=10**12)), "slots declared"),
        "huge declared shape": (
            _craft(good, p("m"), meta=lambda d: d["arrays"]["features"].update(
                shape=[10**9, 10**9])), "need"),
        # numbers and shapes that once escaped as TypeError, ValueError,
        # IndexError, or loaded and broke the next increment (OverflowError)
        "bias 10**400 (a JSON integer beyond float)": (
            _craft(good, p("n1"), meta=lambda d: d["model"]["b"].__setitem__(0, 10**400)), "bias"),
        "gamma_ 10**400": (_craft(good, p("n2"), meta=lambda d: d["model"].__setitem__(
            "gamma_", 10**400)), "gamma_"),
        "an integer of 5,000 digits": (_craft(good, p("n3"), raw_meta=_edited_meta(
            good, '"n_given": ', '"n_given": ' + "9" * 5000 + ", \"was\": ")),
            "not valid JSON"),
        "n_given 2**63": (_craft(good, p("n4"), meta=lambda d: d["model"].__setitem__(
            "n_given", 2**63)), "examples declared given"),
        "2-D ids": (_craft(good, p("n5"), {"slot_ids": lambda a: a.reshape(2, -1)}), "ids of"),
        "1-D features": (_craft(good, p("n6"), {"features": lambda a: a.ravel()}),
                         "features has shape"),
        "float ids, two of them NaN": (_craft(good, p("n7"), {"slot_ids": lambda a: np.where(
            np.arange(len(a)) < 2, np.nan, np.arange(len(a), dtype=float))}), "ids of dtype"),
        "a NaN class": (_craft(good, p("n8"), {"classes_": lambda a: np.array([np.nan, 1.0])}),
                        "class is not a finite"),
        "classes out of order": (_craft(good, p("n9"), {"classes_": lambda a: a[::-1].copy()}),
                                 "not sorted"),
        # certified exact, but for another problem than its parameters say
        "gamma_ other than the gamma parameter": (_craft(good, p("o1"), meta=lambda d: d[
            "model"]["params"].__setitem__("gamma", 0.25)), "gamma=0.25 gives"),
        "class_weight_ other than class_weight=None": (_craft(good, p("o2"), {
            "class_weight_": lambda a: 2 * a}), "class_weight=None gives"),
    }
    bomb = tmp_path / "bomb.eco"
    _zip_bomb(good, bomb)
    with zipfile.ZipFile(bomb) as zf:  # a well-formed archive that inflates to 1 GiB
        assert zf.getinfo("features.npy").file_size == 1 << 30
        with zf.open("features.npy") as fh:
            assert fh.read(1 << 20) == bytes(1 << 20)
    cases["zip bomb (1 GiB deflated member)"] = (bomb, "compressed")
    link = tmp_path / "zero.eco"
    os.symlink("/dev/zero", link)
    cases["symlink to /dev/zero"] = (link, "not a regular file")
    fifo = tmp_path / "fifo.eco"
    os.mkfifo(fifo)
    cases["FIFO"] = (fifo, "not a regular file")
    return good, cases


def _zip_bomb(good, path):
    """The good file with its features member replaced by 1 GiB of zeros, deflated (~1 MB).

    Written by hand: one 16 MiB block of zeros is deflated with a full flush
    (which resets the compressor, so the same bytes deflate every block) and
    repeated 64 times.
    """
    members = _members(good)
    members["features.npy"] = None
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    chunk = bytes(1 << 24)
    block = comp.compress(chunk) + comp.flush(zlib.Z_FULL_FLUSH)
    stream = block * 64 + comp.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(64):
        crc = zlib.crc32(chunk, crc)
    out, central = io.BytesIO(), []
    for name, data in members.items():
        raw, method, size = (stream, 8, 64 * len(chunk)) if data is None else (data, 0, len(data))
        c = crc if data is None else zlib.crc32(data)
        offset = out.tell()
        fields = (20, 0, method, 0, 0x21, c, len(raw), size, len(name), 0)
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields) + name.encode() + raw)
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, *fields, 0, 0, 0,
                                   0, offset) + name.encode())
    start = out.tell()
    cd = b"".join(central)
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central),
                               len(cd), start, 0))
    path.write_bytes(out.getvalue())


_PROBE = r"""
import json, resource, sys
import eco
from eco.exceptions import ModelFileError
good, paths = sys.argv[1], json.loads(sys.argv[2])
eco.load(good)  # warm: imports, first allocations
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for name, path in paths.items():
    try:
        eco.load(path)
        out[name] = ["loaded", ""]
    except ModelFileError as exc:
        out[name] = ["ModelFileError", str(exc)]
    except BaseException as exc:
        out[name] = [type(exc).__name__, str(exc)[:300]]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcomes": out, "growth_mb": (peak - base) / 1024}))
"""


def test_crafted_corpus_is_refused_in_bounded_memory(tmp_path):
    good, cases = _corpus(tmp_path)
    paths = {name: str(path) for name, (path, _) in cases.items()}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(eco.__file__))] + sys.path))
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(good), json.dumps(paths)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (_, words) in cases.items():
        kind, message = report["outcomes"][name]
        assert kind == "ModelFileError", f"{name}: {kind} {message}"
        words = (words,) if isinstance(words, str) else words
        assert any(w in message for w in words), f"{name}: {message!r} does not say {words!r}"
    assert report["growth_mb"] < MEMORY_BOUND_MB, report["growth_mb"]


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_version_2_file_loads_with_derived_arrays_ignored(kind, tmp_path):
    """A version 2 file (derived state stored) still loads; what it stores as derived
    state is never used, even when garbage: the model is recomputed and exact."""
    m = _small_model(kind)
    m.save(tmp_path / "m.eco")
    st = m.to_state()
    for garbage in (False, True):
        path = _as_version_2(tmp_path / "m.eco", tmp_path / f"v2-{garbage}.eco", st,
                             garbage=garbage)
        loaded = eco.load(path)
        assert loaded.state_digest() == m.state_digest()
        assert loaded.kkt_violation() < 1e-8
        X = m.head_set_.stored_data()
        assert np.array_equal(loaded.decision_function(X), m.decision_function(X))
        for h in range(st.n_heads):
            # recomputed, not read: equal to the saved model's up to rounding
            st_l, st_m = loaded.head_set_.head_state(h), m.head_set_.head_state(h)
            np.testing.assert_allclose(st_l.Rinv, st_m.Rinv, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(st_l.g, st_m.g, rtol=1e-6, atol=1e-8)
        loaded.decrement([loaded.ids_[0]])
        assert loaded.verify(reference=True).ok


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_good_file_certifies(kind, tmp_path):
    m = _small_model(kind)
    m.save(tmp_path / "m.eco")
    loaded = eco.load(tmp_path / "m.eco")  # certified, bit for bit
    assert loaded.state_digest() == m.state_digest()
    assert loaded.verify().ok


def test_random_bit_flip_at_every_offset(tmp_path):
    """One random bit flipped at each byte: refused, or (slack bytes) the very same model."""
    m = _small_model()
    path = tmp_path / "m.eco"
    m.save(path)
    original = path.read_bytes()
    digest = m.state_digest()
    rng = np.random.default_rng(11)
    bad = tmp_path / "flipped.eco"
    outcomes = {"refused": 0, "same model": 0}
    for offset in range(len(original)):
        data = bytearray(original)
        data[offset] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(data))
        try:
            loaded = eco.load(bad)
        except ModelFileError:
            outcomes["refused"] += 1
            continue
        assert loaded.state_digest() == digest, f"flip at offset {offset} changed the model"
        outcomes["same model"] += 1
    assert outcomes["refused"] > 0.8 * len(original)


@pytest.mark.parametrize("name, d, C, scale, kernel", [
    ("breast_cancer", 3, 100.0, 1e3, "linear"),
    ("iris", 2, 0.01, 1e3, "linear"),
    ("iris", 2, 100.0, 1e-3, "poly"),
    ("wine", 3, 1.0, 1e3, "linear"),
])
def test_degenerate_but_genuine_models_certify(name, d, C, scale, kernel, tmp_path):
    """Large or tiny kernel values: the certificate allows their rounding, a genuine file loads."""
    from sklearn import datasets
    X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    rng = np.random.default_rng(1)
    idx = rng.choice(len(y), size=min(120, len(y)), replace=False)
    X, y = X[idx], y[idx]
    X = (X - X.mean(0)) / (X.std(0) + 1e-12)
    X = np.ascontiguousarray(scale * (X @ rng.standard_normal((X.shape[1], d))
                                      / np.sqrt(X.shape[1])))
    m = eco.CPSVM(C=C, kernel=kernel, degree=2, gamma=1.0, coef0=1.0).fit(X, y)
    m.decrement(list(m.ids_)[:30])
    m.save(tmp_path / "m.eco")
    assert eco.load(tmp_path / "m.eco").state_digest() == m.state_digest()


@pytest.mark.parametrize("params, removal", [
    (dict(gamma="scale"), "some"),
    (dict(gamma="scale"), "all"),
    (dict(gamma="auto"), "some"),
    (dict(gamma=0.0), "some"),
    (dict(kernel="linear", gamma=0.0), "some"),
    (dict(kernel="linear"), "some"),
    (dict(kernel="poly", degree=2, gamma=0, coef0=1.0), "some"),
    (dict(class_weight="balanced"), "some"),
    (dict(class_weight="balanced", gamma="scale"), "a class"),
    (dict(class_weight={0: 2.0, 1: 0.5}), "some"),
    (dict(class_weight={0: 2.0, 1: 0.5, 7: 3.0}), "some"),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()))
def test_genuine_files_with_resolved_hyper_parameters_load(params, removal, tmp_path):
    """Every model eco makes loads, bit for bit: the loader's check of ``gamma_`` and
    ``class_weight_`` against the parameters refuses none of them (gamma=0 once was)."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(70, 3)) * np.array([1.0, 3.0, 0.2])
    y = (X[:, 0] + 0.4 * rng.normal(size=70) > 0.3).astype(int)
    m = eco.CPSVM(C=1.5, **params).fit(X[:60], y[:60], sample_weight=np.r_[0.0, np.ones(59)])
    m.increment(X[60:], y[60:])
    gone = {"some": list(range(0, 70, 4)), "all": list(range(70)),
            "a class": [int(i) for i in np.flatnonzero(y == 0)]}[removal]
    m.decrement(gone)
    m.save(tmp_path / "m.eco")
    loaded = eco.load(tmp_path / "m.eco")
    assert loaded.state_digest() == m.state_digest()
    assert loaded.gamma_ == m.gamma_
    assert np.array_equal(loaded.class_weight_, m.class_weight_)
    if removal != "all":
        assert loaded.verify(reference=True).ok


def test_precomputed_kernel_file_must_be_symmetric(tmp_path):
    """An asymmetric kernel, which fit refuses, is refused on load too (once it loaded, certified)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3))
    y = (X[:, 0] > 0).astype(int)
    m = eco.CPSVM(kernel="precomputed").fit(X @ X.T, y)
    m.decrement([3, 5])
    m.save(tmp_path / "m.eco")
    assert eco.load(tmp_path / "m.eco").state_digest() == m.state_digest()
    crafted = _craft(tmp_path / "m.eco", tmp_path / "asym.eco",
                     {"kernel": _set((0, 1), 0.5 + float(m.head_set_.kernel_block([0])[0, 1]))})
    with pytest.raises(ModelFileError, match="must be symmetric"):
        eco.load(crafted)
