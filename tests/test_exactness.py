"""Exactness of eco.CPSVM: after every fit, increment and decrement the model is
the SVM trained from scratch on the active examples.

Each check compares decision values with two independent solvers (raw SVC at
tol=1e-12 within 1e-6, the float64-polished reference within 1e-9) and the KKT
certificate recomputed from scratch (see exact_helpers.assert_exact).
"""

import numpy as np
import pytest

from eco import CPSVM
from eco.reference import reference_kernel
from exact_helpers import (
    Ledger,
    assert_close,
    assert_exact,
    assert_same_model,
    digits_binary,
    load_task,
    model_decisions,
    svc_slack,
    synthetic,
    tracked_fit,
    tracked_increment,
)
from sklearn.svm import SVC

KERNELS = ["linear", "rbf", "poly"]
TASKS = ["digits:3-vs-rest", "digits:8-vs-9", "mnist", "synthetic"]


def _twin(make, X, y, **fit_kw):
    """Two models fitted identically (one to update one way, one the other)."""
    return make().fit(X, y, **fit_kw), make().fit(X, y, **fit_kw)


# ----------------------------------------------------------------------- fit


@pytest.mark.parametrize("C", [0.1, 1.0, 10.0])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("task", TASKS)
def test_fit_exact_both_methods(task, kernel, C):
    X, y = load_task(task)
    batch, ledger = tracked_fit(CPSVM(C=C, kernel=kernel), X, y, method="batch")
    assert_exact(batch, ledger)
    incr = CPSVM(C=C, kernel=kernel).fit(X, y, method="incremental")
    assert_exact(incr, ledger)
    assert incr.gamma_ == batch.gamma_
    assert_same_model(batch, incr, X, 1e-9, "batch vs incremental fit")


def test_auto_method_is_batch():
    X, y = load_task("synthetic")
    a = CPSVM().fit(X, y)
    b = CPSVM().fit(X, y, method="batch")
    assert a.state_digest() == b.state_digest()


# ----------------------------------------------------------------- sequences


def _pick(model, kind, rng):
    ids = {"margin": model.margin_, "error": model.error_, "reserve": model.reserve_}[kind]
    return None if len(ids) == 0 else ids[rng.integers(len(ids))]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("task,C", [("synthetic", 1.0), ("digits:8-vs-9", 0.1), ("mnist", 0.03)])
def test_decrement_sequence_then_increments(task, C, kernel):
    """24 single decrements drawn in turn from margin_, error_ and reserve_, then
    increments of held-out rows, with an exactness check after each update."""
    X, y = load_task(task)
    n_fit = len(y) - 12
    rng = np.random.default_rng(0)
    # gamma as "scale" resolves it at fit, but fixed: "scale" follows the rows
    # and re-solves at every update (tests/test_data_dependent.py); here the
    # paths through the sets are under test
    gamma = 1.0 / (X.shape[1] * X[:n_fit].var())
    model, ledger = tracked_fit(CPSVM(C=C, kernel=kernel, gamma=gamma), X[:n_fit], y[:n_fit])
    assert_exact(model, ledger, X)
    hits = {"margin": 0, "error": 0, "reserve": 0}
    kinds = ["margin", "error", "reserve"]
    for step in range(24):
        # cycle through the sets; fall back to another set when one is empty
        for kind in kinds[step % 3:] + kinds[:step % 3]:
            i = _pick(model, kind, rng)
            if i is not None:
                break
        receipt = model.decrement([i], audit=True)
        hits[kind] += 1
        assert receipt.removed_ids == (i,)
        want = "reserve_drop" if kind == "reserve" else "path"
        assert receipt.paths[i] == want, (kind, receipt.paths)
        assert receipt.kkt_violation < 1e-8
        assert i not in set(model.ids_.tolist())
        assert_exact(model, ledger, X)
    assert min(hits.values()) >= 4, hits
    # increments: single rows, then a block of rows
    for k in range(n_fit, n_fit + 4):
        tracked_increment(model, ledger, X[k:k + 1], y[k:k + 1])
        assert_exact(model, ledger, X)
    tracked_increment(model, ledger, X[n_fit + 4:], y[n_fit + 4:])
    assert_exact(model, ledger, X)


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_decrements_sizes_1_to_100(kernel):
    """Batches of 1 to 100 ids: exact, and batch=True equals one-by-one."""
    X, y = synthetic(420, 6, seed=3)
    rng = np.random.default_rng(1)
    make = lambda: CPSVM(C=1.0, kernel=kernel)  # noqa: E731
    A, B = _twin(make, X, y)
    ledger = Ledger(X.shape[1])
    ledger.add(X, y)
    for size in [1, 2, 3, 7, 20, 50, 100]:
        ids = rng.choice(A.ids_, size=size, replace=False)
        ra = A.decrement(ids, batch=True)
        rb = B.decrement(ids, batch=False)
        assert ra.batch and not rb.batch
        assert "resolve" not in ra.paths.values()
        assert_same_model(A, B, X, 1e-9, f"batch vs one-by-one (size {size})")
        assert_exact(A, ledger, svc=(size in (1, 100)))
    assert A.n_active_ == 420 - 183


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_removing_every_margin_vector(kernel):
    X, y = synthetic(250, 4, seed=5)
    make = lambda: CPSVM(C=2.0, kernel=kernel)  # noqa: E731
    A, B = _twin(make, X, y)
    ledger = Ledger(4)
    ledger.add(X, y)
    margin = A.margin_.copy()
    assert len(margin) >= 3
    A.decrement(margin, batch=True)
    B.decrement(margin, batch=False)
    assert_exact(A, ledger)
    assert_same_model(A, B, X, 1e-9, "remove all margin vectors")
    # and once more: the new margin set, together with every error vector
    both = np.concatenate([A.margin_, A.error_])
    A.decrement(both, batch=True)
    B.decrement(both, batch=False)
    assert_exact(A, ledger)
    assert_same_model(A, B, X, 1e-9, "remove margin and error vectors")


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_emptying_a_class_then_refill(kernel):
    X, y = synthetic(150, 4, seed=7)
    make = lambda: CPSVM(C=1.0, kernel=kernel)  # noqa: E731
    A, B = _twin(make, X, y)
    ledger = Ledger(4)
    ledger.add(X, y)
    positives = np.flatnonzero(y == 1)
    A.decrement(positives, batch=True)
    B.decrement(positives, batch=False)
    assert_exact(A, ledger)
    # documented: one class left -> the decision is that class everywhere
    np.testing.assert_array_equal(A.decision_function(X), -1.0)
    np.testing.assert_array_equal(A.predict(X), 0)
    assert_same_model(A, B, X, 0.0, "one class left")
    # learn the positives back, in two increments: the model is exact again
    half = len(positives) // 2
    for part in (positives[:half], positives[half:]):
        ids = A.increment(X[part], y[part], ids=[f"back{k}" for k in part])
        ledger.add(X[part], y[part], ids=list(ids))
        assert_exact(A, ledger)
    refit = CPSVM(C=1.0, kernel=kernel, gamma=A.gamma_).fit(X, y)
    assert_same_model(A, refit, X, 1e-9, "emptied then refilled vs fit")


@pytest.mark.parametrize("kernel", KERNELS)
def test_batch_with_duplicates_of_rows_that_stay(kernel):
    """The removed rows have exact copies (same x and y) that stay active."""
    X0, y0 = synthetic(160, 4, seed=11)
    dup = np.arange(0, 160, 4)  # 40 rows given twice
    X = np.vstack([X0, X0[dup]])
    y = np.concatenate([y0, y0[dup]])
    make = lambda: CPSVM(C=1.0, kernel=kernel)  # noqa: E731
    A, B = _twin(make, X, y)
    ledger = Ledger(4)
    ledger.add(X, y)
    assert_exact(A, ledger)
    # remove one copy of every duplicated pair that is a support vector
    support = set(A.support_ids_.tolist())
    victims = [int(i) for i in dup if i in support or 160 + list(dup).index(i) in support]
    victims = victims or [int(dup[0])]
    A.decrement(victims, batch=True)
    B.decrement(victims, batch=False)
    assert_exact(A, ledger)
    assert_same_model(A, B, X, 1e-9, "duplicates")
    # the model equals the one that never saw the second copies
    keep = np.setdiff1d(np.arange(len(y)), victims)
    refit = CPSVM(C=1.0, kernel=kernel, gamma=A.gamma_).fit(X[keep], y[keep])
    assert_same_model(A, refit, X, 1e-8, "duplicates vs refit")


# ---------------------------------------------------------- path identities


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("batch", [True, False])
def test_add_then_remove_equals_never_added(kernel, batch):
    X, y = load_task("digits:8-vs-9")
    base, extra = np.arange(0, 200), np.arange(200, 260)
    model = CPSVM(C=1.0, kernel=kernel).fit(X[base], y[base])
    never = CPSVM(C=1.0, kernel=kernel, gamma=model.gamma_).fit(X[base], y[base])
    ids = list(model.increment(X[extra[:20]], y[extra[:20]]))  # one block
    for k in extra[20:]:  # and one at a time
        ids += list(model.increment(X[k:k + 1], y[k:k + 1]))
    assert model.n_active_ == 260
    model.decrement(ids, batch=batch)
    assert model.n_active_ == 200
    assert_same_model(model, never, X, 1e-9, "add then remove vs never added")
    np.testing.assert_allclose(model.alpha_, never.alpha_, rtol=0, atol=1e-9 * model.C)


@pytest.mark.parametrize("kernel", KERNELS)
def test_insertion_order_does_not_matter(kernel):
    X, y = load_task("synthetic")
    n = len(y)
    perm = np.random.default_rng(2).permutation(n)
    # a fixed gamma: "scale" would differ in its last bits between orders
    a = CPSVM(C=1.0, kernel=kernel, gamma=0.2).fit(X, y)
    b = CPSVM(C=1.0, kernel=kernel, gamma=0.2).fit(X[perm], y[perm], ids=perm)
    c = CPSVM(C=1.0, kernel=kernel, gamma=0.2).fit(X[perm], y[perm], ids=perm,
                                                   method="incremental")
    assert_same_model(a, b, X, 1e-9, "permuted batch fit")
    assert_same_model(a, c, X, 1e-9, "permuted incremental fit")
    # the same ids hold the same coefficients
    order = np.argsort(b.ids_)
    np.testing.assert_allclose(b.alpha_[order], a.alpha_, atol=1e-9)
    # increments in two different orders end in the same model
    head = np.arange(100)
    rest = np.arange(100, n)
    d = CPSVM(C=1.0, kernel=kernel, gamma=a.gamma_).fit(X[head], y[head])
    e = CPSVM(C=1.0, kernel=kernel, gamma=a.gamma_).fit(X[head], y[head])
    for k in rest:
        d.increment(X[k:k + 1], y[k:k + 1], ids=[int(k)])
    for k in rest[::-1]:
        e.increment(X[k:k + 1], y[k:k + 1], ids=[int(k)])
    assert_same_model(a, d, X, 1e-9, "increments in order")
    assert_same_model(a, e, X, 1e-9, "increments in reverse order")


@pytest.mark.parametrize("kernel", KERNELS)
def test_precomputed_kernel_equals_builtin(kernel):
    X, y = load_task("digits:3-vs-rest")
    gamma, degree, coef0 = 0.05, 3, 1.0
    G = reference_kernel(X, X, kernel, gamma, degree, coef0)
    n0 = 220
    builtin = CPSVM(C=1.0, kernel=kernel, gamma=gamma, degree=degree, coef0=coef0)
    builtin.fit(X[:n0], y[:n0])
    pre = CPSVM(C=1.0, kernel="precomputed").fit(G[:n0, :n0], y[:n0])
    ledger = Ledger(X.shape[1])
    ledger.add(X[:n0], y[:n0])

    def same(what):
        n_given = len(ledger.ids)
        f_pre = pre.decision_function(G[:, :n_given])
        assert_close(f_pre, builtin.decision_function(X), 1e-9, what)
        assert_exact(pre, ledger, gram=G[:n_given, :n_given], svc=False)

    same("after fit")
    # increments: kernel rows against every row given so far, then the new ones
    for lo, hi in [(220, 221), (221, 260)]:
        builtin.increment(X[lo:hi], y[lo:hi])
        pre.increment(G[lo:hi, :hi], y[lo:hi])
        ledger.add(X[lo:hi], y[lo:hi])
        same(f"after increment {lo}:{hi}")
    victims = np.concatenate([builtin.margin_[:5], builtin.error_[:5], builtin.reserve_[:5]])
    for batch in (True, False):
        part = victims[: len(victims) // 2] if batch else victims[len(victims) // 2:]
        builtin.decrement(part, batch=batch)
        pre.decrement(part, batch=batch)
        same(f"after decrement (batch={batch})")


@pytest.mark.parametrize("kernel", KERNELS)
def test_sample_weight_equals_repeated_rows(kernel):
    X, y = synthetic(120, 4, seed=13)
    w = np.random.default_rng(4).integers(0, 4, size=len(y))  # 0..3 copies
    gamma = 0.3  # fixed: gamma="scale" would see the repeated rows' variance
    weighted = CPSVM(C=0.5, kernel=kernel, gamma=gamma).fit(X, y, sample_weight=w)
    rep = np.repeat(np.arange(len(y)), w)
    repeated = CPSVM(C=0.5, kernel=kernel, gamma=gamma).fit(X[rep], y[rep])
    assert_same_model(weighted, repeated, X, 1e-8, "sample_weight vs repeated rows")
    ledger = Ledger(4)
    ledger.add(X, y, sample_weight=w)
    assert_exact(weighted, ledger)
    # unlearning a weighted row equals unlearning all of its copies
    victims = [i for i in weighted.support_ids_.tolist() if w[i] >= 2][:5]
    assert victims
    weighted.decrement(victims)
    repeated.decrement(np.flatnonzero(np.isin(rep, victims)))
    assert_same_model(weighted, repeated, X, 1e-8, "after decrement")
    assert_exact(weighted, ledger)


@pytest.mark.parametrize("class_weight", [{0: 3.0, 1: 0.5}, "balanced"])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_class_weight(kernel, class_weight):
    # unbalanced (about 10% positives), so that "balanced" is far from all ones;
    # digits rather than synthetic data: libsvm at tol=1e-12 takes minutes on
    # some weighted synthetic sets
    X, y = digits_binary("3-vs-rest", n=300)
    model, ledger = tracked_fit(CPSVM(C=1.0, kernel=kernel, class_weight=class_weight), X, y)
    if class_weight == "balanced":
        counts = np.bincount(y)
        np.testing.assert_allclose(model.class_weight_, len(y) / (2 * counts))
        frozen = dict(zip([0, 1], model.class_weight_.tolist()))
    else:
        frozen = class_weight
    assert_exact(model, ledger)
    # independently: SVC with the same (frozen) class weights
    svc = SVC(C=1.0, kernel=kernel, gamma=model.gamma_, class_weight=frozen, tol=1e-12,
              shrinking=False).fit(X, y)
    assert_close(model.decision_function(X), svc.decision_function(X), 1e-6, "vs SVC",
                 extra=svc_slack(model, X))
    # after unlearning, "balanced" follows the remaining rows (issue 9), a dict stays
    removed = np.flatnonzero(y == 1)[::2]
    model.decrement(removed)
    if class_weight == "balanced":
        counts = np.bincount(np.delete(y, removed))
        np.testing.assert_allclose(model.class_weight_, (len(y) - len(removed)) / (2 * counts))
    else:
        np.testing.assert_array_equal(model.class_weight_, [3.0, 0.5])
    assert_exact(model, ledger)


def test_sample_weight_and_class_weight_multiply():
    X, y = synthetic(150, 3, seed=19)
    sw = np.random.default_rng(5).uniform(0.2, 3.0, size=len(y))
    model, ledger = tracked_fit(CPSVM(C=0.7, class_weight={0: 2.0, 1: 0.5}), X, y,
                                sample_weight=sw)
    np.testing.assert_allclose(model.head_set_.slot_C, 0.7 * np.where(y == 0, 2.0, 0.5) * sw)
    assert_exact(model, ledger)
    ids = tracked_increment(model, ledger, X[:10] + 0.01, y[:10], sample_weight=sw[:10] * 2)
    assert_exact(model, ledger)
    model.decrement(ids[:5] + [int(model.error_[0])])
    assert_exact(model, ledger)


@pytest.mark.slow
def test_mnist_features_larger():
    """MNIST (real when present) at n=1000: fit and a 100-row batch decrement."""
    from exact_helpers import mnist_small

    X, y, _ = mnist_small(n=1000, n_components=30)
    model, ledger = tracked_fit(CPSVM(C=1.0), X, y)
    assert_exact(model, ledger)
    victims = np.concatenate([model.margin_[:40], model.error_[:30], model.reserve_[:30]])
    model.decrement(victims)
    assert_exact(model, ledger)


# --------------------------------------------------------------- determinism


@pytest.mark.parametrize("kernel", KERNELS)
def test_same_data_same_digest(kernel):
    X, y = digits_binary("1-vs-7")

    def run():
        m = CPSVM(C=1.0, kernel=kernel).fit(X[:150], y[:150])
        digests = [m.state_digest()]
        m.increment(X[150:170], y[150:170])
        digests.append(m.state_digest())
        m.decrement(list(m.margin_[:3]) + list(m.reserve_[:3]))
        digests.append(m.state_digest())
        m.decrement(m.support_ids_[:4], batch=False)
        digests.append(m.state_digest())
        return digests, model_decisions(m, X)

    (d1, f1), (d2, f2) = run(), run()
    assert d1 == d2
    assert len(set(d1)) == len(d1)  # every update changed the state
    np.testing.assert_array_equal(f1, f2)
