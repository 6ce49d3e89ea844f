"""The compiled engine on its own: kernel rows, the bordered inverse, status codes.

These tests talk to ``eco._cp_core`` directly and check each piece of its
bookkeeping against NumPy and scikit-learn, so that a failure points at the
engine rather than at the estimator around it.
"""

import numpy as np
import pytest
from sklearn.metrics.pairwise import linear_kernel, polynomial_kernel, rbf_kernel

from eco import _cp_core
from eco._cp_core import CPEngine, KernelStore, kernel_matrix
from eco.exceptions import EngineError

KERNELS = {
    "linear": lambda A, B, g: linear_kernel(A, B),
    "rbf": lambda A, B, g: rbf_kernel(A, B, gamma=g),
    "poly": lambda A, B, g: polynomial_kernel(A, B, degree=3, gamma=g, coef0=0.5),
}


def _data(n=120, d=7, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0, 1.0, -1.0)
    return np.ascontiguousarray(X), y


def _fitted_engine(X, y, kernel="rbf", gamma=0.2, C=1.0):
    store = KernelStore(X.shape[1], kernel, gamma, 3, 0.5)
    store.append(X)
    engine = CPEngine(store)
    for s in range(len(y)):
        engine.learn(s, y[s], C)
    return store, engine


def _bordered(engine):
    """A = [[0, y_S'], [y_S, Q_SS]] built with NumPy from the store's rows."""
    S = engine.margin_order.astype(np.int64)
    y = engine.y_all
    K = engine.store.kernel_block(S)[:, S]
    A = np.zeros((len(S) + 1, len(S) + 1))
    A[0, 1:] = y[S]
    A[1:, 0] = y[S]
    A[1:, 1:] = np.outer(y[S], y[S]) * K
    return A


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_kernel_rows_match_sklearn(kernel):
    X, _ = _data()
    store = KernelStore(X.shape[1], kernel, 0.2, 3, 0.5)
    store.append(X)
    K = store.kernel_block(np.arange(len(X), dtype=np.int64))
    # the poly rows leave out the constant monomial coef0**degree, which no
    # dual solution, intercept or decision value depends on (sum y alpha = 0)
    const = 0.5 ** 3 if kernel == "poly" else 0.0
    np.testing.assert_allclose(K, KERNELS[kernel](X, X, 0.2) - const, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(kernel_matrix(X, X[:9], kernel, 0.2, 3, 0.5),
                               KERNELS[kernel](X, X[:9], 0.2) - const, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_kernel_rows_do_not_depend_on_how_they_were_computed(kernel):
    # rows computed one at a time, in blocks, before or after later appends,
    # or all at once (precompute) must agree bit for bit, and be symmetric
    X, _ = _data(n=300, d=11)
    one_by_one = KernelStore(11, kernel, 0.1, 3, 0.5)
    one_by_one.append(X[:100])
    one_by_one.get_row(3)  # cached before the next append extends it
    one_by_one.append(X[100:])
    blocked = KernelStore(11, kernel, 0.1, 3, 0.5)
    blocked.append(X)
    blocked.ensure_rows(np.arange(0, 300, 2, dtype=np.int64))
    full = KernelStore(11, kernel, 0.1, 3, 0.5, precompute=True)
    full.append(X)
    every = np.arange(300, dtype=np.int64)
    K1, K2, K3 = (s.kernel_block(every) for s in (one_by_one, blocked, full))
    assert np.array_equal(K1, K2)
    assert np.array_equal(K1, K3)
    assert np.array_equal(K1, K1.T)


def test_precomputed_store_takes_user_rows():
    X, _ = _data(n=50)
    K = rbf_kernel(X, X, gamma=0.3)
    # the store takes the new rows for both halves of the symmetric matrix,
    # so compare with an exactly symmetric Gram matrix
    K = (K + K.T) / 2
    store = KernelStore(0, "precomputed")
    store.append(np.ascontiguousarray(K[:30, :30]))
    store.append(np.ascontiguousarray(K[30:, :50]))
    assert np.array_equal(store.kernel_block(np.arange(50, dtype=np.int64)), K)
    with pytest.raises(ValueError, match="columns"):
        store.append(np.ascontiguousarray(K[:2, :10]))


def _unlearn_pairs(engine, rounds, seed):
    """Unlearn two random active examples `rounds` times; yields the round after each."""
    rng = np.random.default_rng(seed)
    for step in range(rounds):
        active = np.flatnonzero(engine.sets_all != _cp_core.SET_INACTIVE)
        engine.unlearn(rng.choice(active, 2, replace=False).astype(np.int64))
        yield step


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_rinv_is_the_inverse_of_the_bordered_matrix(kernel):
    X, y = _data()
    _, engine = _fitted_engine(X, y, kernel)
    for _ in _unlearn_pairs(engine, 15, seed=1):
        if engine.n_margin:
            A = _bordered(engine)
            np.testing.assert_allclose(engine.rinv() @ A, np.eye(len(A)), atol=1e-9)


def _kept_triangle(engine):
    """The engine's own Rinv buffer: what a rollback snapshot copies."""
    return engine.get_state(rinv_order="F")["Rinv"]


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_rinv_is_kept_as_an_upper_triangle_with_zeros_below(kernel):
    # the engine updates the upper triangle only (dsymv, dsyr): below it
    # nothing may be left of an earlier margin set (erasure), and the copy
    # it hands out is the symmetric matrix
    X, y = _data()
    _, engine = _fitted_engine(X, y, kernel)
    for step in _unlearn_pairs(engine, 12, seed=2):
        if step % 4 == 3:
            engine.refactorise()
        if engine.n_margin:
            kept = _kept_triangle(engine)
            assert np.all(np.tril(kept, -1) == 0.0)
            full = engine.rinv()
            assert np.array_equal(full, full.T)
            assert np.array_equal(np.triu(full), kept)
            # a snapshot restores bit for bit, the buffer or its packed triangle
            before = engine.get_state()
            for order in ("F", "packed"):
                snap = engine.get_state(rinv_order=order)
                engine.restore(snap)
                assert engine.rinv().tobytes() == before["Rinv"].tobytes()
                assert np.all(np.tril(_kept_triangle(engine), -1) == 0.0)
            m1 = engine.n_margin + 1
            assert snap["Rinv"].shape == (m1 * (m1 + 1) // 2,)
            assert snap["Rinv"].tobytes() == kept.T[np.tril_indices(m1)].tobytes()


def test_refactorisation_of_an_ill_conditioned_margin_matrix_has_a_small_residual():
    # a cubic kernel on features of scale 10: margin matrices of condition
    # 1e9 and more. The symmetric factorisation of the unscaled border keeps
    # |Rinv A - I| near 1e-9 here; the upper triangle of an LU inverse, or
    # Bunch-Kaufman on the sigma-scaled border, read 1e-4 and more
    rng = np.random.default_rng(0)
    X = np.ascontiguousarray(10.0 * rng.normal(size=(150, 2)))
    y = np.where(X[:, 0] + 0.3 * X[:, 1] ** 2 / 10 > 0, 1.0, -1.0)
    store = KernelStore(2, "poly", 1.0, 3, 1.0)
    store.append(X)
    engine = CPEngine(store)
    worst_cond = 0.0
    for s in range(len(y)):
        try:
            engine.learn(s, y[s], 10.0)
        except EngineError:
            pass  # a path that cannot finish leaves a state; Rinv is still refactorised below
        if s % 10 == 9 and engine.n_margin > 2:
            engine.refactorise()
            A = _bordered(engine)
            worst_cond = max(worst_cond, np.linalg.cond(A))
            residual = np.abs(engine.rinv() @ A - np.eye(len(A))).max()
            assert residual < 1e-6, (s, residual, np.linalg.cond(A))
    assert worst_cond > 1e8  # the test is about ill-conditioned matrices


def test_incremental_gradients_match_a_recomputation():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    active = engine.sets_all != _cp_core.SET_INACTIVE
    np.testing.assert_allclose(engine.g_all[active], engine.recompute_gradients()[active],
                               atol=1e-11)
    # margin vectors sit on the margin, error vectors inside it, reserve outside
    g, sets = engine.recompute_gradients(), engine.sets_all
    assert np.all(np.abs(g[sets == _cp_core.SET_MARGIN]) < 1e-10)
    assert np.all(g[sets == _cp_core.SET_ERROR] < 1e-10)
    assert np.all(g[sets == _cp_core.SET_RESERVE] > -1e-10)


def test_refactorisation_keeps_the_sets_and_the_inverse():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    before = engine.get_state()
    engine.refactorise()
    after = engine.get_state()
    assert np.array_equal(before["sets"], after["sets"])
    assert np.array_equal(before["margin_order"], after["margin_order"])
    np.testing.assert_allclose(after["Rinv"], before["Rinv"], atol=1e-9)
    assert engine.drift() < 1e-10


def _libsvm_seed(X, y, gamma, C=1.0):
    """alpha, set codes and b of a libsvm solution, as the fit's seed gives them to settle."""
    from sklearn.svm import SVC

    svc = SVC(C=C, gamma=gamma, tol=1e-4).fit(X, y)
    alpha = np.zeros(len(y))
    alpha[svc.support_] = np.abs(svc.dual_coef_[0])
    sets = np.full(len(y), _cp_core.SET_RESERVE, dtype=np.int8)
    upper = alpha >= C * (1 - 1e-12)
    alpha[upper] = C
    sets[upper] = _cp_core.SET_ERROR
    sets[(alpha > 0) & ~upper] = _cp_core.SET_MARGIN
    return alpha, sets, float(svc.intercept_[0])


@pytest.mark.parametrize("repeated", [None, 0.0, 1e-7],
                         ids=["independent", "rows repeated", "rows repeated within 1e-7"])
def test_purify_takes_a_large_independent_free_set_in_one_factorisation(repeated):
    # more than 64 free coefficients: when Q_SS has a clear Cholesky
    # factorisation, purify makes them the margin set at once (one
    # refactorisation of Rinv); with every row given twice the free set is
    # dependent (or nearly: Q_SS then has a Cholesky factorisation, with
    # pivots far below the threshold), and the expansions pivot it one by one
    # as before. settle ends exact either way
    X, y = _data(n=300, d=7, seed=3)
    if repeated is not None:
        twins = X + repeated * np.random.default_rng(4).normal(size=X.shape)
        X, y = np.vstack([X, twins]), np.concatenate([y, y])
    store = KernelStore(X.shape[1], "rbf", 0.5, 3, 0.5)
    store.append(np.ascontiguousarray(X))
    engine = CPEngine(store)
    C = np.full(len(y), 4.0)
    alpha, sets, b = _libsvm_seed(X, y, 0.5, C=4.0)
    free = np.flatnonzero(sets == _cp_core.SET_MARGIN)
    assert len(free) > 64
    before = engine.n_refactorisations
    engine.purify(y, C, alpha, b, sets)
    S = engine.margin_order
    if repeated is not None:
        assert len(S) < len(free)  # twins pivoted out
        assert engine.n_refactorisations == before
    else:
        np.testing.assert_array_equal(S, free)  # every candidate, in slot order
        assert engine.n_refactorisations == before + 1
    A = _bordered(engine)
    np.testing.assert_allclose(engine.rinv() @ A, np.eye(len(A)), atol=1e-8)
    engine.settle(y, C, alpha, b, sets)
    assert engine.certificate() < 1e-9


def test_drift_check_refactorises_when_forced():
    X, y = _data()
    store = KernelStore(X.shape[1], "rbf", 0.2, 3, 0.5)
    store.append(X)
    engine = CPEngine(store)
    engine.drift_check_every = 1
    engine.drift_tol = 0.0  # every check finds "drift": refactorise each time
    for s in range(len(y)):
        engine.learn(s, y[s], 1.0)
    assert engine.n_refactorisations > 0
    _, reference = _fitted_engine(X, y)
    assert np.array_equal(engine.sets_all, reference.sets_all)
    np.testing.assert_allclose(engine.alpha_all, reference.alpha_all, atol=1e-10)


def test_injected_fault_is_reported_as_a_status():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    margin = engine.margin_order[0]
    engine.fail_at_step = 0
    with pytest.raises(EngineError) as info:
        engine.unlearn(np.array([margin], dtype=np.intp))
    assert info.value.status == _cp_core.STATUS_INJECTED_FAULT
    assert _cp_core.STATUS_MESSAGES[_cp_core.STATUS_INJECTED_FAULT]


def test_step_bound_is_reported_as_a_status():
    X, y = _data()
    store = KernelStore(X.shape[1], "rbf", 0.2, 3, 0.5)
    store.append(X)
    engine = CPEngine(store, max_steps=1)
    statuses = set()
    for s in range(len(y)):
        try:
            engine.learn(s, y[s], 1.0)
        except EngineError as exc:
            statuses.add(exc.status)
    assert _cp_core.STATUS_STEP_LIMIT in statuses


def test_drop_reserve_refuses_examples_that_carry_weight():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    support = np.flatnonzero(engine.alpha_all > 0).astype(np.int64)
    before = engine.get_state()
    with pytest.raises(ValueError, match="alpha = 0"):
        _cp_core.drop_reserve([engine], support[:1])
    after = engine.get_state()
    assert all(np.array_equal(before[k], after[k]) for k in ("alpha", "sets", "g"))


def _same_state(a, b):
    return all(np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes() for k in a)


def test_drop_record_undoes_a_reserve_drop_bit_for_bit():
    # the light rollback record of a head in which a removal only drops
    # reserve examples: undo_drop puts back exactly the state before, from
    # after the drop or from before it (a rollback that comes first), twice
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    reserve = np.flatnonzero(engine.sets_all == _cp_core.SET_RESERVE)[:5].astype(np.intp)
    before = engine.get_state()
    record = engine.drop_record(reserve)
    assert record is not None
    assert np.array_equal(record["drop_slots"], reserve) and record["b"] == engine.b
    assert np.any(record["g"] != 0.0)  # the removed rows' gradients are what it keeps
    assert np.all(record["alpha"] == 0.0)
    engine.undo_drop(record)  # nothing was dropped yet
    assert _same_state(engine.get_state(), before)
    _cp_core.drop_reserve([engine], reserve)
    dropped = engine.get_state()
    assert np.all(dropped["sets"][reserve] == _cp_core.SET_INACTIVE)
    assert not _same_state(dropped, before)
    for _ in range(2):
        engine.undo_drop(record)
        assert _same_state(engine.get_state(), before)
        assert engine.n_active == len(y)
    # the bits of a zero coefficient come back too (-0.0 is not 0.0 to a digest)
    signed = engine.get_state()
    signed["alpha"][reserve[0]] = -0.0
    engine.restore(signed)
    record = engine.drop_record(reserve)
    _cp_core.drop_reserve([engine], reserve)
    engine.undo_drop(record)
    assert _same_state(engine.get_state(), signed)
    signed["alpha"][reserve[0]] = 0.0
    engine.restore(signed)
    # and the engine goes on as if nothing happened
    twin = _fitted_engine(X, y)[1]
    engine.unlearn(reserve[:2])
    twin.unlearn(reserve[:2])
    assert _same_state(engine.get_state(), twin.get_state())


def test_drop_record_is_none_when_the_removal_moves_more():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    sets = engine.sets_all
    margin = np.flatnonzero(sets == _cp_core.SET_MARGIN)[:1].astype(np.intp)
    error = np.flatnonzero(sets == _cp_core.SET_ERROR)[:1].astype(np.intp)
    reserve = np.flatnonzero(sets == _cp_core.SET_RESERVE)[:1].astype(np.intp)
    assert len(margin) and len(error) and len(reserve)
    assert engine.drop_record(margin) is None  # a path runs
    assert engine.drop_record(np.concatenate([reserve, error])) is None
    with pytest.raises(ValueError, match="twice"):
        engine.drop_record(np.concatenate([reserve, reserve]))
    # no margin vector strictly inside its box: b is an interval, and a
    # removal can move its midpoint (and every gradient with it)
    n = len(y)
    _, flat = _fitted_engine(X, y)
    flat.set_state(y, np.ones(n), np.zeros(n), 0.5, np.full(n, _cp_core.SET_RESERVE, np.int8),
                   np.zeros(0, np.int32), np.zeros(n), None)
    assert flat.n_margin == 0
    assert flat.drop_record(reserve) is None
    # a record is refused on slots that are not dropped reserve examples
    record = engine.drop_record(reserve)
    bad = dict(record, drop_slots=margin)
    with pytest.raises(ValueError, match="not a dropped reserve example"):
        engine.undo_drop(bad)


def test_one_class_left_is_the_canonical_state():
    X, y = _data()
    _, engine = _fitted_engine(X, y)
    negatives = np.flatnonzero(y < 0).astype(np.int64)
    engine.unlearn(negatives)
    active = engine.sets_all != _cp_core.SET_INACTIVE
    assert np.all(engine.alpha_all[active] == 0.0)
    assert engine.b == 1.0 and engine.n_margin == 0
    engine.unlearn(np.flatnonzero(active).astype(np.int64))
    assert engine.n_active == 0 and engine.b == 0.0


def test_learning_a_dependent_duplicate_keeps_kkt():
    X, y = _data(n=40)
    X = np.ascontiguousarray(np.vstack([X, X[:10]]))
    y = np.concatenate([y, y[:10]])
    _, engine = _fitted_engine(X, y, "linear", C=10.0)
    active = engine.sets_all != _cp_core.SET_INACTIVE
    g, a = engine.recompute_gradients()[active], engine.alpha_all[active]
    free = (a > 0) & (a < 10.0)
    assert np.all(np.abs(g[free]) < 1e-9)
    assert np.all(g[a == 0] > -1e-9) and np.all(g[a == 10.0] < 1e-9)


# ------------------------------------------------------ path step helpers

def _driven_state(kernel="rbf", n_fit=100):
    """An engine fitted on the first n_fit rows, with row n_fit set up to be learned."""
    X, y = _data()
    store, engine = _fitted_engine(X[:n_fit].copy(), y[:n_fit], kernel)
    st = engine.get_state()
    store.append(np.ascontiguousarray(X[n_fit:]))
    engine.sync_capacity()
    n = store.n_slots
    pad = n - len(st["y"])
    yy = np.concatenate([st["y"], y[n_fit:]])
    C = np.concatenate([st["C"], np.ones(pad)])
    alpha = np.concatenate([st["alpha"], np.zeros(pad)])
    sets = np.concatenate([st["sets"], np.full(pad, _cp_core.SET_INACTIVE, np.int8)])
    K = store.kernel_block(np.arange(n, dtype=np.int64))
    f = yy * (K @ (alpha * yy) + st["b"]) - 1.0
    # the first new row that violates the margin: learning it moves something
    c = n_fit + int(np.flatnonzero(f[n_fit:] < -0.1)[0])
    sets[c] = _cp_core.SET_DRIVEN
    g = np.where(sets != _cp_core.SET_INACTIVE, f, 0.0)
    g[sets == _cp_core.SET_MARGIN] = 0.0
    engine.set_state(yy, C, alpha, st["b"], sets, st["margin_order"], g, st["Rinv"])
    return engine, K, c


def _numpy_direction(engine, K, c):
    S = engine.margin_order.astype(np.int64)
    y = engine.y_all
    A = _bordered(engine)
    v = np.concatenate([[y[c]], y[S] * y[c] * K[S, c]])
    sol = -np.linalg.solve(A, v)
    return sol[0], sol[1:], S


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_direction_matches_numpy(kernel):
    engine, K, c = _driven_state(kernel)
    out = engine.path_step_for_tests(np.array([c], np.int64), np.ones(1), True, "direction")
    beta_b, beta, _ = _numpy_direction(engine, K, c)
    assert out["moves"]
    scale = 1.0 + np.max(np.abs(beta))
    assert abs(out["beta_b"] - beta_b) < 1e-8 * (1.0 + abs(beta_b))
    np.testing.assert_allclose(out["beta"], beta, atol=1e-8 * scale)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_rates_match_numpy(kernel):
    engine, K, c = _driven_state(kernel)
    out = engine.path_step_for_tests(np.array([c], np.int64), np.ones(1), True, "rates")
    beta_b, beta, S = _numpy_direction(engine, K, c)
    y, sets = engine.y_all, engine.sets_all
    gamma = y * (K[:, S] @ (y[S] * beta) + K[:, c] * y[c] + beta_b)
    rows = (sets == _cp_core.SET_RESERVE) | (sets == _cp_core.SET_ERROR)
    rows[c] = True
    np.testing.assert_allclose(out["gamma"][rows], gamma[rows],
                               atol=1e-7 * (1.0 + np.max(np.abs(gamma[rows]))))


def test_next_event_is_the_smallest_ratio():
    engine, K, c = _driven_state()
    out = engine.path_step_for_tests(np.array([c], np.int64), np.ones(1), True, "event")
    beta_b, beta, S = _numpy_direction(engine, K, c)
    y, sets, g, a, C = engine.y_all, engine.sets_all, engine.g_all, engine.alpha_all, engine.C_all
    gam, tol = out["gamma"], out["tol"]
    cands = [(C[c], "end", -1)]  # the drive ends with alpha_c = C_c
    if gam[c] > tol:
        cands.append((max(-g[c] / gam[c], 0.0), "learned", c))
    for p, k in enumerate(S):
        if beta[p] > 1e-11:
            cands.append((max((C[k] - a[k]) / beta[p], 0.0), "to_error", k))
        elif beta[p] < -1e-11:
            cands.append((max(a[k] / -beta[p], 0.0), "to_reserve", k))
    for j in np.flatnonzero((sets == _cp_core.SET_RESERVE) | (sets == _cp_core.SET_ERROR)):
        if sets[j] == _cp_core.SET_ERROR and gam[j] > tol:
            cands.append((max(-g[j] / gam[j], 0.0), "to_margin", j))
        elif sets[j] == _cp_core.SET_RESERVE and gam[j] < -tol:
            cands.append((max(g[j] / -gam[j], 0.0), "to_margin", j))
    tau, _, slot = min(cands, key=lambda t: t[0])
    assert out["tau"] == pytest.approx(tau, rel=1e-9)
    assert out["slot"] == slot


def test_one_step_keeps_the_gradients_exact():
    engine, K, c = _driven_state()
    for _ in range(5):
        out = engine.path_step_for_tests(np.array([c], np.int64), np.ones(1), True, "migrate")
        assert out["status"] in (_cp_core.STATUS_OK, -1)
        if engine.set_of(c) != _cp_core.SET_DRIVEN:
            break
    y, sets, a = engine.y_all, engine.sets_all, engine.alpha_all
    act = sets != _cp_core.SET_INACTIVE
    g_true = y * (K @ (np.where(act, a, 0.0) * y) + engine.b) - 1.0
    others = act & (sets != _cp_core.SET_MARGIN)
    np.testing.assert_allclose(engine.g_all[others], g_true[others], atol=1e-9)
    assert np.all(np.abs(g_true[sets == _cp_core.SET_MARGIN]) < 1e-9)
    assert abs(np.dot(y[act], a[act])) < 1e-9


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_erasure_recomputes_the_largest_diagonal_over_the_live_slots(kernel):
    # max_diag scales tolerances, so it must depend on no erased row; the
    # scan may stop early only when a live slot still reaches the old value
    X, _ = _data(n=40)
    X = X * np.linspace(0.5, 3.0, len(X))[:, None]  # distinct norms: distinct diagonals (but rbf's)
    store = KernelStore(X.shape[1], kernel, 0.2, 3, 0.5)
    store.append(X)
    diag = np.diag(store.kernel_block(np.arange(len(X), dtype=np.intp)))
    live = np.ones(len(X), dtype=bool)
    assert store.max_diag == pytest.approx(np.max(np.abs(diag)), rel=1e-14)
    # the largest first, then one that is not the largest, then all but one
    for erased in ([int(np.argmax(np.abs(diag)))], [0], list(range(1, len(X) - 1))):
        erased = [s for s in erased if live[s]]
        live[erased] = False
        store.erase(np.asarray(erased, dtype=np.intp), live)
        assert store.max_diag == pytest.approx(np.max(np.abs(diag[live])), rel=1e-14)
    live[:] = False
    store.erase(np.flatnonzero(~live).astype(np.intp), live)
    assert store.max_diag == 0.0


def _refines_from_scratch(engine):
    """The rule of ``refines_solves`` recomputed: C max K_ii >= 1e6 over the active slots."""
    active = engine.sets_all != _cp_core.SET_INACTIVE
    cmax = engine.C_all[active].max() if active.any() else 0.0
    return bool(cmax * engine.store.max_diag >= 1e6)


def test_refinement_follows_the_largest_active_bound_through_every_change():
    # the engine caches max C over the active slots (no O(n) scan per
    # operation): removing the one slot that holds it, learning a larger one,
    # and moving the bounds must each give the rule recomputed from scratch
    X, y = _data(n=60)
    store = KernelStore(X.shape[1], "rbf", 0.2, 3, 0.5)
    store.append(X)
    engine = CPEngine(store)
    bounds = np.ones(len(y))
    bounds[[5, 6]] = [2e6, 4e6]  # two slots above the threshold, the largest last
    for s in range(50):
        engine.learn(s, y[s], bounds[s])
    seen = []

    def check():
        seen.append(engine.refines_solves)
        assert seen[-1] == _refines_from_scratch(engine)

    check()
    engine.unlearn(np.array([6], dtype=np.intp))  # the maximum leaves; 2e6 remains
    check()
    engine.unlearn(np.array([5], dtype=np.intp))  # now every bound is 1
    check()
    engine.learn(50, y[50], 3e6)  # a new maximum
    check()
    engine.unlearn(np.array([50], dtype=np.intp))
    check()
    new_C = engine.C_all.copy()
    new_C[new_C > 0] = 1.0
    new_C[7] = 5e6  # the bound path raises an active bound past the threshold
    engine.move_bounds(new_C)
    check()
    new_C[7] = 1.0
    engine.move_bounds(new_C)
    check()
    assert seen == [True, True, False, True, False, True, False]


@pytest.mark.parametrize("kernel", ["linear", "poly"])
def test_refinement_is_always_on_for_finite_feature_kernels(kernel):
    X, y = _data(n=40)
    _, engine = _fitted_engine(X, y, kernel=kernel)
    assert engine.refines_solves
