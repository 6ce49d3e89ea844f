"""Saving and loading models: bit-for-bit round trips, the file format, bad files."""

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import eco
from eco import CPSVM
from eco.exceptions import InvalidInputError, ModelFileError
from eco import load, save_model
from eco.persistence import FORMAT_NAME, FORMAT_VERSION
from eco.testing import DECISION_TOL, KKT_TOL, assert_exact
from exact_helpers import noisy_classes


def _data(n=90, d=4, n_classes=2, seed=0):
    return noisy_classes(n=n, n_classes=n_classes, d=d, noise=0.6, seed=seed)


def _rbf(A, B, gamma=0.3):
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
    return np.exp(-gamma * np.maximum(d2, 0.0))


def _model(case):
    """A fitted model with some history (removed slots, a re-used id)."""
    if case == "binary":
        X, y = _data()
        m = CPSVM(C=2.0).fit(X[:70], y[:70])
        m.increment(X[70:], y[70:])
        m.decrement([3, 10, 71], batch=True)
        m.increment(X[3:4], y[3:4], ids=[3])  # an id removed and given again
        return m, X
    if case == "multiclass_str_ids":
        X, y = _data(n_classes=3, seed=1)
        ids = [f"ex-{i}" for i in range(len(y))]
        m = CPSVM(C=1.0, kernel="poly", degree=2, class_weight={0: 1.0, 2: 3.0}).fit(
            X[:80], y[:80], ids=ids[:80])
        m.increment(X[80:], y[80:], ids=ids[80:])
        m.decrement(["ex-1", "ex-5", "ex-81"], batch=False)
        return m, X
    if case == "mixed_ids_sample_weight":
        X, y = _data(seed=2)
        ids = [i if i % 2 else f"s{i}" for i in range(len(y))]
        sw = np.linspace(0.5, 2.0, len(y))
        m = CPSVM(C=np.float64(1.5), class_weight="balanced").fit(X, y, ids=ids, sample_weight=sw)
        m.decrement([1, "s2"])
        return m, X
    if case == "precomputed_binary":
        X, y = _data(seed=3)
        K = _rbf(X, X)
        m = CPSVM(C=1.0, kernel="precomputed").fit(K[:70, :70], y[:70])
        m.increment(K[70:, :], y[70:])
        m.decrement([0, 5, 75])
        return m, K
    if case == "precomputed_multiclass":
        X, y = _data(n_classes=4, seed=4)
        K = _rbf(X, X, 0.5)
        m = CPSVM(C=3.0, kernel="precomputed").fit(K, y)
        m.decrement([2, 4, 8])
        return m, K
    raise ValueError(case)


CASES = ["binary", "multiclass_str_ids", "mixed_ids_sample_weight", "precomputed_binary",
         "precomputed_multiclass"]


@pytest.mark.parametrize("case", CASES)
def test_round_trip_is_bit_for_bit(case, tmp_path):
    m, data = _model(case)
    path = tmp_path / "model.eco"
    m.save(path)
    m2 = eco.load(path)
    assert type(m2) is CPSVM
    assert m2.state_digest() == m.state_digest()
    assert m2.get_params() == m.get_params()
    assert np.array_equal(m2.ids_, m.ids_) and m2.ids_.dtype == m.ids_.dtype
    assert np.array_equal(m2.classes_, m.classes_)
    assert np.array_equal(m2.head_set_.slot_C, m.head_set_.slot_C)
    assert m2.gamma_ == m.gamma_
    # same predictions, bit for bit, on the stored rows
    if m.kernel == "precomputed":
        Xq = m.head_set_.stored_data()
    else:
        Xq = m.head_set_.stored_data()
    assert np.array_equal(m2.decision_function(Xq), m.decision_function(Xq))
    assert np.array_equal(m2.predict(Xq), m.predict(Xq))
    assert m2.kkt_violation() == m.kkt_violation()


def _assert_same_model(a, b, what):
    """`b` (loaded, derived state recomputed) is exact and decides as `a` up to rounding."""
    assert np.array_equal(np.asarray(a.ids_), np.asarray(b.ids_)), what
    assert b.kkt_violation() < KKT_TOL, f"{what}: KKT {b.kkt_violation():.3g}"
    Xq = a.head_set_.stored_data()
    if a.kernel == "precomputed":
        # the same rows in both (same slots): their kernel rows over the stored slots
        Xq = a.head_set_.kernel_block(a.head_set_.active_slots())
    fa, fb = a.decision_function(Xq), b.decision_function(Xq)
    gap = float(np.max(np.abs(fa - fb) / np.maximum(1.0, np.abs(fa)), initial=0.0))
    assert gap <= DECISION_TOL, f"{what}: decision values differ by {gap:.3g}"


@pytest.mark.parametrize("case", CASES)
def test_later_updates_match_without_round_trip(case, tmp_path):
    """Decrements (batch and sequential) and increments after a load give the same models.

    The loaded model recomputes its gradients and inverse margin matrix, which
    may differ from the saved model's in the last bits; so may later states.
    Both must stay exact: same ids, KKT certificate, the same decision values
    up to rounding, and equal to a refit from scratch at the end.
    """
    m, _ = _model(case)
    m.save(tmp_path / "m.eco")
    m2 = load(tmp_path / "m.eco")
    rng = np.random.default_rng(7)
    for step in range(4):
        ids = list(m.ids_)
        pick = [ids[k] for k in rng.choice(len(ids), 3, replace=False)]
        # keep one row to learn it back (the model erases what it removes)
        slot = m.head_set_.slot_of(pick[0])
        if m.kernel == "precomputed":
            n = m.head_set_.n_slots
            K = m.head_set_.kernel_block([slot])
            row = np.concatenate([K[0], K[0, [slot]]])[None, :]
            assert row.shape == (1, n + 1)
        else:
            row = m.head_set_.features_of([slot])
        label = m.classes_[m.head_set_.slot_labels[[slot]]]
        m.decrement(pick, batch=bool(step % 2), audit=True)
        r2 = m2.decrement(pick, batch=bool(step % 2), audit=True)
        assert r2.digest_after == m2.state_digest()
        _assert_same_model(m, m2, f"decrement {step}")
        m.increment(row, label, ids=[f"again-{step}"])
        m2.increment(row, label, ids=[f"again-{step}"])
        _assert_same_model(m, m2, f"increment {step}")
    assert_exact(m2)


def test_save_load_save_gives_identical_bytes(tmp_path):
    m, _ = _model("multiclass_str_ids")
    m.save(tmp_path / "a.eco")
    load(tmp_path / "a.eco").save(tmp_path / "b.eco")
    assert (tmp_path / "a.eco").read_bytes() == (tmp_path / "b.eco").read_bytes()


def test_file_format_is_documented_layout(tmp_path):
    m, _ = _model("mixed_ids_sample_weight")
    path = tmp_path / "m.eco"
    save_model(m, path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta_bytes = zf.read("eco-metadata.json")
        meta = json.loads(meta_bytes)
        assert zf.read("eco-metadata.sha256").decode() == hashlib.sha256(meta_bytes).hexdigest()
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert meta["format"] == FORMAT_NAME == "eco-cpsvm"
        assert meta["format_version"] == FORMAT_VERSION == 3
        # primary state only: no gradients, no inverse margin matrix, no counters
        assert not [k for k in meta["arrays"] if k.endswith(("_g", "_Rinv"))]
        assert set(meta["model"]) == {"params", "gamma_", "n_features_in_", "n_heads", "b",
                                      "n_slots", "n_given"}
        assert meta["eco_version"] == eco.__version__
        assert set(names) == {"eco-metadata.json", "eco-metadata.sha256"} | {
            e["member"] for e in meta["arrays"].values()}
        for name, entry in meta["arrays"].items():
            raw = zf.read(entry["member"])
            assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
            arr = np.load(io.BytesIO(raw), allow_pickle=False)  # never needs pickle
            assert arr.dtype != object
            assert arr.dtype.str == entry["dtype"] and list(arr.shape) == entry["shape"]
        # mixed int/str ids: an int64 array, a unicode array and a mask
        assert meta["arrays"]["slot_ids_int"]["dtype"] == "<i8"
        assert meta["arrays"]["slot_ids_str"]["dtype"].startswith("<U")
        assert "slot_ids" in meta["object_arrays"]
        # C given as a NumPy float keeps its type; class_weight is a list of pairs
        assert meta["model"]["params"]["C"] == {"__numpy__": "<f8", "value": 1.5}
        assert meta["model"]["params"]["class_weight"] == "balanced"


def test_class_weight_with_non_str_keys_round_trips(tmp_path):
    X, y = _data(n_classes=3, seed=5)
    y = y - 1  # labels -1, 0, 1
    m = CPSVM(class_weight={-1: 2.0, 1: np.float64(0.5)}).fit(X, y)
    m.save(tmp_path / "m.eco")
    meta = json.loads(zipfile.ZipFile(tmp_path / "m.eco").read("eco-metadata.json"))
    pairs = meta["model"]["params"]["class_weight"]["__pairs__"]
    assert pairs[0] == [-1, 2.0] and pairs[1][0] == 1
    m2 = load(tmp_path / "m.eco")
    assert m2.class_weight == m.class_weight
    assert all(type(k) is int for k in m2.class_weight)
    assert m2.state_digest() == m.state_digest()


@pytest.mark.parametrize("dtype", [object, str])
def test_string_labels_round_trip(dtype, tmp_path):
    X, y = _data(n_classes=3, seed=6)
    labels = np.array(["cat", "dog", "eel"], dtype=dtype)[y]
    m = CPSVM().fit(X, labels)
    m.save(tmp_path / "m.eco")
    m2 = load(tmp_path / "m.eco")
    assert m2.state_digest() == m.state_digest()
    assert m2.classes_.dtype == m.classes_.dtype  # object labels stay object
    assert np.array_equal(m2.predict(X), m.predict(X))
    assert m2.predict(X).dtype == m.predict(X).dtype


# tuple ids and ints beyond int64 are in test_bad_input.py (fit refuses them today)
@pytest.mark.parametrize("bad_id, type_name", [
    (1.5, "float"), (b"raw", "bytes"), (frozenset({1}), "frozenset"),
])
def test_unsupported_id_types_are_refused_at_save(bad_id, type_name, tmp_path):
    X, y = _data(n=40)
    ids = list(range(39)) + [bad_id]
    m = CPSVM().fit(X, y, ids=ids)
    digest = m.state_digest()
    with pytest.raises(InvalidInputError, match=f"id .* of type {type_name}"):
        m.save(tmp_path / "m.eco")
    assert not os.listdir(tmp_path)  # nothing written, no temporary file left
    assert m.state_digest() == digest


def test_str_id_with_trailing_nul_is_refused(tmp_path):
    X, y = _data(n=40)
    m = CPSVM().fit(X, y, ids=[f"i{k}" for k in range(39)] + ["x\x00"])
    with pytest.raises(InvalidInputError, match="NUL"):
        m.save(tmp_path / "m.eco")


def test_save_unfitted_raises_not_fitted(tmp_path):
    with pytest.raises(NotFittedError):
        CPSVM().save(tmp_path / "m.eco")
    assert not os.listdir(tmp_path)


def test_save_replaces_existing_file(tmp_path):
    m, _ = _model("binary")
    path = tmp_path / "m.eco"
    path.write_bytes(b"old content")
    m.save(path)
    assert load(path).state_digest() == m.state_digest()
    assert os.listdir(tmp_path) == ["m.eco"]


# ------------------------------------------------------------------ bad files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    m, _ = _model("multiclass_str_ids")
    path = tmp_path_factory.mktemp("saved") / "m.eco"
    m.save(path)
    return path.read_bytes()


def _rezip(raw, replace=None, drop=(), add=None):
    """A copy of the archive `raw` with members replaced, dropped or added."""
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename in drop:
                continue
            data = src.read(info.filename)
            if replace and info.filename in replace:
                data = replace[info.filename]
            dst.writestr(info.filename, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return out.getvalue()


def _with_metadata(raw, edit):
    """Rewrite the metadata with `edit` applied and its digest made consistent."""
    meta = json.loads(zipfile.ZipFile(io.BytesIO(raw)).read("eco-metadata.json"))
    edit(meta)
    data = json.dumps(meta).encode()
    return _rezip(raw, replace={"eco-metadata.json": data,
                                "eco-metadata.sha256": hashlib.sha256(data).hexdigest().encode()})


def _load_bytes(tmp_path, data, name="bad.eco"):
    p = tmp_path / name
    p.write_bytes(data)
    return load(p)


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, cut, tmp_path):
    with pytest.raises(ModelFileError, match="truncated"):
        _load_bytes(tmp_path, saved[: int(len(saved) * cut)])


def test_empty_file(tmp_path):
    with pytest.raises(ModelFileError, match="not an eco model file"):
        _load_bytes(tmp_path, b"")


def test_tampered_array_member(saved, tmp_path):
    zf = zipfile.ZipFile(io.BytesIO(saved))
    raw = bytearray(zf.read("head1_alpha.npy"))
    raw[-3] ^= 0x01  # one bit of one coefficient
    data = _rezip(saved, replace={"head1_alpha.npy": bytes(raw)})
    with pytest.raises(ModelFileError, match="checksum mismatch in member 'head1_alpha.npy'"):
        _load_bytes(tmp_path, data)


def test_bit_flip_in_place_is_detected(saved, tmp_path):
    """A flipped byte in the raw file (zip CRC or our digest catches it)."""
    zf = zipfile.ZipFile(io.BytesIO(saved))
    info = zf.getinfo("features.npy")
    data = bytearray(saved)
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0x40
    with pytest.raises(ModelFileError, match="features.npy"):
        _load_bytes(tmp_path, bytes(data))


def test_tampered_metadata(saved, tmp_path):
    meta = zipfile.ZipFile(io.BytesIO(saved)).read("eco-metadata.json")
    data = _rezip(saved, replace={"eco-metadata.json": meta.replace(b'"C": 1.0', b'"C": 9.0')})
    assert data != saved
    with pytest.raises(ModelFileError, match="checksum mismatch in member eco-metadata.json"):
        _load_bytes(tmp_path, data)


@pytest.mark.parametrize("version", [1, 4, 0, "2", None, True, 2.0])
def test_wrong_format_version(saved, version, tmp_path):
    data = _with_metadata(saved, lambda m: m.__setitem__("format_version", version))
    with pytest.raises(ModelFileError, match="format version"):
        _load_bytes(tmp_path, data)


def test_other_format_name(saved, tmp_path):
    data = _with_metadata(saved, lambda m: m.__setitem__("format", "other"))
    with pytest.raises(ModelFileError, match="not an eco model file"):
        _load_bytes(tmp_path, data)


def test_random_bytes(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(ModelFileError, match="not an eco model file"):
        _load_bytes(tmp_path, data)


def test_plain_npz(tmp_path):
    p = tmp_path / "plain.npz"
    np.savez(p, a=np.arange(3), b=np.ones((2, 2)))
    with pytest.raises(ModelFileError, match="no eco-metadata.json member"):
        load(p)


def test_json_file(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"format": "eco-cpsvm", "format_version": 1}))
    with pytest.raises(ModelFileError, match="not a zip archive"):
        load(p)


def test_missing_member(saved, tmp_path):
    with pytest.raises(ModelFileError, match="head0_alpha.npy.*missing"):
        _load_bytes(tmp_path, _rezip(saved, drop=("head0_alpha.npy",)))


def test_extra_member(saved, tmp_path):
    with pytest.raises(ModelFileError, match="unexpected members"):
        _load_bytes(tmp_path, _rezip(saved, add={"evil.py": b"print('x')"}))


class _Boom:
    """Unpickling this would create a marker file."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_member_is_never_executed(saved, tmp_path):
    """An object array (pickle inside .npy) with a consistent digest is refused unread."""
    marker = tmp_path / "executed"
    _Boom.marker = marker
    obj = np.empty(3, dtype=object)
    obj[:] = [_Boom(), _Boom(), _Boom()]
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    payload = buf.getvalue()
    assert b"open" in payload  # the pickle really holds the call

    def edit(meta):
        meta["arrays"]["classes_"]["sha256"] = hashlib.sha256(payload).hexdigest()
        meta["arrays"]["classes_"]["dtype"] = "|O"
    data = _with_metadata(saved, edit)
    data = _rezip(data, replace={"classes_.npy": payload})
    with pytest.raises(ModelFileError, match="classes_.npy"):
        _load_bytes(tmp_path, data)
    assert not marker.exists()
    # the pickle would indeed run if unpickled: the test can fail
    np.load(io.BytesIO(payload), allow_pickle=True)
    assert marker.exists()


def test_inconsistent_state_is_refused(saved, tmp_path):
    """Digests consistent but arrays of the wrong shape: ModelFileError, not a crash."""
    arr = np.zeros(5)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    payload = buf.getvalue()

    def edit(meta):
        meta["arrays"]["head0_alpha"].update(
            sha256=hashlib.sha256(payload).hexdigest(), shape=[5])
    data = _rezip(_with_metadata(saved, edit), replace={"head0_alpha.npy": payload})
    with pytest.raises(ModelFileError, match="inconsistent model file: head 0: alpha"):
        _load_bytes(tmp_path, data)


def test_unknown_parameter_is_refused(saved, tmp_path):
    data = _with_metadata(saved, lambda m: m["model"]["params"].__setitem__("evil", 1))
    with pytest.raises(ModelFileError, match="parameters"):
        _load_bytes(tmp_path, data)


def test_load_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.eco")


@pytest.mark.parametrize("path", [3, None, 1.5, ["m.eco"]])
def test_path_must_be_a_path(path):
    m, _ = _model("binary")
    with pytest.raises(InvalidInputError, match="path must be"):
        m.save(path)
    with pytest.raises(InvalidInputError, match="path must be"):
        load(path)


def test_pickle_module_is_not_used(monkeypatch, tmp_path):
    """Save and load work with pickle disabled entirely."""
    def refuse(*a, **k):
        raise AssertionError("pickle used")
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "dump", refuse)
    m, _ = _model("multiclass_str_ids")
    m.save(tmp_path / "m.eco")
    assert load(tmp_path / "m.eco").state_digest() == m.state_digest()


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_twin_with_a_load_after_every_update(kernel, tmp_path):
    """Degenerate data (duplicated rows, a linear kernel in 3-D): a model saved and
    loaded after every update (derived state recomputed each time) stays exact
    and decides as a twin that never was, up to rounding."""
    rng = np.random.default_rng(3)
    X0 = rng.normal(size=(50, 3))
    X = np.vstack([X0, X0[:30]])
    y = (X[:, 0] + 0.5 * np.sin(3 * X[:, 1]) > 0).astype(int)
    a = CPSVM(C=5.0, kernel=kernel).fit(X[:60], y[:60])
    path = tmp_path / "b.eco"
    a.save(path)
    b = load(path)
    for step in range(60):
        act = a.ids_
        if step % 2 == 0 and len(act) > 30:
            ids = rng.choice(act, int(rng.integers(1, 4)), replace=False).tolist()
            batch = bool(step % 4)
            a.decrement(ids, batch=batch)
            b.decrement(ids, batch=batch)
        else:
            free = np.setdiff1d(np.arange(len(y)), act)
            r = rng.choice(free, 1)
            a.increment(X[r], y[r], ids=r.tolist())
            b.increment(X[r], y[r], ids=r.tolist())
        b.save(path)
        digest = b.state_digest()
        b = load(path)
        assert b.state_digest() == digest, f"step {step}"  # the primary state, bit for bit
        _assert_same_model(a, b, f"step {step}")
    assert a.kkt_violation() < 1e-8
    assert_exact(b)


def test_feature_names_round_trip(tmp_path):
    """feature_names_in_ (an object array of str, as scikit-learn sets it for a
    DataFrame) is stored as a unicode array and comes back as an object array."""
    X, y = _data(seed=8)
    m = CPSVM().fit(X, y)
    m.feature_names_in_ = np.array([f"f{i}" for i in range(X.shape[1])], dtype=object)
    m.save(tmp_path / "m.eco")
    meta = json.loads(zipfile.ZipFile(tmp_path / "m.eco").read("eco-metadata.json"))
    assert meta["arrays"]["feature_names_in_"]["dtype"].startswith("<U")
    m2 = load(tmp_path / "m.eco")
    assert m2.feature_names_in_.dtype == object
    assert m2.feature_names_in_.tolist() == ["f0", "f1", "f2", "f3"]
