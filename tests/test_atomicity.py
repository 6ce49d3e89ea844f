"""Forced failures: every update ends exactly updated or exactly as before."""

import os
import zipfile

import numpy as np
import pytest

import eco
from eco import CPSVM
from eco._headset import HeadSet
from eco.reference import reference_kernel
from eco.testing import assert_exact, fail_on_call, path_fault
from exact_helpers import noisy_classes


def _data(n=80, n_classes=2, d=4, seed=0):
    return noisy_classes(n=n, n_classes=n_classes, d=d, noise=0.7, seed=seed)


def _copy(m):
    return CPSVM.from_state(m.to_state())


def _assert_equals_scratch_fit(m, X, y, rows):
    """m holds exactly `rows` and equals a fit from scratch on them (eco.testing.assert_exact)."""
    assert np.array_equal(np.sort(m.ids_), np.sort(np.asarray(rows)))
    assert_exact(m, X)


# ----------------------------------------------- path faults: exact re-solve


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_decrement_fault_resolves_exactly(k, batch):
    X, y = _data()
    m = CPSVM(C=2.0, gamma=0.3).fit(X, y)  # numeric: the heads' paths run
    support = m.support_ids_.tolist()[:6]  # margin and error vectors: a real path
    with path_fault(m, 0, k):
        r = m.decrement(support, batch=batch, audit=True)
    assert set(r.paths.values()) == {"resolve"}
    assert r.resolved_heads == (0,)
    assert r.n_steps == k  # the path ran k steps, then the fault fired
    assert r.digest_after == m.state_digest() != r.digest_before
    assert r.kkt_violation == m.kkt_violation() < 1e-8
    _assert_equals_scratch_fit(m, X, y, np.setdiff1d(np.arange(len(y)), support))


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("k", [0, 1, 3])
def test_decrement_fault_in_one_head_of_many(k, batch):
    X, y = _data(n_classes=3, seed=1)
    m = CPSVM(C=1.0, gamma=0.3).fit(X, y)  # numeric: the heads' paths run
    heads = m.margin_
    remove = [int(heads[1][0]), int(heads[1][1]), int(heads[0][0])]
    with path_fault(m, 1, k):
        r = m.decrement(remove, batch=batch)
    assert r.resolved_heads == (1,)
    assert set(r.paths.values()) == {"resolve"}
    _assert_equals_scratch_fit(m, X, y, np.setdiff1d(np.arange(len(y)), remove))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_increment_fault_resolves_exactly(k):
    X, y = _data(n=90, seed=2)
    m = CPSVM(C=2.0, gamma=0.3).fit(X[:70], y[:70])  # numeric: the heads' paths run
    with path_fault(m, 0, k):
        m.increment(X[70:], y[70:])
    _assert_equals_scratch_fit(m, X, y, np.arange(90))


# ---------------------------------------- interrupts: exactly as before


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("fail_after", [1, 2])
@pytest.mark.parametrize("batch", [True, False])
def test_interrupt_after_a_head_restores_everything(exc, fail_after, batch, n_jobs):
    X, y = _data(n_classes=3, seed=3)
    m = CPSVM(C=1.0, n_jobs=n_jobs, gamma=0.3).fit(X, y)  # numeric: the heads' paths run
    twin = _copy(m)
    before = m.state_digest()
    support = m.support_ids_.tolist()[:4]
    with pytest.raises(exc, match="stop after head"):
        with fail_on_call(m, "unlearn_head", fail_after, exc("stop after head"), after=True):
            m.decrement(support, batch=batch)
    assert m.state_digest() == before
    assert m.n_active_ == len(y)
    # and it goes on exactly as a model that was never interrupted
    assert m.decrement(support, batch=batch, audit=True).digest_after == \
        twin.decrement(support, batch=batch, audit=True).digest_after


def _support_of_one_head(m, k=1):
    """Ids that are support vectors of head 0 only (reserve vectors of every other head)."""
    alpha = np.atleast_2d(m.alpha_)
    only = np.flatnonzero((alpha[0] > 0) & np.all(alpha[1:] == 0, axis=0))
    assert len(only) >= k
    return [m.ids_[i] for i in only[:k]]


class _LightSpy:
    """Records, for every snapshot a head set opens, the heads kept as drop records."""

    def __init__(self, monkeypatch):
        self.light = []
        opened = HeadSet.open_snapshot

        def spy(heads, removing=None):
            snap = opened(heads, removing)
            self.light.append(heads.drop_record_heads)
            return snap

        monkeypatch.setattr(HeadSet, "open_snapshot", spy)


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("batch", [True, False])
def test_rollback_of_heads_kept_as_drop_records(exc, batch, n_jobs, monkeypatch):
    # a removal that is a reserve drop in most heads keeps those heads in
    # its snapshot as drop records; a failure once every head has taken its
    # part puts them back bit for bit, as it does the copied head
    X, y = _data(n=90, n_classes=4, seed=6)
    m = CPSVM(C=1.0, n_jobs=n_jobs, gamma=0.3).fit(X, y)  # numeric: the heads' paths run
    twin = _copy(m)
    before = m.state_digest()
    remove = _support_of_one_head(m, 2)
    spy = _LightSpy(monkeypatch)
    with pytest.raises(exc, match="after the last head"):
        with fail_on_call(m, "unlearn_head", 4, exc("after the last head"), after=True):
            m.decrement(remove, batch=batch)
    assert spy.light == [[1, 2, 3]]  # head 0 copied, the others kept as records
    assert m.state_digest() == before
    assert m.n_active_ == len(y)
    r = m.decrement(remove, batch=batch, audit=True)
    assert r.digest_after == twin.decrement(remove, batch=batch, audit=True).digest_after
    assert r.n_steps > 0  # head 0 ran a path
    _assert_equals_scratch_fit(m, X, y, np.setdiff1d(np.arange(len(y)), remove))


def test_an_unlearning_transaction_refuses_other_changes_to_its_drop_heads():
    # the record of a reserve drop undoes that drop only: anything else in
    # the head is refused (and the whole update rolled back)
    X, y = _data(n=90, n_classes=4, seed=6)
    m = CPSVM(C=1.0, gamma=0.3).fit(X, y)
    before = m.state_digest()
    heads = m.head_set_
    slots = np.array([heads.slot_of(i) for i in _support_of_one_head(m)], dtype=np.intp)
    for change in (lambda: heads.solve(1, heads.active_slots()),
                   lambda: heads.learn_head(2, slots),
                   lambda: heads.move_bounds(heads.slot_C)):
        with pytest.raises(eco.exceptions.UnlearningError, match="drop records"):
            with heads.transaction(removing=slots):
                heads.unlearn(slots)
                change()
        assert m.state_digest() == before
    # the copied head may re-solve (what a path that cannot finish does)
    with heads.transaction(removing=slots):
        heads.unlearn(slots)
        heads.solve(0, np.setdiff1d(heads.active_slots(), slots))
    assert m.state_digest() != before


def test_actor_rollback_and_delta_of_heads_kept_as_drop_records():
    # a Ray actor's side (HeadGroup, here without Ray): the driver names the
    # slots an unlearning request removes; the heads where that is a reserve
    # drop are snapshotted as records, rolled back bit for bit, and their
    # delta (read from the record) is the full comparison's
    from eco._ray_backend import HeadGroup, PrimaryState

    X, y = _data(n=90, n_classes=4, seed=6)
    rows = np.arange(len(y))
    spec = dict(kernel="rbf", gamma=0.3, degree=3, coef0=0.0, precompute=False, n_heads=4,
                max_steps=0, cache_size=200.0)
    group = HeadGroup(spec, [0, 1, 2, 3], [X], y, np.full(len(y), 1.0), list(rows))
    group.apply(("solve_all", rows.astype(np.intp), "batch"), 1)
    group.commit(1)
    group.check_deltas()  # every delta held to the full comparison in numpy
    alpha = group.set.alphas()
    slots = np.flatnonzero((alpha[0] > 0) & np.all(alpha[1:] == 0, axis=0))[:2].astype(np.intp)
    assert len(slots) == 2
    states = [group.set.engine(h).get_state() for h in range(4)]
    group.apply(("unlearn", slots, True), 2, slots)
    assert group.set.drop_record_heads == [1, 2, 3]
    group.rollback()
    assert not group.set.drop_record_heads
    for h in range(4):
        now = group.set.engine(h).get_state()
        assert all(np.asarray(now[k]).tobytes() == np.asarray(v).tobytes()
                   for k, v in states[h].items()), f"head {h}"
    _, _, _, _, blob, _, _ = group.apply(("unlearn", slots, True), 3, slots)
    delta = PrimaryState.unpack(blob)
    assert sorted(delta[1].tolist()) == [0, 1, 2, 3]
    assert delta[3][delta[2][0]:].tolist() == sorted(slots.tolist()) * 3  # the drop heads' entries
    group.erase(slots, 3)
    assert not group.set.drop_record_heads
    assert np.all(group.set.alphas()[:, slots] == 0)


def test_interrupt_during_increment_resolve_restores_everything():
    X, y = _data(n=90, n_classes=3, seed=4)
    m = CPSVM(C=1.0, gamma=0.3).fit(X[:70], y[:70])  # numeric: the heads' paths run
    before = m.state_digest()
    ids_before = m.ids_.copy()

    # head 2 re-solves, and the re-solve is interrupted
    with path_fault(m, 2, 0), fail_on_call(m, "solve", 1, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            m.increment(X[70:], y[70:])
    assert m.state_digest() == before
    assert np.array_equal(m.ids_, ids_before)
    # the ids of the failed call are free again
    m.increment(X[70:], y[70:], ids=list(range(70, 90)))
    _assert_equals_scratch_fit(m, X, y, np.arange(90))


def test_failed_increment_leaves_no_trace_of_its_rows():
    """The rows of a failed increment are not kept: a precomputed model still takes
    kernel rows against the examples given before, default ids continue as if the
    call never happened, and a saved file holds none of the rejected data."""
    X, y = _data(n=60, seed=8)
    K = reference_kernel(X, X, "rbf", 0.5, 3, 0.0)
    m = CPSVM(kernel="precomputed").fit(K[:40, :40], y[:40])
    before = m.decision_function(K[:5, :40])

    with path_fault(m, 0, 0), fail_on_call(m, "solve", 1, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            m.increment(K[40:60, :60], y[40:60])
    assert np.array_equal(m.decision_function(K[:5, :40]), before)
    assert m.increment(K[40:41, :41], y[40:41]).tolist() == [40]


def test_interrupt_during_fit_keeps_previous_model(monkeypatch):
    X, y = _data(seed=5)
    m = CPSVM(C=1.0).fit(X[:50], y[:50])
    before = m.state_digest()

    def broken(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(HeadSet, "solve", broken)
    with pytest.raises(KeyboardInterrupt):
        m.fit(X, y)
    monkeypatch.undo()
    assert m.state_digest() == before


# ------------------------------------------------------------ saving


@pytest.fixture
def saved_model(tmp_path):
    X, y = _data(seed=6)
    old = CPSVM(C=1.0).fit(X, y)
    path = tmp_path / "model.eco"
    old.save(path)
    new = CPSVM(C=3.0).fit(X[:60], y[:60])
    return path, path.read_bytes(), new


@pytest.mark.parametrize("target", ["os.replace", "os.fsync", "writestr"])
@pytest.mark.parametrize("exc", [OSError, KeyboardInterrupt])
def test_failed_save_leaves_old_file_and_no_temporary(saved_model, monkeypatch, target, exc):
    path, old_bytes, new = saved_model

    def boom(*a, **k):
        raise exc("injected")
    if target == "writestr":
        calls = []
        real = zipfile.ZipFile.writestr

        def writestr(self, *a, **k):
            calls.append(1)
            if len(calls) == 3:  # in the middle of the archive
                raise exc("injected")
            return real(self, *a, **k)
        monkeypatch.setattr(zipfile.ZipFile, "writestr", writestr)
    else:
        monkeypatch.setattr(target, boom)
    with pytest.raises(exc, match="injected"):
        new.save(path)
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["model.eco"]
    assert path.read_bytes() == old_bytes
    assert eco.load(path).C == 1.0


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    X, y = _data(seed=7)
    m = CPSVM().fit(X, y)
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        m.save(tmp_path / "m.eco")
    assert os.listdir(tmp_path) == []


# --------------------------- a MemoryError at every call site: error = unchanged

# Every head-set operation an update goes through; each is made to raise
# MemoryError at each of its calls in turn (before the call, or after it did
# its work), until the update completes without meeting the fault.
CALL_SITES = ["snapshot", "reserve_mask", "all_reserve", "drop_reserve", "unlearn",
              "unlearn_head", "solve", "violation", "head_state", "append", "learn",
              "learn_head", "map_heads", "slot_of", "is_active"]


def _decrement_support(m, X, y):
    return m.decrement(m.support_ids_.tolist()[:5], batch=True)


def _decrement_one_by_one(m, X, y):
    return m.decrement(m.support_ids_.tolist()[:4], batch=False)


def _decrement_reserve(m, X, y):
    reserve = m.reserve_ if m.head_set_.n_heads == 1 else m.reserve_[0]
    keep = [i for i in reserve.tolist() if i not in set(m.support_ids_.tolist())]
    return m.decrement(keep[:3])


def _increment(m, X, y):
    return m.increment(X[70:], y[70:], ids=list(range(70, 80)))


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize("update", [_decrement_support, _decrement_one_by_one,
                                    _decrement_reserve, _increment],
                         ids=["batch", "one-by-one", "reserve", "increment"])
def test_memory_error_at_every_call_site(update, n_classes, n_jobs):
    X, y = _data(n=80, n_classes=n_classes, seed=11)
    base = CPSVM(C=1.0, gamma=0.3, n_jobs=n_jobs).fit(X[:70], y[:70])
    old = base.state_digest()
    done = _copy(base)
    update(done, X, y)
    new = done.state_digest()
    fired = 0
    for site in CALL_SITES:
        for after in (False, True):
            k = 1
            while True:
                m = _copy(base)
                with fail_on_call(m, site, k, MemoryError(f"injected at {site} #{k}"),
                                  after=after) as calls:
                    try:
                        update(m, X, y)
                        raised = False
                    except MemoryError:
                        raised = True
                if not raised:
                    if len(calls) >= k:
                        # fired once the reserve drop was done: the update was
                        # completed instead ("success means done"), exactly
                        assert after and site == "drop_reserve"
                        assert list(m.ids_) == list(done.ids_)
                        assert_exact(m, X)
                        k += 1
                        continue
                    # the fault never fired: the update completed, whole
                    assert m.state_digest() == new
                    break
                fired += 1
                assert m.state_digest() == old, f"{site} call {k} (after={after}): changed"
                k += 1
    assert fired > 10
    assert_exact(done, X)


@pytest.mark.parametrize("update", [_decrement_support, _increment], ids=["decrement", "increment"])
def test_rollback_survives_a_memory_error(update):
    """The rollback itself meets a MemoryError: it is retried, never left half-done."""
    X, y = _data(n=80, n_classes=3, seed=12)
    m = CPSVM(C=1.0, gamma=0.3).fit(X[:70], y[:70])
    old = m.state_digest()
    site = "unlearn_head" if update is _decrement_support else "learn_head"
    with fail_on_call(m, site, 2, after=True):
        with fail_on_call(m, "restore_head", 2, MemoryError("in the rollback")):
            with pytest.raises(eco.testing.InjectedFault):
                update(m, X, y)
    assert m.state_digest() == old
    twin = _copy(m)
    assert update(m, X, y) is not None and update(twin, X, y) is not None
    assert m.state_digest() == twin.state_digest()
