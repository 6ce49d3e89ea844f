"""The Ray backend (``CPSVM(backend="ray")``): same model as the threads backend, digest for
digest; all-or-nothing across actors; actors killed in the middle of requests.

One local cluster (two CPUs, no dashboard) serves the whole module. Skipped
only where Ray is not installed at all (``pip install .[ray]``; ``make``
installs it).
"""

import copy
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray

import eco  # noqa: E402
from eco import CPSVM  # noqa: E402
from eco.testing import DECISION_TOL, KKT_TOL, InjectedFault, assert_exact, local_ray_cluster  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A local cluster whose workers import the same eco as this process."""
    with local_ray_cluster():
        yield


def _data(n_classes, n=90, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, n_classes, size=n)
    X += 0.8 * np.eye(d)[y % d]  # some structure, still many margin vectors
    return X, y


def _same_model(a, b, X):
    """`b` holds the same examples as `a` and is exact, deciding as `a` up to rounding.

    A revived actor installs its checkpoint (primary state only, as in any eco
    file) and recomputes the gradients and the inverse margin matrix: equal to
    the lost ones up to the last bits, and so are the states after it.
    """
    np.testing.assert_array_equal(b.ids_, a.ids_)
    assert b.kkt_violation() < KKT_TOL
    fa, fb = a.decision_function(X), b.decision_function(X)
    gap = float(np.max(np.abs(fa - fb) / np.maximum(1.0, np.abs(fa)), initial=0.0))
    assert gap <= DECISION_TOL, f"decision values differ by {gap:.3g}"


def _pair(n_classes, **params):
    X, y = _data(n_classes)
    # numeric gamma: "scale" follows the rows and re-solves every update on a
    # new head set (tests/test_data_dependent.py); here the actors' paths are under test
    params = {"C": 2.0, "gamma": 0.3, **params}
    local = CPSVM(**params).fit(X, y)
    remote = CPSVM(backend="ray", n_jobs=2, **params).fit(X, y)
    remote.head_set_.check_deltas()  # every delta held to the full comparison
    return local, remote, X, y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_digests_equal_across_backends(n_classes):
    local, remote, X, y = _pair(n_classes)
    assert remote.state_digest() == local.state_digest()
    rng = np.random.default_rng(1)
    X_new, y_new = _data(n_classes, n=12, seed=2)
    steps = [
        lambda m: m.decrement([1, 4, 9, 16, 25]),                 # one batch path
        lambda m: m.increment(X_new[:6], y_new[:6]),
        lambda m: m.decrement([30, 31, 32], batch=False),         # one after the other
        lambda m: m.decrement(40),
        lambda m: m.increment(X_new[6:], y_new[6:], ids=[f"new{i}" for i in range(6)]),
        lambda m: m.decrement(["new2", 50]),
    ]
    for step in steps:
        r_local, r_remote = step(local), step(remote)
        assert remote.state_digest() == local.state_digest()
        if isinstance(r_local, eco.UnlearningReceipt):
            assert r_remote.paths == r_local.paths
            assert r_remote.resolved_heads == r_local.resolved_heads
    probe = rng.normal(size=(20, X.shape[1]))
    np.testing.assert_array_equal(remote.decision_function(probe), local.decision_function(probe))
    np.testing.assert_array_equal(remote.ids_, local.ids_)
    np.testing.assert_array_equal(remote.alpha_, local.alpha_)
    assert remote.verify().digest == local.verify().digest
    assert remote.kkt_violation() == local.kkt_violation()
    assert remote.verify(reference=True).ok
    assert_exact(local)  # and so `remote`, bit for bit its equal


@pytest.mark.parametrize("n_classes", [2, 3])
def test_loo_equal_across_backends(n_classes):
    # one call per actor runs the whole batch there (the heads are restored on the actors)
    local, remote, _, _ = _pair(n_classes)
    remote.decrement([3, 7])
    local.decrement([3, 7])
    digest = remote.state_digest()
    np.testing.assert_array_equal(remote.loo_decision(), local.loo_decision())
    assert remote.state_digest() == digest
    # an actor that dies before the call is revived at the committed state, then runs it
    heads = remote.head_set_
    _kill_and_wait(heads.actors[0])
    # the revived heads recompute their gradients and inverse margin matrix
    # from the checkpoint's primary state: equal up to rounding, not bit for bit
    np.testing.assert_allclose(remote.loo_decision(), local.loo_decision(),
                               rtol=0, atol=DECISION_TOL)
    assert heads.n_revivals == 1
    assert remote.state_digest() == local.state_digest()


def test_reserve_only_request_and_incremental_fit():
    X, y = _data(3)
    local = CPSVM(C=2.0).fit(X, y, method="incremental")
    remote = CPSVM(C=2.0, backend="ray").fit(X, y, method="incremental")
    assert remote.state_digest() == local.state_digest()
    reserve = [i for i in remote.ids_ if i not in set(remote.support_ids_.tolist())][:3]
    assert len(reserve) == 3
    receipts = local.decrement(reserve), remote.decrement(reserve)
    assert set(receipts[1].paths.values()) == {"reserve_drop"}
    assert receipts[1].paths == receipts[0].paths
    assert remote.state_digest() == local.state_digest()


def test_failure_on_one_actor_rolls_every_head_back():
    # requests in two phases (increments, audited removals): every actor
    # rolls back from its snapshot, bit for bit, and none is restarted
    local, remote, X, y = _pair(3)
    heads = remote.head_set_
    assert len(heads.actors) == 2
    X_new, y_new = _data(3, n=8, seed=3)
    requests = {
        "decrement": lambda m: m.decrement([2, 3, 5, 7, 11], audit=True),
        "increment": lambda m: m.increment(X_new[:4], y_new[:4]),
        "decrement one by one": lambda m: m.decrement([13, 17], batch=False, audit=True),
        "increment again": lambda m: m.increment(X_new[4:], y_new[4:]),
    }
    methods = ["unlearn_head", "learn_head", "unlearn_head", "learn_head"]
    for (name, request), method, after in zip(requests.items(), methods, [False, True] * 2):
        before, n_active = remote.state_digest(), remote.n_active_
        # the second actor fails at its first head (before or after updating
        # it); the first actor has prepared its part of the request by then
        heads.arm_fault(1, method, 1, after)
        with pytest.raises(InjectedFault):
            request(remote)
        assert remote.state_digest() == before, name
        assert remote.n_active_ == n_active
        # the model goes on as if the failed request had never been made
        request(local)
        request(remote)
        assert remote.state_digest() == local.state_digest(), name
    assert heads.n_revivals == 0


@pytest.mark.parametrize("batch, after", [(True, False), (False, True)])
def test_a_failed_removal_restarts_the_actors_that_committed_their_part(batch, after):
    # the default removal is one message per actor (RayHeadSet.remove): each
    # actor commits and erases its part on its own. Actor 1 fails at its
    # first head (before or after updating it) and rolls back; actor 0 had
    # committed, and is restarted from the driver's committed state, as after
    # a death: the primary state is back bit for bit, the derived arrays are
    # recomputed (later results equal the threads backend's up to rounding)
    local, remote, X, y = _pair(3)
    heads = remote.head_set_
    remove = [2, 3, 5, 7, 11]
    before = remote.state_digest()
    heads.arm_fault(1, "unlearn_head", 1, after)
    with pytest.raises(InjectedFault):
        remote.decrement(remove, batch=batch)
    assert remote.state_digest() == before
    assert remote.n_active_ == len(y)
    assert heads.n_revivals == 1
    _assert_driver_holds_the_actors_state(remote)
    for m in (local, remote):
        m.decrement(remove, batch=batch)
    _same_model(local, remote, X)
    assert_exact(remote, X)


def test_a_removal_is_one_message_per_actor(monkeypatch):
    # no erase request follows the removal's: the actors erased in it
    local, remote, X, y = _pair(3)
    heads = remote.head_set_

    def no_erase(*args):
        raise AssertionError("a default removal sent an erase request")

    monkeypatch.setattr(heads, "erase", no_erase)
    for m in (local, remote):
        m.decrement([2, 3, 5, 7, 11])
        m.decrement([13], batch=False)
    assert remote.state_digest() == local.state_digest()
    _assert_driver_holds_the_actors_state(remote)


@pytest.mark.parametrize("batch", [True, False])
def test_failure_rolls_back_heads_kept_as_drop_records(batch):
    # an id that is a support vector of head 0 only (one in this data):
    # every other head, on both actors, keeps the record of a reserve drop
    # instead of a copy; the request fails on actor 1 once both its heads
    # took their part, and every head is put back
    local, remote, X, y = _pair(4)
    heads = remote.head_set_
    alpha = np.atleast_2d(local.alpha_)
    only = np.flatnonzero((alpha[0] > 0) & np.all(alpha[1:] == 0, axis=0))[:2]
    assert len(only) >= 1
    remove = local.ids_[only].tolist()
    before = remote.state_digest()
    heads.arm_fault(1, "unlearn_head", 2, True)
    with pytest.raises(InjectedFault):
        remote.decrement(remove, batch=batch, audit=True)  # two phases
    assert remote.state_digest() == before
    assert remote.n_active_ == len(y)
    assert heads.n_revivals == 0
    for m in (local, remote):
        m.decrement(remove, batch=batch)
    assert remote.state_digest() == local.state_digest()
    assert_exact(remote, X)


def test_an_actor_whose_rollback_fails_is_replaced_at_the_committed_state():
    local, remote, X, y = _pair(3)
    heads = remote.head_set_
    before = remote.state_digest()
    # the request fails on actor 1; actor 0, which applied its part, then
    # fails to roll back: it is replaced by one restarted at the committed state
    heads.arm_fault(1, "unlearn_head", 1, True)
    heads.arm_fault(0, "restore", 1)
    with pytest.raises(InjectedFault):
        remote.decrement([2, 3, 5], audit=True)  # two phases: actor 0 rolls back
    assert heads.n_revivals == 1
    assert remote.state_digest() == before
    for m in (local, remote):
        m.decrement([2, 3, 5])
    assert remote.state_digest() == local.state_digest()


def _kill_later(actors, rng):
    """Kill one of `actors` after a random delay, from another thread."""
    victim = actors[int(rng.integers(len(actors)))]
    delay = float(rng.uniform(0.0, 0.15))

    def kill():
        time.sleep(delay)
        ray.kill(victim, no_restart=True)

    t = threading.Thread(target=kill)
    t.start()
    return t


def test_actor_killed_during_requests_loses_nothing():
    local, remote, X, y = _pair(3)
    rng = np.random.default_rng(7)
    X_new, y_new = _data(3, n=16, seed=4)
    alive = list(range(len(y)))
    new_ids = iter(range(1000, 1100))
    for k in range(6):
        killer = _kill_later(list(remote.head_set_.actors), rng)
        if k % 3 == 2:
            rows = slice(2 * (k // 3) * 2, 2 * (k // 3) * 2 + 4)
            ids = [next(new_ids) for _ in range(4)]
            remote.increment(X_new[rows], y_new[rows], ids=ids)
            local.increment(X_new[rows], y_new[rows], ids=ids)
        else:
            gone = [alive.pop(int(rng.integers(len(alive)))) for _ in range(1 + k % 4)]
            remote.decrement(gone, batch=bool(k % 2))
            local.decrement(gone, batch=bool(k % 2))
        killer.join()
        # the request completed on the restarted actors, exactly
        _same_model(local, remote, X)
    # a request after the last kill, and the model against a fit from scratch
    remote.decrement(alive[:2])
    local.decrement(alive[:2])
    _same_model(local, remote, X)
    # every kill hit a live actor, or one already dead and not yet restarted
    assert 1 <= remote.head_set_.n_revivals <= 6
    # equal to a fit from scratch on the intended rows (eco.testing's check
    # on its bit-for-bit equal; a refit on Ray would only start more actors)
    assert_exact(local)
    assert remote.verify(reference=True).ok


def test_save_load_round_trip_between_backends(tmp_path):
    local, remote, X, _ = _pair(3)
    remote.decrement([0, 8, 13])
    local.decrement([0, 8, 13])
    remote.save(tmp_path / "ray.eco")
    loaded = eco.load(tmp_path / "ray.eco")
    assert loaded.backend == "threads"  # where heads run is not part of the file
    assert loaded.state_digest() == remote.state_digest() == local.state_digest()
    back = loaded.with_backend("ray")
    assert back.backend == "ray" and back.state_digest() == remote.state_digest()
    for m in (loaded, back):
        m.decrement([21, 34])
    assert back.state_digest() == loaded.state_digest()
    back.save(tmp_path / "back.eco")
    assert eco.load(tmp_path / "back.eco").state_digest() == loaded.state_digest()
    np.testing.assert_array_equal(back.predict(X), loaded.predict(X))
    # in memory (copy, joblib) a model travels as its state and keeps its backend
    twin = copy.deepcopy(back)
    assert twin.backend == "ray" and twin.state_digest() == back.state_digest()


def test_bad_backend_is_refused_and_nothing_changes():
    X, y = _data(2)
    model = CPSVM(C=2.0).fit(X, y)
    digest = model.state_digest()
    model.set_params(backend="spark")
    with pytest.raises(eco.exceptions.InvalidInputError, match="backend"):
        model.fit(X, y)
    assert model.state_digest() == digest


def test_eco_nn_with_a_ray_head(tmp_path):
    torch = pytest.importorskip("torch")
    from eco.nn import ECO

    X, y = _data(3, n=80, d=6)
    torch.manual_seed(0)
    phi = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh())
    # Phi here is fixed (never trained on these rows): an empty lineage
    models = [ECO(phi, CPSVM(C=2.0, backend=b)).fit(X.astype(np.float32), y, feature_ids=())
              for b in ("threads", "ray")]
    assert models[1].head_.backend == "ray"
    state = models[1].head_.to_state()
    at = {i: k for k, i in enumerate(state.slot_ids.tolist())}
    removed_features = state.data[[at[i] for i in (1, 2, 3, 10)]]
    for m in models:
        result = m.unlearn([1, 2, 3, 10])
        assert result.exact
    # the Ray head keeps nothing of the removed feature rows (ids are small ints: rows only)
    for where, blob in _ray_artefacts(models[1].head_, tmp_path).items():
        for needle in _float_needles(removed_features):
            assert needle not in blob, f"a removed feature value found in {where}"
    assert models[1].head_.state_digest() == models[0].head_.state_digest()
    np.testing.assert_array_equal(models[1].predict(X.astype(np.float32)),
                                  models[0].predict(X.astype(np.float32)))


def test_precomputed_kernel_and_revival_after_increments():
    X, y = _data(2, n=60)
    X_new, y_new = _data(2, n=6, seed=5)
    gram = np.vstack([X, X_new]) @ np.vstack([X, X_new]).T
    models = [CPSVM(C=2.0, kernel="precomputed", backend=b).fit(gram[:60, :60], y)
              for b in ("threads", "ray")]
    for m in models:
        m.increment(gram[60:63, :63], y_new[:3])
        m.decrement([4, 9])
    heads = models[1].head_set_
    # rows given in two chunks of different widths; a restart gets them as one block
    for m in models:
        m.increment(gram[63:, :], y_new[3:])
    _kill_and_wait(heads.actors[0])
    for m in models:
        m.decrement([61, 20], batch=False)
    assert heads.n_revivals == 1
    _same_model(models[0], models[1], gram[:5])


# ------------------------------------------------ committed state on the driver


def _primary_bytes(state, active):
    """The digested primary fields of a head on `active`, as bytes (-0.0 is not 0.0)."""
    return [np.asarray(state.alpha)[active].tobytes(), np.asarray(state.sets)[active].tobytes(),
            np.float64(state.b).tobytes(), np.asarray(state.margin_order, np.int64).tobytes()]


def _assert_driver_holds_the_actors_state(model):
    heads = model.head_set_
    active = heads.active_slots()
    for h in range(heads.n_heads):
        held, live = heads.committed_state(h), heads.head_state(h)
        assert _primary_bytes(held, active) == _primary_bytes(live, active), f"head {h}"
        np.testing.assert_array_equal(np.asarray(held.y)[active], np.asarray(live.y)[active])
        np.testing.assert_array_equal(np.asarray(held.C)[active], np.asarray(live.C)[active])
    np.testing.assert_array_equal(heads.alphas()[:, active],
                                  np.stack([heads.head_state(h).alpha for h in
                                            range(heads.n_heads)])[:, active])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_driver_state_follows_every_committed_request(n_classes):
    # the deltas the actors return rebuild, on the driver, their committed state bit for bit
    local, remote, X, y = _pair(n_classes)
    _assert_driver_holds_the_actors_state(remote)
    X_new, y_new = _data(n_classes, n=10, seed=21)
    heads = remote.head_set_
    requests = [
        lambda m: m.decrement([0, 1, 2, 3, 5, 8, 13, 21]),
        lambda m: m.increment(X_new[:5], y_new[:5]),
        lambda m: m.decrement([34, 55], batch=False),
        lambda m: m.increment(X_new[5:], y_new[5:], ids=[f"n{i}" for i in range(5)]),
        lambda m: m.decrement(["n1", 40]),
    ]
    for request in requests:
        request(local)
        request(remote)
        assert remote.state_digest() == local.state_digest()
        _assert_driver_holds_the_actors_state(remote)
        assert heads.held_objects() == []  # no rows left in the object store between requests
    # a failed request leaves the driver's arrays as they were
    before = [heads.committed_state(h) for h in range(heads.n_heads)]
    heads.arm_fault(len(heads.actors) - 1, "unlearn", 1, True)
    with pytest.raises(InjectedFault):
        remote.decrement([60, 61, 62])
    active = heads.active_slots()
    for h in range(heads.n_heads):
        assert _primary_bytes(heads.committed_state(h), active) == \
            _primary_bytes(before[h], active)
    _assert_driver_holds_the_actors_state(remote)


def _kill_and_wait(actor):
    """ray.kill, then wait until the actor is gone (ray.kill returns before it is)."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.02)
    raise AssertionError("the killed actor still answers")


def test_restart_right_after_a_decrement_with_many_migrations():
    X, y = _data(3, n=150, seed=22)
    params = dict(C=2.0, gamma=0.3)
    local = CPSVM(**params).fit(X, y)
    remote = CPSVM(backend="ray", n_jobs=2, **params).fit(X, y)
    heads = remote.head_set_
    heads.check_deltas()
    # the support vectors of every head, removed in one batch path
    gone = [int(i) for i in local.support_ids_[:30]]
    receipts = local.decrement(gone), remote.decrement(gone)
    assert receipts[1].n_migrations == receipts[0].n_migrations >= 20
    assert remote.state_digest() == local.state_digest()
    for a in range(len(heads.actors)):
        _kill_and_wait(heads.actors[a])
        # any call restarts it from the driver's arrays: the committed state, bit for bit
        heads.ping()
        assert heads.n_revivals == a + 1
        assert remote.state_digest() == local.state_digest()
        _assert_driver_holds_the_actors_state(remote)
    assert heads.n_revivals == len(heads.actors)
    assert remote.kkt_violation() < KKT_TOL
    more = [int(i) for i in local.ids_[:5]]
    for m in (local, remote):
        m.decrement(more)
    _same_model(local, remote, X)
    assert remote.verify(reference=True).ok


def test_a_restart_refuses_a_state_that_is_not_the_svm():
    # a restart installs the driver's arrays through eco's loader and certificate:
    # a committed state that is not the SVM of the rows is refused, not installed
    X, y = _data(2, n=60, seed=23)
    remote = CPSVM(C=2.0, gamma=0.3, backend="ray", n_jobs=1).fit(X, y)
    heads = remote.head_set_
    crafted = heads.head_state(0)
    crafted.b += 0.25  # installed as given (bit for bit), and committed
    heads.restore_head(0, crafted)
    assert heads.committed_state(0).b == crafted.b
    _kill_and_wait(heads.actors[0])
    with pytest.raises(eco.exceptions.UnlearningError, match="could not restart.*refused"):
        heads.ping()

# ----------------------------------------------------------------- erasure

BIG = 7_000_000_000_123  # large int ids: their bytes are distinctive


def _id_needles(i):
    if isinstance(i, str):
        return [i.encode("utf-8"), i.encode("utf-32-le")]
    return [np.int64(i).tobytes(), str(i).encode(), int(i).to_bytes(6, "little", signed=True)]


def _float_needles(values):
    # every value but the trivial ones (0, 1: the rbf diagonal, zeroed entries)
    return {np.float64(v).tobytes() for v in np.ravel(values) if v not in (0.0, 1.0)}


def _array_bytes(a):
    if isinstance(a, (bytes, bytearray)):
        return bytes(a)
    if isinstance(a, (list, tuple)):
        return b"".join(_array_bytes(v) for v in a)
    a = np.asarray(a)
    if a.dtype == object:
        return repr(a.tolist()).encode() + b"".join(
            str(v).encode("utf-32-le") + str(v).encode() for v in a.ravel().tolist())
    return np.ascontiguousarray(a).tobytes()


def _ray_artefacts(model, tmp_path):
    """Every byte string of the Ray model: pickle, file, to_state, driver, actors, object store,
    checkpoints."""
    import pickle

    out = {"pickle": pickle.dumps(model)}
    model.save(tmp_path / "m.eco")
    out["file"] = (tmp_path / "m.eco").read_bytes()
    st = model.to_state()
    parts = [st.data, st.slot_ids, st.slot_labels, st.slot_C]
    parts += [getattr(hd, k) for hd in st.heads for k in hd.ARRAYS]
    out["to_state"] = _array_bytes(parts)
    heads = model.head_set_
    every = np.arange(heads.n_slots)
    out["driver"] = _array_bytes([heads.stored_data(), heads.kernel_block(every), heads.slot_ids,
                                  heads.slot_labels, heads.slot_C, heads.alphas(),
                                  heads.coefficients()])
    for a, arrays in enumerate(heads.actor_arrays()):
        out[f"actor {a}"] = _array_bytes(arrays)
    for k, ref in enumerate(heads.held_objects()):
        out[f"object {k}"] = _array_bytes(ray.get(ref))
    for k, blob in enumerate(heads.checkpoint_files()):
        out[f"checkpoint {k}"] = blob
    return out


def _assert_erased(model, removed, tmp_path):
    arts = _ray_artefacts(model, tmp_path)
    for i, (feats, kvals) in removed.items():
        needles = [("id", n) for n in _id_needles(i)]
        needles += [("feature", n) for n in _float_needles(feats)]
        needles += [("kernel value", n) for n in _float_needles(kvals)]
        for where, blob in arts.items():
            for what, needle in needles:
                assert needle not in blob, f"{what} of removed row {i!r} found in {where}"


def _row_of(model, row_id):
    """The model's own stored values of one row (features, kernel values against the others)."""
    heads = model.head_set_
    slot = heads.slot_of(row_id)
    krow = heads.kernel_block([slot])[0]
    others = [heads.slot_of(i) for i in model.ids_ if i != row_id]
    feats = krow if model.kernel == "precomputed" else heads.features_of([slot])[0]
    return feats, krow[others]


@pytest.mark.parametrize("kind", ["multiclass", "binary-str-ids", "precomputed"])
def test_ray_model_keeps_nothing_of_removed_rows(kind, tmp_path):
    rng = np.random.default_rng(20261130)
    X_all = rng.normal(size=(74, 5))
    scores = X_all[:, :3] + 0.4 * rng.normal(size=(74, 3))
    y_all = np.argmax(scores, axis=1) if kind == "multiclass" else (scores[:, 0] > 0).astype(int)
    X, y, X_new, y_new = X_all[:70], y_all[:70], X_all[70:], y_all[70:]
    ids = [BIG + k for k in range(70)] if kind == "multiclass" \
        else [f"gdpr-erase-me-{k:05d}" for k in range(70)]
    params = dict(C=2.0, kernel="precomputed") if kind == "precomputed" \
        else dict(C=2.0, kernel="rbf", gamma=0.4)
    data = X @ X.T if kind == "precomputed" else X
    models = [CPSVM(backend=b, n_jobs=2, **params).fit(data, y, ids=ids)
              for b in ("threads", "ray")]
    remote = models[1]
    held_before = {ref.hex() for ref in remote.head_set_.held_objects()}
    alphas = np.max(np.atleast_2d(remote.alpha_), axis=0)
    support = [ids[k] for k in np.flatnonzero(alphas > 0)[:4]]
    reserve = [ids[k] for k in np.flatnonzero(alphas == 0)[:3]]
    removed = {}
    for request in (support + reserve[:1], reserve[1:]):  # a path, then a reserve-only drop
        removed.update({i: _row_of(remote, i) for i in request})
        for m in models:
            m.decrement(request)
        assert remote.state_digest() == models[0].state_digest()
    _assert_erased(remote, removed, tmp_path)
    # the object store entries that held the removed rows are no longer referenced here
    assert held_before.isdisjoint(ref.hex() for ref in remote.head_set_.held_objects())
    # nor after an increment (a precomputed row has a column per example ever given)
    new_ids = [BIG + 100 + k if kind == "multiclass" else f"new-{k}"
               for k in range(4)]
    if kind == "precomputed":
        given = np.vstack([X, X_new])
        data_new = X_new @ given.T
    else:
        data_new = X_new
    for m in models:
        m.increment(data_new, y_new, ids=new_ids)
    assert remote.state_digest() == models[0].state_digest()
    _assert_erased(remote, removed, tmp_path)


def test_revival_after_an_erase_is_exact():
    local, remote, X, y = _pair(3)
    gone = [1, 4, 9, 16, 25, 36, 49]
    for m in (local, remote):
        m.decrement(gone)
    heads = remote.head_set_
    n_revivals = heads.n_revivals
    _kill_and_wait(heads.actors[0])
    for m in (local, remote):
        m.decrement([2, 3], batch=False)   # the next request revives the actor
    assert heads.n_revivals == n_revivals + 1
    _same_model(local, remote, X)
    # killed again right after an erase: revived from the erased checkpoint
    _kill_and_wait(heads.actors[1])
    X_new, y_new = _data(3, n=5, seed=13)
    for m in (local, remote):
        m.increment(X_new, y_new)
    _same_model(local, remote, X)
    assert_exact(local)
    assert remote.verify(reference=True).ok


def test_compaction_on_actors_matches_threads():
    # enough churn that the slots are renumbered (HeadSet.compact) on every actor
    X, y = _data(3, n=160, seed=14)
    local = CPSVM(C=2.0).fit(X, y)
    remote = CPSVM(C=2.0, backend="ray", n_jobs=2).fit(X, y)
    X_new, y_new = _data(3, n=20, seed=15)
    for m in (local, remote):
        m.decrement(list(range(0, 100)))
    assert remote.head_set_.n_slots == local.head_set_.n_slots < 160  # compacted alike
    assert remote.state_digest() == local.state_digest()
    _kill_and_wait(remote.head_set_.actors[0])
    for m in (local, remote):
        m.increment(X_new, y_new)
        m.decrement([120, 150])
    assert remote.state_digest() == local.state_digest()
    np.testing.assert_array_equal(remote.decision_function(X), local.decision_function(X))
    assert_exact(local)


# ------------------------------------------------------------------- deltas

@pytest.mark.parametrize("n_classes", [2, 3])
def test_delta_found_in_the_engine_equals_the_full_comparison(n_classes):
    # CPEngine.changed_slots (the actors' delta, compared in C by blocks of 64
    # slots) lists exactly the slots that copies of the engine's arrays compared
    # in numpy list, after paths, reserve drops and increments; applied, it
    # gives the new state bit for bit
    from eco._ray_backend import PrimaryState

    X, y = _data(n_classes, n=200, seed=31)
    model = CPSVM(C=2.0, gamma=0.3).fit(X, y)
    heads = model.head_set_
    every = list(range(heads.n_heads))
    X_new, y_new = _data(n_classes, n=40, seed=32)
    rng = np.random.default_rng(33)
    n_listed = 0
    for r in range(16):
        base = PrimaryState.of(heads)
        if r % 4 == 3:
            model.increment(X_new[10 * (r // 4):10 * (r // 4) + 10],
                            y_new[10 * (r // 4):10 * (r // 4) + 10])
        else:  # 1 to 8 ids; fewer than 64 in all, so that nothing is compacted
            model.decrement(rng.choice(model.ids_, size=1 + r % 8, replace=False).tolist(),
                            batch=bool(r % 2))
        assert heads.n_slots >= base.n_slots
        cheap, full = base.changes(heads, every), base.changes(heads, every, full=True)
        assert cheap[0] == full[0] == heads.n_slots
        for a, b in zip(cheap[1:], full[1:]):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        wire = PrimaryState.unpack(PrimaryState.pack(cheap))
        assert wire[0] == cheap[0]
        for a, b in zip(wire[1:], cheap[1:]):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        n_listed += len(cheap[3])
        base.apply(wire)
        now = PrimaryState.of(heads)
        assert base.alpha.tobytes() == now.alpha.tobytes()
        assert base.sets.tobytes() == now.sets.tobytes()
        assert base.b.tobytes() == now.b.tobytes()
        assert all(np.array_equal(o, p) for o, p in zip(base.order, now.order))
    assert n_listed > 16 * heads.n_heads  # paths moved coefficients, not only the ids
    # bit patterns: a committed -0.0 where the engine holds 0.0 is a change, in
    # the first block and in the last (partial) one
    base = PrimaryState.of(heads)
    zeros = np.flatnonzero(base.alpha[0].view(np.int64) == 0)
    first, last = int(zeros[0]), int(zeros[-1])
    assert last >= 64 * (heads.n_slots // 64)
    base.alpha[0, [first, last]] = -0.0
    got = base.changes(heads, every)
    np.testing.assert_array_equal(got[3][:got[2][0]], [first, last])


@pytest.mark.parametrize("after", [False, True])
def test_an_actor_whose_erase_fails_is_replaced_from_the_erased_arrays(after, tmp_path):
    # the driver erases its own arrays while the actors erase theirs: an actor
    # whose erase raises (before or after erasing) is replaced by one started
    # from the driver's arrays, which hold nothing of the removed rows
    X, y = _data(3)
    ids = [BIG + k for k in range(len(X))]  # distinctive bytes
    local, remote = (CPSVM(C=2.0, gamma=0.3, backend=b, n_jobs=2).fit(X, y, ids=ids)
                     for b in ("threads", "ray"))
    heads = remote.head_set_
    heads.check_deltas()
    support = [int(i) for i in local.support_ids_]
    gone = support[:6] + [next(int(i) for i in local.ids_ if int(i) not in support)]
    removed = {i: _row_of(remote, i) for i in gone}
    heads.arm_fault(1, "erase", 1, after)
    for m in (local, remote):
        m.decrement(gone)
    assert heads.n_revivals == 1
    assert remote.state_digest() == local.state_digest()
    _assert_driver_holds_the_actors_state(remote)
    _assert_erased(remote, removed, tmp_path)
    X_new, y_new = _data(3, n=6, seed=34)
    for m in (local, remote):
        m.increment(X_new, y_new)
        m.decrement([BIG + 10, BIG + 11, BIG + 12])
    _same_model(local, remote, X)
    assert remote.verify(reference=True).ok
