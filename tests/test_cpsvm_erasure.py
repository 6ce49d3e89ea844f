"""Erasure: after ``decrement`` returns, nothing of a removed row is left in the model.

Every artefact reachable through the public API is searched byte for byte
for each removed row's float64 feature values (or, for a precomputed kernel,
its kernel values), its kernel values against the remaining rows, and its id:
``to_state()``'s arrays, the head set's stored rows, kernel rows, slot tables
and head states, the file written by ``save()``, and ``pickle.dumps(model)``.
"""

import pickle

import numpy as np
import pytest

from eco import CPSVM, load
from eco._headset import COMPACT_MIN, HeadSet
from eco._ray_backend import HeadGroup
from eco.exceptions import UnknownIdError
from eco.testing import InjectedFault, assert_exact, fail_on_call

RNG = np.random.default_rng(20261130)
N, D = 70, 5
X_ALL = RNG.normal(size=(200, D))
Y2 = (X_ALL[:, 0] + 0.4 * RNG.normal(size=200) > 0).astype(int)
Y3 = np.argmax(X_ALL[:, :3] + 0.4 * RNG.normal(size=(200, 3)), axis=1)
BIG = 7_000_000_000_123  # large int ids: their bytes are distinctive


def _rbf(A, B, gamma=0.4):
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
    return np.exp(-gamma * np.maximum(d2, 0.0))


K_ALL = _rbf(X_ALL, X_ALL)


def _ids(kind, rows):
    if kind == "multiclass":
        return [BIG + int(r) for r in rows]
    return [f"gdpr-erase-me-{int(r):05d}" for r in rows]


def _fit(kind):
    rows = np.arange(N)
    if kind == "multiclass":
        return CPSVM(C=2.0, kernel="rbf", gamma=0.4).fit(X_ALL[rows], Y3[rows], ids=_ids(kind, rows))
    if kind == "precomputed":
        return CPSVM(C=2.0, kernel="precomputed").fit(K_ALL[np.ix_(rows, rows)], Y2[rows],
                                                     ids=_ids(kind, rows))
    return CPSVM(C=2.0, kernel="rbf", gamma=0.4).fit(X_ALL[rows], Y2[rows], ids=_ids(kind, rows))


def _row_of(model, row_id):
    """The model's own stored values of one row (features, or its kernel row), before removal."""
    heads = model.head_set_
    slot = heads.slot_of(row_id)
    krow = heads.kernel_block([slot])[0]
    others = [heads.slot_of(i) for i in model.ids_ if i != row_id]
    kvals = krow[others]
    feats = krow if model.kernel == "precomputed" else heads.features_of([slot])[0]
    return feats, kvals


def _id_needles(i):
    if isinstance(i, str):
        return [i.encode("utf-8"), i.encode("utf-32-le")]
    n = int(i)
    return [np.int64(n).tobytes(), str(n).encode(), n.to_bytes(6, "little", signed=True)]


def _float_needles(values):
    # every value but the trivial ones (0, 1: the rbf diagonal, zeroed entries)
    return {np.float64(v).tobytes() for v in np.ravel(values) if v not in (0.0, 1.0)}


def _array_bytes(a):
    a = np.asarray(a)
    if a.dtype == object:
        return repr(a.tolist()).encode() + b"".join(
            str(v).encode("utf-32-le") + str(v).encode() for v in a.ravel().tolist())
    return np.ascontiguousarray(a).tobytes()


def _artefacts(model, tmp_path):
    """Every byte string the public API gives of the model's state."""
    out = {"pickle": pickle.dumps(model)}
    path = tmp_path / "m.eco"
    model.save(path)
    out["file"] = path.read_bytes()
    st = model.to_state()
    parts = [_array_bytes(st.data), _array_bytes(st.slot_ids), _array_bytes(st.slot_labels),
             _array_bytes(st.slot_C)]
    for hd in st.heads:
        parts += [_array_bytes(getattr(hd, k)) for k in hd.ARRAYS]
    out["to_state"] = b"".join(parts)
    heads = model.head_set_
    allslots = np.arange(heads.n_slots)
    parts = [_array_bytes(heads.stored_data()), _array_bytes(heads.kernel_block(allslots)),
             _array_bytes(heads.slot_ids), _array_bytes(heads.slot_labels),
             _array_bytes(heads.slot_C), _array_bytes(heads.alphas()),
             _array_bytes(heads.coefficients())]
    if model.kernel != "precomputed":
        parts.append(_array_bytes(heads.features_of(allslots)))
    for h in range(heads.n_heads):
        parts += [_array_bytes(v) for v in heads.engine(h).get_state().values()
                  if isinstance(v, np.ndarray)]
    out["head_set"] = b"".join(parts)
    return out


def _assert_erased(model, removed, tmp_path):
    """`removed`: {id: (feature values, kernel values against the other rows)}."""
    arts = _artefacts(model, tmp_path)
    for i, (feats, kvals) in removed.items():
        needles = [("id", n) for n in _id_needles(i)]
        needles += [("feature", n) for n in _float_needles(feats)]
        needles += [("kernel value", n) for n in _float_needles(kvals)]
        for where, blob in arts.items():
            for what, needle in needles:
                assert needle not in blob, f"{what} of removed row {i!r} found in {where}"


def _remove(model, ids, batch):
    kept = {i: _row_of(model, i) for i in ids}
    receipt = model.decrement(ids, batch=batch)
    assert receipt.removed_ids == tuple(ids)
    return kept


@pytest.mark.parametrize("kind", ["binary", "multiclass", "precomputed"])
@pytest.mark.parametrize("batch", [True, False])
def test_removed_rows_leave_no_bytes(kind, batch, tmp_path):
    m = _fit(kind)
    alphas = np.max(np.atleast_2d(m.alpha_), axis=0)
    ids = list(m.ids_)
    support = [ids[k] for k in np.flatnonzero(alphas > 0)[:4]]
    reserve = [ids[k] for k in np.flatnonzero(alphas == 0)[:3]]
    removed = _remove(m, support + reserve[:1], batch)      # a path
    removed.update(_remove(m, reserve[1:], batch))          # a reserve-only drop
    _assert_erased(m, removed, tmp_path)
    # later increments keep nothing of them either
    new = np.arange(N, N + 6)
    if kind == "precomputed":
        m.increment(K_ALL[np.ix_(new, np.concatenate([np.arange(N), new]))], Y2[new],
                    ids=_ids(kind, new))
    else:
        m.increment(X_ALL[new], (Y3 if kind == "multiclass" else Y2)[new], ids=_ids(kind, new))
    _assert_erased(m, removed, tmp_path)
    assert m.kkt_violation() < 1e-8


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_single_id_decrements_one_by_one(kind, tmp_path):
    m = _fit(kind)
    removed = {}
    for i in list(m.ids_)[5:17:3]:
        removed.update(_remove(m, [i], True))
    _assert_erased(m, removed, tmp_path)
    loaded = load(tmp_path / "m.eco")
    assert loaded.state_digest() == m.state_digest()
    _assert_erased(loaded, removed, tmp_path)


def _snapshot_arrays(snapshot):
    return [v for state in snapshot[-1] for v in state.values() if isinstance(v, np.ndarray)]


class _SnapshotSpy:
    """Records every snapshot a head set takes, and whether it held anything when taken."""

    def __init__(self, monkeypatch):
        self.taken, self.held = [], []
        snapshot = HeadSet.snapshot

        def spy(heads, removing=None):
            snap = snapshot(heads, removing)
            self.taken.append(snap)
            self.held.append(any(v.any() for v in self.arrays(snap)) and bool(snap[4]))
            return snap

        monkeypatch.setattr(HeadSet, "snapshot", spy)

    @staticmethod
    def arrays(snap):
        return [v for state in snap[-1] for v in state.values() if isinstance(v, np.ndarray)]

    def assert_zeroed(self, snap):
        assert not snap[4], "the snapshot's id table still lists ids"
        for v in self.arrays(snap):
            assert not v.any(), "a snapshot array was dropped without being zeroed"


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_rollback_snapshot_is_zeroed_when_the_removal_commits(kind, monkeypatch):
    # the copy of the heads a transaction takes for its rollback holds the
    # removed rows' labels, coefficients and gradients and the inverse
    # margin matrices they took part in: zeroed, not just dropped
    m = _fit(kind)
    spy = _SnapshotSpy(monkeypatch)
    alphas = np.max(np.atleast_2d(m.alpha_), axis=0)
    ids = list(m.ids_)
    margin = [ids[k] for k in np.flatnonzero((alphas > 0) & (alphas < 2.0))[:2]]
    bounded = [ids[k] for k in np.flatnonzero(alphas == 2.0)[:1]]
    m.decrement(margin + bounded)
    m.decrement([ids[k] for k in np.flatnonzero(alphas == 0)[:1]], audit=True)
    assert len(spy.taken) == 2 and all(spy.held)
    for snap in spy.taken:
        spy.assert_zeroed(snap)
    # a removal that fails restores from its snapshot (not zeroed) and leaves the model as it was
    spy.taken.clear()
    digest = m.state_digest()
    alphas, ids = np.max(np.atleast_2d(m.alpha_), axis=0), list(m.ids_)
    with fail_on_call(m, "unlearn_head", 1, after=True):
        with pytest.raises(InjectedFault):
            m.decrement([ids[k] for k in np.flatnonzero(alphas > 0)[:2]])
    assert len(spy.taken) == 1 and any(v.any() for v in spy.arrays(spy.taken[0]))
    assert m.state_digest() == digest
    assert_exact(m)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_audit_digests_copy_no_derived_state_and_are_zeroed(kind, monkeypatch):
    # an audited removal digests the model before and after it: the copies it
    # hashes (taken before the removal: the removed rows' labels, bounds,
    # coefficients) are zeroed once hashed, and no inverse margin matrix is copied
    m = _fit(kind)
    states = []
    primary_state = HeadSet.primary_state

    def spy(heads, h):
        st = primary_state(heads, h)
        states.append((st, all(getattr(st, k).any() for k in ("y", "C", "alpha"))))
        return st

    monkeypatch.setattr(HeadSet, "primary_state", spy)
    full = [m.head_set_.head_state(h) for h in range(m.head_set_.n_heads)]
    for h, st in enumerate(full):  # the same digested fields as the full state's
        p = primary_state(m.head_set_, h)
        assert p.Rinv is None and p.g is None and p.b == st.b
        for k in st.ARRAYS:
            assert getattr(p, k).tobytes() == np.asarray(getattr(st, k)).tobytes(), k
    alphas = np.max(np.atleast_2d(m.alpha_), axis=0)
    ids = list(m.ids_)
    receipt = m.decrement([ids[k] for k in np.flatnonzero(alphas > 0)[:2]], audit=True)
    assert receipt.digest_before != receipt.digest_after
    assert receipt.digest_after == m.state_digest()
    assert len(states) == 3 * m.head_set_.n_heads and all(held for _, held in states)
    for st, _ in states:
        for k in st.ARRAYS:
            assert not getattr(st, k).any(), f"a digest's copy of {k} was not zeroed"


def test_actor_snapshot_is_zeroed_when_the_removal_commits(monkeypatch):
    # the Ray actor's side (HeadGroup, run here without Ray): the snapshot
    # of its begin is zeroed by the commit that the erasure carries
    rows = np.arange(N)
    spec = dict(kernel="rbf", gamma=0.4, degree=3, coef0=0.0, precompute=False, n_heads=3,
                max_steps=0, cache_size=200.0)
    group = HeadGroup(spec, [0, 2], [X_ALL[rows]], Y3[rows], np.full(N, 2.0), list(rows))
    group.apply(("solve_all", rows.astype(np.intp), "batch"), 1)
    group.commit(1)
    spy = _SnapshotSpy(monkeypatch)
    alphas = group.set.alphas().max(axis=0)
    support = np.flatnonzero(alphas > 0).astype(np.intp)
    group.apply(("unlearn", support[:3], True), 2)
    assert len(spy.taken) == 1 and spy.held[0]
    group.erase(support[:3], 2)
    spy.assert_zeroed(spy.taken[0])
    # a rolled-back transaction restores its snapshot instead
    group.apply(("unlearn", support[3:5], True), 3)
    assert group.set.alphas().max(axis=0)[support[3:5]].max() == 0.0
    group.rollback()
    assert group.set.alphas().max(axis=0)[support[3:5]].min() > 0.0


def test_removed_id_is_unknown_afterwards():
    m = _fit("binary")
    i = m.ids_[3]
    m.decrement([i])
    with pytest.raises(UnknownIdError, match="never given, or already removed"):
        m.decrement([i])
    assert m.head_set_.slot_of(i) is None


def test_failed_increment_leaves_no_trace(tmp_path):
    m = _fit("binary")
    digest, n_slots = m.state_digest(), m.head_set_.n_slots
    new = np.arange(N, N + 4)
    with fail_on_call(m, "learn_head", 1):
        with pytest.raises(Exception, match="injected fault"):
            m.increment(X_ALL[new], Y2[new], ids=_ids("binary", new))
    assert m.state_digest() == digest and m.head_set_.n_slots == n_slots
    gone = {i: (X_ALL[r], _rbf(X_ALL[[r]], X_ALL[:N])[0])
            for i, r in zip(_ids("binary", new), new)}
    _assert_erased(m, gone, tmp_path)


def test_memory_follows_the_active_rows_under_churn():
    """Many rounds of decrement + increment: the slots stay within a bound of the active rows."""
    rng = np.random.default_rng(5)
    m = _fit("binary")
    next_row, most = N, 0
    for _ in range(30):
        ids = list(m.ids_)
        m.decrement([ids[k] for k in rng.choice(len(ids), 8, replace=False)],
                    batch=bool(rng.integers(2)))
        new = np.arange(next_row, next_row + 8) % len(X_ALL)
        m.increment(X_ALL[new], Y2[new], ids=[f"churn-{next_row + k}" for k in range(8)])
        next_row += 8
        most = max(most, m.head_set_.n_slots)
    # compaction keeps erased slots below max(COMPACT_MIN, half the slots) + one round
    assert most <= 2 * (N + 8) + COMPACT_MIN
    assert m.head_set_.store.n_cached_rows <= m.head_set_.n_slots
    assert_exact(m)


@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_compaction_changes_no_decision_and_no_digest(kind):
    m = _fit(kind)
    ids = list(m.ids_)
    m.decrement(ids[0:40:2], batch=True)                  # erased, not yet compacted
    twin = CPSVM.from_state(m.to_state())                 # same layout, same gaps
    assert twin.head_set_.n_slots == m.head_set_.n_slots == N
    X_eval = X_ALL[100:160]
    before = (m.decision_function(X_eval), m.state_digest(), m.kkt_violation())
    m.head_set_.compact()
    assert m.head_set_.n_slots == N - 20
    after = (m.decision_function(X_eval), m.state_digest(), m.kkt_violation())
    assert np.array_equal(before[0], after[0])
    assert before[1:] == after[1:]
    # later updates: the compacted model and its uncompacted twin stay exact and agree
    y = Y3 if kind == "multiclass" else Y2
    for model in (m, twin):
        model.decrement(ids[41:50:3], batch=False)
        model.increment(X_ALL[150:160], y[150:160], ids=_ids(kind, range(150, 160)))
        model.decrement(ids[1:20:4])
    assert np.allclose(m.decision_function(X_eval), twin.decision_function(X_eval),
                       rtol=1e-9, atol=1e-9)
    assert list(m.ids_) == list(twin.ids_)
    assert_exact(m)


def test_erasure_catches_up_after_an_interrupted_erase(tmp_path):
    """An interrupt between a committed decrement and its erasure: the next decrement erases both."""
    m = _fit("binary")
    first, second = m.ids_[4], m.ids_[10]
    removed = {first: _row_of(m, first)}
    with fail_on_call(m, "erase", 1, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            m.decrement([first])
    assert first not in list(m.ids_)
    removed[second] = _row_of(m, second)
    m.decrement([second])
    _assert_erased(m, removed, tmp_path)
    assert_exact(m)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
@pytest.mark.parametrize("kind", ["binary", "multiclass"])
def test_every_erasure_leaves_the_path_work_vectors_zero(kind, class_weight):
    # The path's work vectors h and u are sums of kernel values of the rows
    # it drove or held in the margin set. An erasure zeroes them only when a
    # path (or a polish, a refinement, a bound path) wrote them since the
    # last one, so that a reserve drop does not pay O(n): after every
    # removal, whatever ran before it (a fit, an increment, a path, a bound
    # path when "balanced" moves C), they must be zero in every head.
    y = Y3 if kind == "multiclass" else Y2
    m = CPSVM(C=2.0, kernel="rbf", gamma=0.4, class_weight=class_weight).fit(X_ALL[:N], y[:N])
    heads = m.head_set_

    def assert_zero(after):
        for h in range(heads.n_heads):
            for name, buf in zip("hu", heads.engine(h).work_buffers_for_tests()):
                assert not buf.any(), f"{name} of head {h} is not zero after {after}"

    def reserve_id():
        alphas = np.max(np.atleast_2d(m.alpha_), axis=0)
        return list(m.ids_)[int(np.flatnonzero(alphas == 0)[0])]

    def support_ids(k):
        alphas = np.max(np.atleast_2d(m.alpha_), axis=0)
        return [list(m.ids_)[int(j)] for j in np.flatnonzero(alphas > 0)[:k]]

    m.decrement(reserve_id())                      # right after the fit
    assert_zero("a reserve drop after the fit")
    m.decrement(support_ids(3))                    # a path
    assert_zero("a batch path")
    m.increment(X_ALL[N:N + 5], y[N:N + 5])        # paths that learn
    m.decrement(reserve_id())
    assert_zero("a reserve drop after an increment")
    m.decrement(support_ids(2), batch=False)
    assert_zero("paths one by one")
    m.decrement(reserve_id())
    assert_zero("a reserve drop after paths")
    assert_exact(m, X_ALL[:N + 5])
