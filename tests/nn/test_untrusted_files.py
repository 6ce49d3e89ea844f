"""ECO.load on folders from untrusted sources: a corpus of crafted model folders.

Every crafted folder must raise ModelFileError naming the problem: never a
bare KeyError/TypeError/RecursionError/MemoryError, never a read outside the
folder, never a hang on a special file. The cases that would cost memory or
time if a read were unbounded run in a subprocess that reports the growth of
its resident high-water mark over the call (a hang fails by the timeout).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eco  # noqa: E402
from eco.exceptions import ModelFileError  # noqa: E402
from eco.nn import ECO, feature_extractor, make_network  # noqa: E402

pytestmark = pytest.mark.torch

SUBPROCESS_TIMEOUT = 180
PEAK_BOUND = 64 << 20  # the hostile loads below would each need far more if a read were unbounded


def phi():
    return feature_extractor(make_network("digits", seed=0))


@pytest.fixture(scope="module")
def good(tmp_path_factory, digits):
    """A small saved model with a lineage (so its inputs and labels are saved too)."""
    X, y = digits
    ccp = np.arange(60)
    model = ECO(phi(), eco.CPSVM(C=10.0), device="cpu").fit(X[ccp], y[ccp], ids=ccp, feature_ids=list(range(60, 70)))
    folder = tmp_path_factory.mktemp("good") / "model"
    model.save(folder)
    return folder


@pytest.fixture
def folder(good, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(good, copy, symlinks=True)
    return copy


def load(folder):
    return ECO.load(folder, phi(), device="cpu")


def manifest_of(folder):
    return json.loads((folder / "manifest.json").read_text())


def write_manifest(folder, manifest):
    (folder / "manifest.json").write_text(json.dumps(manifest))


def redigest(folder, name):
    """Make the manifest's digest of ``name`` match the file again (a tamperer would)."""
    manifest = manifest_of(folder)
    manifest["sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    write_manifest(folder, manifest)


def test_the_good_folder_loads(good, digits):
    X, _ = digits
    model = load(good)
    assert len(model.ids_) == 60 and model.feature_ids_ == tuple(range(60, 70))
    assert model.predict(X[100:110]).shape == (10,)


# ------------------------------------------------------------ names and paths


def test_head_file_outside_the_folder_is_refused(folder):
    shutil.copy(folder / "head.eco", folder.parent / "good.eco")
    manifest = manifest_of(folder)
    manifest["head_file"] = "../good.eco"
    manifest["sha256"]["../good.eco"] = manifest["sha256"].pop("head.eco")
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="path traversal"):
        load(folder)


@pytest.mark.parametrize("name", ["/etc/passwd", "sub/head.eco", "..", ".", "", "a\\b", "x\x00y"])
def test_head_file_must_be_a_plain_name(folder, name):
    manifest = manifest_of(folder)
    manifest["head_file"] = name
    manifest["sha256"][name] = manifest["sha256"].pop("head.eco")
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="head_file|file name"):
        load(folder)


def test_head_file_may_not_name_another_file_of_the_model(folder):
    manifest = manifest_of(folder)
    manifest["head_file"] = "ccp_inputs.npy"
    del manifest["sha256"]["head.eco"]
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="another file"):
        load(folder)


@pytest.mark.parametrize("extra", ["/dev/zero", "../good.eco", "notes.txt"])
def test_digest_entries_beyond_the_format_are_refused(folder, extra):
    manifest = manifest_of(folder)
    manifest["sha256"][extra] = "0" * 64
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="exactly the files"):
        load(folder)


@pytest.mark.parametrize("name", ["head.eco", "feature_extractor.pt", "ccp_inputs.npy", "manifest.json"])
def test_a_symlinked_file_is_refused_even_to_the_same_bytes(folder, name):
    target = folder.parent / ("real-" + name)
    shutil.move(folder / name, target)
    (folder / name).symlink_to(target)
    with pytest.raises(ModelFileError, match="symbolic links"):
        load(folder)


@pytest.mark.parametrize("name", ["head.eco", "ccp_labels.npy"])
def test_a_missing_file_is_named(folder, name):
    (folder / name).unlink()
    with pytest.raises(ModelFileError, match=f"missing file .*{name}"):
        load(folder)


def test_a_file_changed_under_an_unchanged_manifest_is_refused(folder):
    path = folder / "ccp_inputs.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="altered"):
        load(folder)


# --------------------------------------------------------- keys and their types


@pytest.mark.parametrize(
    "key", ["format_version", "head_file", "batch_size", "n_features", "feature_ids", "phi_fingerprint", "sha256"]
)
def test_a_missing_key_is_named(folder, key):
    manifest = manifest_of(folder)
    del manifest[key]
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match=key):
        load(folder)


@pytest.mark.parametrize(
    "key, value",
    [
        ("format_version", True),
        ("format_version", "2"),
        ("format_version", 3),
        ("head_file", 5),
        ("batch_size", "256"),
        ("batch_size", 0),
        ("batch_size", 2.0),
        ("kkt_tolerance", "tight"),
        ("kkt_tolerance", -1.0),
        ("n_features", 3.5),
        ("n_features", 0),
        ("feature_ids", {"a": 1}),
        ("feature_ids", [[1]]),
        ("feature_ids", [1.5]),
        ("feature_ids", [60, 60]),
        ("feature_ids", [True]),
        ("phi_fingerprint", "zz"),
        ("phi_fingerprint", None),
        ("ccp_input_ids", "0,1,2"),
        ("ccp_input_ids", [None] * 60),
        ("ccp_input_ids", [0] * 60),
        ("sha256", ["head.eco"]),
        ("sha256", None),
    ],
)
def test_a_wrongly_typed_key_is_named(folder, key, value):
    manifest = manifest_of(folder)
    manifest[key] = value
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match=key):
        load(folder)


def test_a_non_hex_digest_is_refused(folder):
    manifest = manifest_of(folder)
    manifest["sha256"]["head.eco"] = 12
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="digest"):
        load(folder)


def test_kkt_tolerance_nan_is_refused(folder):
    text = (folder / "manifest.json").read_text()
    manifest = manifest_of(folder)
    text = text.replace(json.dumps(manifest["kkt_tolerance"]), "NaN", 1)
    (folder / "manifest.json").write_text(text)
    with pytest.raises(ModelFileError, match="kkt_tolerance"):
        load(folder)


@pytest.mark.parametrize(
    "text, problem",
    [
        (b"", "cannot read"),
        (b"\xff\xfe not utf-8", "cannot read"),
        (b"[1, 2]", "does not hold"),
        (b'{"format": "eco-cpsvm"}', "does not hold"),
        (b"[" * 100 + b"]" * 100, "nested"),
        (b'{"a": "' + b"[" * 1000 + b'"}', "does not hold"),  # brackets inside a string do not nest
    ],
)
def test_a_manifest_that_is_not_a_manifest(folder, text, problem):
    (folder / "manifest.json").write_bytes(text)
    with pytest.raises(ModelFileError, match=problem):
        load(folder)


# ---------------------------------------------------- consistency of the arrays


def _save_npy(folder, name, array):
    np.save(folder / name, array, allow_pickle=True)
    redigest(folder, name)


def test_inputs_of_an_id_the_head_does_not_have_are_refused(folder):
    manifest = manifest_of(folder)
    manifest["ccp_input_ids"][0] = "someone-removed"
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="should not be in the model"):
        load(folder)


@pytest.mark.parametrize(
    "name, make, problem",
    [
        ("ccp_inputs.npy", lambda a: a[:-1], "does not match"),
        ("ccp_inputs.npy", lambda a: np.full_like(a, np.nan), "NaN"),
        ("ccp_inputs.npy", lambda a: a.astype(object), "not allowed"),
        ("ccp_inputs.npy", lambda a: a.astype(np.complex128), "not allowed"),
        ("ccp_labels.npy", lambda a: a.reshape(-1, 1), "does not match"),
        ("ccp_labels.npy", lambda a: a.astype(object), "not allowed"),
    ],
    ids=["short", "nan", "object", "complex", "labels-2d", "labels-object"],
)
def test_inconsistent_arrays_are_refused(folder, name, make, problem):
    _save_npy(folder, name, make(np.load(folder / name)))
    with pytest.raises(ModelFileError, match=problem):
        load(folder)


def test_declared_shape_larger_than_the_file_is_refused_before_reading(folder):
    path = folder / "ccp_inputs.npy"
    inputs = np.load(path)
    header = {"descr": "<f8", "fortran_order": False, "shape": (inputs.shape[0], 10**12)}
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(inputs.tobytes())
    redigest(folder, "ccp_inputs.npy")
    with pytest.raises(ModelFileError, match="header declares"):
        load(folder)


def test_n_features_must_match_the_head(folder):
    manifest = manifest_of(folder)
    manifest["n_features"] += 1
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="features"):
        load(folder)


def test_a_lineage_without_inputs_is_refused(folder):
    manifest = manifest_of(folder)
    manifest["ccp_input_ids"] = None
    for name in ("ccp_inputs.npy", "ccp_labels.npy"):
        del manifest["sha256"][name]
    write_manifest(folder, manifest)
    with pytest.raises(ModelFileError, match="no inputs"):
        load(folder)


def test_weights_of_another_network_are_refused(folder):
    other = feature_extractor(make_network("digits", seed=1))
    torch.save(other.state_dict(), folder / "feature_extractor.pt")
    redigest(folder, "feature_extractor.pt")
    with pytest.raises(ModelFileError, match="fingerprint"):
        load(folder)


# ------------------------------------------- resources: bounded memory, no hang

_HOSTILE_LOAD = r"""
import json, resource, sys
from eco.nn import ECO, feature_extractor, make_network
phi = feature_extractor(make_network("digits", seed=0))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    ECO.load(sys.argv[1], phi, device="cpu")
    outcome = {"raised": None}
except Exception as exc:
    outcome = {"raised": type(exc).__name__, "message": str(exc)}
outcome["peak_growth"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps(outcome))
"""


def hostile_load(folder):
    """ECO.load(folder) in a child process: its outcome and its peak memory growth."""
    src = str(Path(eco.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", _HOSTILE_LOAD, str(folder)],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _deep_json(folder):
    (folder / "manifest.json").write_text('{"format": "eco.nn.ECO", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")


def _sparse(name, size):
    def make(folder):
        with open(folder / name, "r+b") as handle:
            handle.truncate(size)  # a hole: costs no disk, would cost memory if read whole
    return make


def _special(name, kind):
    def make(folder):
        (folder / name).unlink()
        if kind == "fifo":
            os.mkfifo(folder / name)  # nobody writes: a blocking open hangs forever
        else:
            (folder / name).symlink_to("/dev/zero")
    return make


def _zero_digest(name):
    def make(folder):
        manifest = manifest_of(folder)
        manifest["head_file"] = "zero"
        manifest["sha256"]["zero"] = manifest["sha256"].pop("head.eco")
        write_manifest(folder, manifest)
        (folder / "zero").symlink_to(name)
    return make


HOSTILE = {
    "json-200000-deep": (_deep_json, "nested"),
    "manifest-65MiB": (_sparse("manifest.json", (64 << 20) + 1), "exceeds the bound"),
    "weights-1GiB": (_sparse("feature_extractor.pt", 1 << 30), "exceeds the bound"),
    "manifest-dev-zero": (_special("manifest.json", "devzero"), "symbolic links"),
    "head-dev-zero": (_special("head.eco", "devzero"), "symbolic links"),
    "head-file-names-dev-zero": (_zero_digest("/dev/zero"), "symbolic links"),
    "manifest-fifo": (_special("manifest.json", "fifo"), "not a regular file"),
    "head-fifo": (_special("head.eco", "fifo"), "not a regular file"),
    "inputs-fifo": (_special("ccp_inputs.npy", "fifo"), "not a regular file"),
}


@pytest.mark.skipif(not (hasattr(os, "mkfifo") and os.path.exists("/dev/zero")), reason="needs FIFOs and /dev/zero")
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_folders_fail_in_bounded_memory_without_hanging(folder, case):
    make, problem = HOSTILE[case]
    make(folder)
    outcome = hostile_load(folder)
    assert outcome["raised"] == "ModelFileError", outcome
    assert problem in outcome["message"], outcome
    assert outcome["peak_growth"] < PEAK_BOUND, outcome



def test_compressed_members_in_the_weights_are_refused(folder):
    import zipfile

    path = folder / "feature_extractor.pt"
    with zipfile.ZipFile(path) as original:
        members = [(info, original.read(info)) for info in original.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as rewritten:
        for info, data in members:
            rewritten.writestr(info.filename, data)
    redigest(folder, "feature_extractor.pt")
    with pytest.raises(ModelFileError, match="compressed members"):
        load(folder)


def test_an_unreadable_head_is_a_model_file_error(folder):
    (folder / "head.eco").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    redigest(folder, "head.eco")
    with pytest.raises(ModelFileError):
        load(folder)


def _with_an_extra_layer():
    # the saved keys all match, its own extra weight is missing from the file
    return torch.nn.Sequential(*phi(), torch.nn.Linear(2, 2))


@pytest.mark.parametrize("make", [lambda: feature_extractor(make_network("digits", seed=123)).double(),
                                  _with_an_extra_layer],
                         ids=["fingerprint-mismatch", "missing-key"])
def test_a_failed_load_leaves_the_callers_module_as_it_was(folder, make):
    target = make()
    before = {key: tensor.clone() for key, tensor in target.state_dict().items()}
    with pytest.raises(ModelFileError):
        ECO.load(folder, target, device="cpu")
    after = target.state_dict()
    assert after.keys() == before.keys()
    for key, tensor in after.items():
        assert tensor.dtype == before[key].dtype and torch.equal(tensor, before[key]), key
