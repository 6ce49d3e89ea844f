"""Fitting: the exact fit against libsvm, binary and ten-class.

- One binary head at n = 5000 (MNIST PCA-50, digit 0 against the rest, rbf,
  C = 1, gamma frozen from the CPSVM fit): ``CPSVM.fit(method="batch")``
  against ``SVC.fit``; target <= 1.5x (issue 12; it was 2x before).
- ``method="incremental"`` (every row learned by CP steps) at n = 1000, for
  reference, beside ``method="batch"`` and ``SVC.fit`` at the same size.
- Ten classes on n = 8000 rows (PCA-50 of all ten digits; synthetic ten-class
  data in the fallback): ``CPSVM.fit`` (ten one-versus-rest heads sharing one
  kernel store), also with ``n_jobs=2``, against ten binary ``SVC.fit``
  (each digit against the rest, the same problems); target <= 1.5x (issue
  12; it was 2x before).

Every fitted model is checked before it is timed: the KKT certificate below
1e-8 and the decision values of the refits (see ``conftest.py``).
"""

import numpy as np
import pytest

from eco import CPSVM

BINARY_N = 5000
INCREMENTAL_N = 1000
MULTI_N = 8000
ROUNDS = {"binary": 5, "incremental": 5, "multi": 3}


def _key(what):
    return f"fit {what}"


# -------------------------------------------------------------- binary head


def test_svc_binary(benchmark, workloads, results, bench):
    wl = workloads.binary(BINARY_N)
    f_exact = wl.verified_fit()
    svc = bench.refit_svc(wl.X, wl.y, wl.gamma)
    assert np.max(np.abs(svc.decision_function(wl.X) - f_exact)) < bench.DEFAULT_SVC_TOL
    benchmark.group = f"fit binary n={BINARY_N}"
    benchmark.pedantic(bench.refit_svc, args=(wl.X, wl.y, wl.gamma),
                       rounds=ROUNDS["binary"], warmup_rounds=1)
    results.record(benchmark, _key(f"n={BINARY_N} SVC.fit"), n=BINARY_N, source=wl.source)


def test_cpsvm_binary_batch(benchmark, workloads, results, bench):
    wl = workloads.binary(BINARY_N)
    wl.verified_fit()  # the session's model against both refits

    def fit():
        return CPSVM(C=bench.C, kernel="rbf", gamma=wl.gamma).fit(wl.X, wl.y, method="batch")

    model = fit()
    assert model.kkt_violation() < bench.KKT_TOL
    assert model.state_digest() == wl.digest  # the checked model, bit for bit
    benchmark.group = f"fit binary n={BINARY_N}"
    model = benchmark.pedantic(fit, rounds=ROUNDS["binary"], warmup_rounds=1)
    assert model.state_digest() == wl.digest
    key = _key(f"n={BINARY_N} CPSVM.fit batch")
    results.record(
        benchmark, key, n=BINARY_N, source=wl.source,
        compare=[bench.Comparison(f"n={BINARY_N} CPSVM.fit(batch) / SVC.fit", key,
                                  _key(f"n={BINARY_N} SVC.fit"), "<= 1.5")])


@pytest.mark.parametrize("method", ["batch", "incremental"])
def test_cpsvm_small(benchmark, workloads, results, bench, method):
    wl = workloads.binary(INCREMENTAL_N)
    f_exact = wl.verified_fit()

    def fit():
        return CPSVM(C=bench.C, kernel="rbf", gamma=wl.gamma).fit(wl.X, wl.y, method=method)

    model = fit()
    assert model.kkt_violation() < bench.KKT_TOL
    assert np.max(np.abs(model.decision_function(wl.X) - f_exact)) < bench.REFERENCE_TOL
    benchmark.group = f"fit binary n={INCREMENTAL_N}"
    model = benchmark.pedantic(fit, rounds=ROUNDS["incremental"], warmup_rounds=1)
    assert model.kkt_violation() < bench.KKT_TOL
    key = _key(f"n={INCREMENTAL_N} CPSVM.fit {method}")
    results.record(
        benchmark, key, n=INCREMENTAL_N, method=method,
        compare=[bench.Comparison(f"n={INCREMENTAL_N} CPSVM.fit({method}) / SVC.fit", key,
                                  _key(f"n={INCREMENTAL_N} SVC.fit"))])


def test_svc_small(benchmark, workloads, results, bench):
    wl = workloads.binary(INCREMENTAL_N)
    benchmark.group = f"fit binary n={INCREMENTAL_N}"
    svc = bench.refit_svc(wl.X, wl.y, wl.gamma)
    assert np.max(np.abs(svc.decision_function(wl.X) - wl.verified_fit())) \
        < bench.DEFAULT_SVC_TOL
    benchmark.pedantic(bench.refit_svc, args=(wl.X, wl.y, wl.gamma),
                       rounds=ROUNDS["incremental"], warmup_rounds=1)
    results.record(benchmark, _key(f"n={INCREMENTAL_N} SVC.fit"), n=INCREMENTAL_N)


# -------------------------------------------------------------- ten classes


@pytest.fixture(scope="module")
def multiclass(workloads, bench):
    """The ten-class rows, gamma frozen from a CPSVM fit, and that fit checked.

    Every head meets the certificate, and every head's decision values match
    a libsvm refit (tol=1e-12) of that digit against the rest within 1e-6.
    """
    X, digits, source = workloads.multiclass(MULTI_N)
    model = CPSVM(C=bench.C, kernel="rbf", gamma="scale").fit(X, digits)
    assert model.kkt_violation() < bench.KKT_TOL
    F = model.decision_function(X)
    for h, digit in enumerate(model.classes_):
        y_h = np.where(digits == digit, 1, -1)
        svc = bench.refit_svc(X, y_h, model.gamma_, tol=1e-12, shrinking=False,
                              cache_size=1000)
        err = np.max(np.abs(svc.decision_function(X) - F[:, h]))
        assert err < bench.SVC_TOL, f"head {digit}: {err:.2e} from an SVC refit"
    return X, digits, source, model.gamma_, model.state_digest()


def _ten_svc_fits(X, digits, gamma, refit_svc):
    return [refit_svc(X, np.where(digits == d, 1, -1), gamma) for d in range(10)]


def test_svc_ten_binary(benchmark, multiclass, results, bench):
    X, digits, source, gamma, _ = multiclass
    benchmark.group = f"fit ten classes n={MULTI_N}"
    benchmark.pedantic(_ten_svc_fits, args=(X, digits, gamma, bench.refit_svc),
                       rounds=ROUNDS["multi"], warmup_rounds=0)
    results.record(benchmark, _key(f"n={MULTI_N} ten SVC.fit"), n=MULTI_N, source=source)


@pytest.mark.parametrize("n_jobs", [None, 2], ids=["n_jobs=None", "n_jobs=2"])
def test_cpsvm_ten_classes(benchmark, multiclass, results, bench, n_jobs):
    X, digits, source, gamma, digest = multiclass

    def fit():
        return CPSVM(C=bench.C, kernel="rbf", gamma=gamma, n_jobs=n_jobs).fit(X, digits)

    benchmark.group = f"fit ten classes n={MULTI_N}"
    # no warm-up round: each fit takes seconds; the first round is checked below
    model = benchmark.pedantic(fit, rounds=ROUNDS["multi"], warmup_rounds=0)
    assert model.kkt_violation() < bench.KKT_TOL
    assert model.state_digest() == digest  # the checked model, bit for bit
    key = _key(f"n={MULTI_N} CPSVM.fit ten classes n_jobs={n_jobs}")
    compare = [bench.Comparison(f"n={MULTI_N} ten classes n_jobs={n_jobs}: CPSVM / ten SVC",
                                key, _key(f"n={MULTI_N} ten SVC.fit"), "<= 1.5")]
    if n_jobs is not None:
        compare.append(bench.Comparison(
            f"n={MULTI_N} ten classes: speed-up of n_jobs={n_jobs}",
            _key(f"n={MULTI_N} CPSVM.fit ten classes n_jobs=None"), key))
    results.record(benchmark, key, compare=compare, n=MULTI_N, n_jobs=n_jobs, source=source)
