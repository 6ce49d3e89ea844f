"""Scaling: eco against SVC from n = 5,000 up, on two data sets (issue 12).

Points (see :mod:`scaling_point`): a seeded Gaussian mixture in 64 dimensions
(the stand-in for deep features) at n = 5k, 10k, 20k, 50k, 100k, and the
MNIST test set (PCA-50, digit 0 against the rest) at 5k and 10k. Points above
``ECO_BENCH_MAX_N`` (default 20,000) are skipped: the 50k and 100k points take
minutes each. For each point: ``CPSVM.fit`` and ``SVC.fit``; unlearning one
reserve, one margin and one error example and a batch of 50 with the default
call (``decrement(ids)``) and with ``audit=False``; the SVC refit without
them; the plain NumPy CP path (:mod:`numpy_cp`) on the same margin and error
examples; the peak resident memory of eco (fit and two unlearning requests)
in a subprocess. Everything is checked before it is timed. The summary gives
the ratios of the medians and the slope of each curve on log-log axes.
``python benchmarks/scaling.py`` runs the same sweep and draws the plot.
"""

import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import scaling_point as sp

from eco import _cp_core

POINTS = sp.sweep_points()
_POINTS = {}


def _point(dataset, n):
    """The Point of (dataset, n), built once; the previous one is dropped (memory)."""
    if (dataset, n) not in _POINTS:
        _POINTS.clear()
        _POINTS[(dataset, n)] = sp.Point(dataset, n)
    return _POINTS[(dataset, n)]


def _key(dataset, n, what):
    return f"scaling {dataset} n={n} {what}"


def _rounds(n, what):
    big = n >= 50_000
    return {"fit": 1 if big else 3, "unlearn": 3 if big else 7, "reserve": 9 if big else 21,
            "refit": 1 if big else 3, "numpy": 2 if big else 5}[what]


def _ids(p, kind):
    return p.batch() if kind == "batch" else p.example(kind)


def _refit_key(d, n, kind):
    return _key(d, n, f"SVC refit without {'50' if kind == 'batch' else 'a ' + kind}")


pytestmark = pytest.mark.skipif(not POINTS, reason="ECO_BENCH_MAX_N below every size")


@pytest.mark.parametrize("dataset,n", POINTS)
def test_scaling_fit(benchmark, results, dataset, n):
    p = _point(dataset, n)
    p.check_fit()
    benchmark.group = f"scaling {dataset} fit"
    model = benchmark.pedantic(p.fit, rounds=_rounds(n, "fit"), iterations=1)
    assert model.state_digest() == p.digest
    key = _key(dataset, n, "CPSVM.fit")
    results.record(benchmark, key, n=n, dataset=dataset, source=p.source,
                   n_margin=len(p.model.margin_), n_error=len(p.model.error_))
    results.track_slope(f"scaling {dataset} CPSVM.fit", n, key)


@pytest.mark.parametrize("dataset,n", POINTS)
def test_scaling_svc_fit(benchmark, results, bench, dataset, n):
    p = _point(dataset, n)
    p.check_fit()  # includes the SVC.fit against the exact fit
    benchmark.group = f"scaling {dataset} fit"
    benchmark.pedantic(p.svc_fit, rounds=_rounds(n, "fit"), iterations=1)
    key = _key(dataset, n, "SVC.fit")
    results.record(benchmark, key, n=n, dataset=dataset, compare=[bench.Comparison(
        f"{dataset} n={n} CPSVM.fit / SVC.fit", _key(dataset, n, "CPSVM.fit"), key)])
    results.track_slope(f"scaling {dataset} SVC.fit", n, key)


@pytest.mark.parametrize("kind", ["reserve", "margin", "error", "batch"])
@pytest.mark.parametrize("dataset,n", POINTS)
def test_scaling_refit(benchmark, results, dataset, n, kind):
    p = _point(dataset, n)
    ids = _ids(p, kind)
    p.check_removal(ids, kind)  # includes the default SVC refit against the exact model
    Xr, yr = p.remaining(ids)
    benchmark.group = f"scaling {dataset} n={n} unlearn"
    benchmark.pedantic(p.svc_fit, args=(Xr, yr), rounds=_rounds(n, "refit"), iterations=1)
    key = _refit_key(dataset, n, kind)
    results.record(benchmark, key, n=n, dataset=dataset)
    results.track_slope(f"scaling {dataset} SVC refit without {kind}", n, key)


@pytest.mark.parametrize("label", ["default", "screening=False", "one thread"])
@pytest.mark.parametrize("kind", ["reserve", "margin", "error", "batch"])
@pytest.mark.parametrize("dataset,n", POINTS)
def test_scaling_unlearn(benchmark, results, bench, dataset, n, kind, label):
    p = _point(dataset, n)
    ids = _ids(p, kind)
    done = p.check_removal(ids, kind)
    request = ids if kind == "batch" else ids[0]
    holder = {}

    def setup():
        holder["model"] = p.fresh()
        if label == "screening=False":  # every row at every step, same events (untimed switch)
            holder["model"].set_params(screening=False)
        gc.collect()  # the copy's garbage is not the call's to collect
        return (holder["model"],), {}

    def unlearn(model):
        return model.decrement(request)

    rounds = _rounds(n, "reserve" if kind == "reserve" else "unlearn")
    benchmark.group = f"scaling {dataset} n={n} unlearn"
    # "one thread": eco's helper thread of the row products off (same bits)
    previous = _cp_core.set_parallel_min_work(float("inf")) if label == "one thread" else None
    try:
        benchmark.pedantic(unlearn, setup=setup, rounds=rounds, iterations=1)
    finally:
        if previous is not None:
            _cp_core.set_parallel_min_work(previous)
    assert holder["model"].state_digest() == done["digest"]
    key = _key(dataset, n, f"decrement {kind} ({label})")
    receipt = done["receipt"]
    results.record(benchmark, key, n=n, dataset=dataset, n_migrations=receipt.n_migrations,
                   note=f"steps={receipt.n_steps} migrations={receipt.n_migrations}",
                   compare=[bench.Comparison(f"{dataset} n={n} {kind} ({label}): refit / unlearn",
                                             _refit_key(dataset, n, kind), key)])
    results.track_slope(f"scaling {dataset} decrement {kind} ({label})", n, key)


@pytest.mark.parametrize("kind", ["margin", "error"])
@pytest.mark.parametrize("dataset,n", [pt for pt in POINTS if pt[1] <= sp.numpy_max_n()])
def test_scaling_numpy(benchmark, results, bench, dataset, n, kind):
    """The plain NumPy CP path on the same request (checked to end in eco's state)."""
    import copy

    p = _point(dataset, n)
    ids = _ids(p, kind)
    state = p.numpy_state(ids)
    benchmark.group = f"scaling {dataset} n={n} unlearn"
    benchmark.pedantic(lambda s: s.unlearn(ids[0]), setup=lambda: ((copy.deepcopy(state),), {}),
                       rounds=_rounds(n, "numpy"), iterations=1)
    key = _key(dataset, n, f"numpy {kind}")
    results.record(benchmark, key, n=n, dataset=dataset, compare=[
        bench.Comparison(f"{dataset} n={n} {kind}: numpy / eco (audit=False)", key,
                         _key(dataset, n, f"decrement {kind} (audit=False)"), ">= 3")])
    results.track_slope(f"scaling {dataset} numpy {kind}", n, key)


@pytest.mark.parametrize("dataset,n", [pt for pt in POINTS if pt[1] <= sp.numpy_max_n()])
def test_scaling_matvec(benchmark, results, bench, dataset, n):
    """One product over the kernel rows of the margin set: the floor of a path step."""
    p = _point(dataset, n)
    K_S, v = p.margin_rows()
    S = np.sort(np.asarray(p.model.margin_))
    f = p.model.decision_function(p.X[S[:5]])  # the rows are the model's kernel
    a = np.zeros(p.n)
    a[p.model.ids_] = p.model.alpha_ * np.where(p.y == p.model.classes_[1], 1.0, -1.0)
    sup = np.flatnonzero(a)
    assert np.allclose(sp.numpy_cp.rbf_rows(p.X, S[:5], p.gamma)[:, sup] @ a[sup]
                       + p.model.intercept_[0], f, atol=1e-10)
    benchmark.group = "scaling matvec K_S.T @ v"
    benchmark.pedantic(lambda: v @ K_S, rounds=50, iterations=1)
    key = _key(dataset, n, "matvec K_S.T @ v")
    results.record(benchmark, key, n=n, dataset=dataset, shape=list(K_S.shape))
    for kind in ("margin", "error"):
        done = p.check_removal(_ids(p, kind), kind)
        m = done["receipt"].n_migrations
        for label, suffix in (("default", ""), ("screening=False", " (screening=False)")):
            if m:
                name = f"{dataset} n={n} {kind}: per migration / matvec{suffix}"
                results.comparisons[name] = bench.Comparison(
                    name, _key(dataset, n, f"decrement {kind} ({label})"), key, num_scale=m)


@pytest.mark.parametrize("dataset,n", POINTS)
def test_scaling_peak_memory(benchmark, results, dataset, n):
    """Peak resident memory of eco alone (data, fit, an error example, 50 ids), in a subprocess."""
    script = Path(__file__).resolve().parent / "scaling.py"
    out = {}

    def run():
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "mem.json"
            subprocess.run([sys.executable, str(script), "--memory", dataset, str(n),
                            "--json", str(path)], check=True)
            out.update(json.loads(path.read_text()))

    benchmark.group = "scaling peak memory (subprocess)"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["peak_rss_mb_eco"] >= out["peak_rss_mb_data"] > 0
    key = _key(dataset, n, "memory subprocess")
    results.record(benchmark, key, n=n, dataset=dataset, **out,
                   note=(f"peak RSS {out['peak_rss_mb_eco']:.0f} MB "
                         f"(data loaded: {out['peak_rss_mb_data']:.0f} MB)"))
