"""Thread safety of ECO: one model shared by threads that unlearn, increment, predict and save.

Mutations (fit, increment, unlearn) serialize on the model; reads (transform,
decision_function, predict, score, save) run concurrently and never see a
half-applied update. Evidence of the latter: every folder saved while the
model changed is one consistent state (the inputs ECO kept are exactly the
head's rows, it loads and predicts like a fresh fit on those rows, and nothing
of a row removed by then is in it, head included).
faulthandler turns a crash into tracebacks and a deadlock into a failed run.
"""

import faulthandler
import json
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eco  # noqa: E402
from eco.nn import ECO, feature_extractor, make_network  # noqa: E402
from eco.nn.experiment import frozen_head_parameters  # noqa: E402
from eco.nn.locking import ReadWriteLock  # noqa: E402
from erasure_helpers import assert_erased, assert_present, head_memory_bytes, whole_artefact_bytes  # noqa: E402

pytestmark = pytest.mark.torch

DEADLOCK_TIMEOUT = 300  # seconds before faulthandler dumps every thread and exits
INITIAL = np.arange(0, 60)
LINEAGE = list(range(300, 310))  # Phi's (stated) lineage: inputs are kept and saved
ADDED = np.arange(100, 140)
REMOVED = (np.arange(0, 10), np.arange(10, 20))  # one block per unlearning thread
PROBE = np.arange(500, 530)


def phi():
    return feature_extractor(make_network("digits", seed=0))


def head_reference(model, features, y, ids):
    """The head fitted from scratch on ``ids``'s rows, their features as the model got them, gamma frozen."""
    ids = np.sort(np.asarray(ids))
    return eco.CPSVM(**frozen_head_parameters(model.head_)).fit(features[ids], y[ids], ids=ids.tolist())


def run_threads(workers):
    errors = []
    start = threading.Barrier(len(workers))

    def guarded(work):
        try:
            start.wait()
            work()
        except BaseException as error:  # reported to the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(work,)) for work in workers]
    faulthandler.dump_traceback_later(DEADLOCK_TIMEOUT, exit=True)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        faulthandler.cancel_dump_traceback_later()
    if errors:
        raise errors[0]


def check_saved_state(folder, X, y, features):
    """A folder saved during the run holds one consistent state."""
    manifest = json.loads((folder / "manifest.json").read_text())
    loaded = ECO.load(folder, phi(), device="cpu")
    assert sorted(manifest["ccp_input_ids"]) == sorted(np.asarray(loaded.ids_).tolist())
    reference = head_reference(loaded, features, y, loaded.ids_)
    np.testing.assert_allclose(
        loaded.decision_function(X[PROBE]), reference.decision_function(loaded.transform(X[PROBE])), atol=1e-8
    )
    # nothing of a row removed (or not yet added) by then: not its input, not its features
    # (ids are small ints here, whose bytes occur by chance: rows only)
    held = set(np.asarray(loaded.ids_).tolist())
    absent = np.array(sorted((set(INITIAL.tolist()) | set(ADDED.tolist())) - held))
    everything = whole_artefact_bytes(loaded, folder)
    assert_erased(everything, rows=list(X[absent]) + list(features[absent]))
    present = np.array(sorted(held))[:5]
    assert_present(everything, rows=list(X[present]) + list(features[present]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_threads_end_in_the_model_fitted_from_scratch(digits, tmp_path, seed):
    X, y = digits
    model = ECO(phi(), eco.CPSVM(C=10.0), device="cpu", batch_size=16)
    # Phi fixed means the same feature vectors: float32 convolutions may round
    # differently for other batch compositions, so the model and the
    # references get the very same rows of one extraction.
    features = model.transform(X)
    model.fit(X[INITIAL], y[INITIAL], ids=INITIAL.tolist(), feature_ids=LINEAGE, features=features[INITIAL])
    rng = np.random.default_rng(seed)
    saved = []
    results = []

    def unlearner(block):
        order = rng.permutation(block)  # drawn before the threads start
        pieces = [order[i:i + 2] for i in range(0, len(order), 2)]
        flags = [bool(b) for b in rng.integers(0, 2, len(pieces))]

        def work():
            for piece, batch in zip(pieces, flags):
                results.append(model.unlearn(piece.tolist(), batch=batch))
        return work

    def incrementer():
        for start in range(0, len(ADDED), 4):
            rows = ADDED[start:start + 4]
            model.increment(X[rows], y[rows], ids=rows.tolist(), feature_ids=(), features=features[rows])

    def predictor():
        for _ in range(15):
            assert model.predict(X[PROBE]).shape == (len(PROBE),)
            assert model.decision_function(X[PROBE]).shape == (len(PROBE), 10)
            assert 0.0 <= model.score(X[PROBE], y[PROBE]) <= 1.0

    def saver():
        for index in range(6):
            folder = tmp_path / f"snapshot-{index}"
            model.save(folder)
            saved.append(folder)
            model.save(tmp_path / "same-path")  # repeated saves over one path

    workers = [unlearner(REMOVED[0]), unlearner(REMOVED[1]), incrementer, predictor, predictor, saver]
    run_threads(workers)

    final = sorted(set(INITIAL.tolist()) - set(np.concatenate(REMOVED).tolist()) | set(ADDED.tolist()))
    assert sorted(np.asarray(model.ids_).tolist()) == final
    assert all(result.exact for result in results) and len(results) == 10
    reference = head_reference(model, features, y, final)
    np.testing.assert_allclose(
        model.decision_function(X[PROBE]), reference.decision_function(model.transform(X[PROBE])), atol=1e-8
    )
    assert sorted(model._inputs) == final  # ECO's kept inputs follow the head
    removed = np.concatenate(REMOVED)
    assert_erased(whole_artefact_bytes(model) + head_memory_bytes(model.head_),
                  rows=list(X[removed]) + list(features[removed]))
    for folder in saved + [tmp_path / "same-path"]:
        check_saved_state(folder, X, y, features)


def test_reads_share_the_lock_and_a_write_excludes_them():
    lock = ReadWriteLock()
    inside = threading.Barrier(2, timeout=60)

    def reader():
        with lock.read():
            inside.wait()  # both readers are inside at once, or this times out

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    order = []
    writer_in = threading.Event()
    release = threading.Event()

    def writer():
        with lock.write():
            writer_in.set()
            release.wait(60)
            order.append("write done")

    def late_reader():
        with lock.read():
            order.append("read")

    first = threading.Thread(target=writer)
    first.start()
    writer_in.wait(60)
    second = threading.Thread(target=late_reader)
    second.start()
    release.set()
    first.join()
    second.join()
    assert order == ["write done", "read"]


def test_reentry_rules():
    lock = ReadWriteLock()
    with lock.write():
        with lock.write():
            with lock.read():
                pass
    with lock.read():
        with lock.read():
            pass
        with pytest.raises(RuntimeError, match="deadlock"):
            with lock.write():
                pass
    with lock.write():  # nothing is left held
        pass
