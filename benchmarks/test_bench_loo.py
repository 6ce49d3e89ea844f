"""Exact leave-one-out: ``CPSVM.loo_decision()`` against brute force.

At n = 1000 (MNIST PCA-50, digit 0 against the rest, rbf, C = 1, gamma frozen
from the fit), the exact leave-one-out decision values by unlearning each
support vector on a copy of the state (reserve vectors need no work) are
timed against the brute force: one ``SVC`` refit without each example in
turn, n refits. Target: at least 20x faster.

The check before timing: on a seeded sample of examples (support vectors and
reserve vectors), the value of ``loo_decision`` equals the decision of an
exact refit without that example (``CPSVM`` fitted from scratch, no
decrement involved) within 1e-9, and the brute-force refits agree with the
exact values within the tolerance of a default libsvm solve.
"""

import numpy as np

from eco import CPSVM

N = 1000
#: Examples checked against exact refits before timing.
N_CHECKED = 12


def _brute_force(X, y, gamma, bench):
    """Decision value of every row from an SVC trained without it (n refits)."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        svc = bench.refit_svc(X[keep], y[keep], gamma)
        out[i] = svc.decision_function(X[i:i + 1])[0]
    return out


def test_loo_exact(benchmark, workloads, results, bench):
    wl = workloads.binary(N)
    model = wl.fresh()
    f_loo = model.loo_decision()
    assert model.state_digest() == wl.digest  # LOO leaves the model as it was
    rng = np.random.default_rng(0)
    support = np.flatnonzero(np.isin(wl.model.ids_, wl.model.support_ids_))
    checked = np.concatenate([rng.choice(support, N_CHECKED // 2, replace=False),
                              rng.choice(np.setdiff1d(np.arange(N), support),
                                         N_CHECKED // 2, replace=False)])
    for i in checked:
        keep = np.arange(N) != i
        refit = CPSVM(C=bench.C, kernel="rbf", gamma=wl.gamma).fit(wl.X[keep], wl.y[keep])
        assert abs(refit.decision_function(wl.X[i:i + 1])[0] - f_loo[i]) < 1e-9
    benchmark.group = f"leave-one-out n={N}"
    benchmark.pedantic(model.loo_decision, rounds=3, warmup_rounds=0)
    results.record(
        benchmark, f"LOO n={N} CPSVM.loo_decision",
        note=f"{len(support)} support vectors unlearned",
        compare=[bench.Comparison(f"LOO n={N}: brute force / loo_decision",
                                  f"LOO n={N} brute force ({N} SVC refits)",
                                  f"LOO n={N} CPSVM.loo_decision", target=">= 20")])


def test_loo_brute_force(benchmark, workloads, results, bench):
    wl = workloads.binary(N)
    f_loo = wl.fresh().loo_decision()
    benchmark.group = f"leave-one-out n={N}"
    f_brute = benchmark.pedantic(_brute_force, args=(wl.X, wl.y, wl.gamma, bench),
                                 rounds=1, warmup_rounds=0)
    # a default-tolerance libsvm solve agrees with the exact values
    assert np.max(np.abs(f_brute - f_loo)) < bench.DEFAULT_SVC_TOL
    results.record(benchmark, f"LOO n={N} brute force ({N} SVC refits)")
