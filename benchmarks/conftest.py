"""Shared workload, correctness checks and the ratio summary of eco's benchmarks.

The workload (one per size, built once per session and cached): MNIST test
images, pixels scaled to [0, 1], PCA to 50 dimensions, digit 0 against the
rest (:func:`workloads.mnist_features`), an rbf ``CPSVM`` with C = 1 and the
numeric gamma that "scale" gives on these rows (frozen: the same value for
every estimator and every deletion). The MNIST files come from
``ECO_MNIST_DIR``, else from ``../shared/data/mnist`` next to the repository;
without them the deterministic synthetic stand-in of :mod:`workloads` is used
(the header and the summary say which).

The benchmarks use eco's public API only: a model is restored between rounds
with ``copy.deepcopy`` of the fitted one.

Every benchmark checks its result before timing it; the checks here are
cached so that a result checked once is not solved again for each benchmark
that times it. Each benchmark records its median with :meth:`Results.record`;
``pytest_terminal_summary`` prints one table of medians and the ratios named
by the benchmarks, computed from the medians (and the minima) of this run.
Targets are reported, never asserted: timings depend on the machine.
"""

import copy
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from eco import CPSVM
from eco.testing import refit_frozen
from eco.reference import reference_kernel, reference_solve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import mnist_dir, mnist_digits, mnist_features  # noqa: E402
import machine_load  # noqa: E402

#: The box bound of every benchmark.
C = 1.0
#: Certificate every exact state must meet (largest KKT violation).
KKT_TOL = 1e-8
#: Decision values against a libsvm refit at tol=1e-12 (its kernel cache is
#: single precision, so it agrees with an exact solution to about 1e-7).
SVC_TOL = 1e-6
#: Decision values against the float64-polished reference solve.
REFERENCE_TOL = 1e-9
#: Decision values of a default refit (tol=1e-3) against the exact solution:
#: a sanity check that the baseline solves the same problem.
DEFAULT_SVC_TOL = 1e-2

#: BLAS threads during the benchmarks (``ECO_BENCH_BLAS_THREADS``, default 1).
BLAS_THREADS_ENV = "ECO_BENCH_BLAS_THREADS"

_RESULTS_KEY = pytest.StashKey["Results"]()
_WORKLOADS_KEY = pytest.StashKey["Workloads"]()
_LOAD_KEY = pytest.StashKey["machine_load.MachineLoad"]()


def blas_threads():
    """BLAS threads for the session: ``ECO_BENCH_BLAS_THREADS``, default 1.

    One thread by default: libsvm (the baseline) is single-threaded, and the
    engine's BLAS calls are small level-2 products that a threaded OpenBLAS
    slows down by up to 100x when the cores are shared (its threads spin
    waiting for one another). "none" leaves the libraries' own settings.
    """
    value = os.environ.get(BLAS_THREADS_ENV, "1").strip().lower()
    return None if value in ("", "none") else int(value)


@pytest.fixture(scope="session", autouse=True)
def _limit_blas_threads():
    threads = blas_threads()
    if threads is None:
        yield
        return
    with threadpool_limits(limits=threads, user_api="blas"):
        yield


def refit_svc(X, y, gamma, **kwargs):
    """The baseline: scikit-learn's SVC with the model's C and frozen gamma."""
    return SVC(C=C, kernel="rbf", gamma=gamma, **kwargs).fit(X, y)


def scale_gamma(X):
    """The gamma that ``gamma="scale"`` gives on X, as a number to freeze."""
    return 1.0 / (X.shape[1] * X.var())


# ---------------------------------------------------------------- workloads


@dataclass
class BinaryWorkload:
    """One size of the binary workload and the model fitted on it.

    ``fresh()`` gives a model equal bit for bit to the fitted one
    (``copy.deepcopy``, which rebuilds it from its exported state, as loading
    a saved model does): each timed unlearning starts from the state a first
    request after loading a model meets.
    """

    n: int
    X: np.ndarray
    y: np.ndarray
    source: str
    model: CPSVM
    digest: str
    _checked: dict = field(default_factory=dict, repr=False)

    @property
    def gamma(self):
        return self.model.gamma_

    def fresh(self):
        """A copy of the fitted model, equal to it bit for bit."""
        return copy.deepcopy(self.model)

    def ids_of(self, kind):
        """Ids of the fitted model's ``reserve_``, ``margin_`` or ``error_`` set."""
        return np.asarray(getattr(self.model, f"{kind}_"))

    def rows_without(self, ids):
        """Boolean mask of the rows still active once `ids` are removed."""
        keep = ~np.isin(np.arange(self.n), np.asarray(ids))
        return keep

    def verified_fit(self):
        """Check the fitted model against the refits once; its decision values."""
        if "fit" not in self._checked:
            f = self.model.decision_function(self.X)
            check_against_refits(f, self.X, self.y, self.gamma)
            self._checked["fit"] = f
        return self._checked["fit"]

    def verified_removal(self, ids):
        """Unlearn `ids` from a fresh copy (batch path, with the audit) and check it.

        The unlearned model must meet the KKT certificate, match a libsvm
        refit at tol=1e-12 on the remaining rows within ``SVC_TOL`` and the
        polished reference solve within ``REFERENCE_TOL``. Cached per set of
        ids.

        Returns
        -------
        dict
            ``digest`` (state digest of the unlearned model), ``f`` (its
            decision values on the remaining rows), ``receipt``.
        """
        key = frozenset(np.asarray(ids).tolist())
        if key in self._checked:
            return self._checked[key]
        model = self.fresh()
        receipt = model.decrement(list(ids), audit=True)
        assert receipt.kkt_violation < KKT_TOL, receipt
        assert model.kkt_violation() < KKT_TOL
        keep = self.rows_without(ids)
        assert model.n_active_ == keep.sum()
        f = model.decision_function(self.X[keep])
        check_against_refits(f, self.X[keep], self.y[keep], self.gamma)
        out = {"digest": model.state_digest(), "f": f, "receipt": receipt}
        self._checked[key] = out
        return out


def check_against_refits(f, X, y, gamma):
    """Assert decision values `f` on the training rows equal a refit's.

    Two refits from scratch: libsvm at tol=1e-12 (agrees to ~1e-7, single
    precision kernel cache) and the float64-polished reference solve.
    Returns the reference decision values.
    """
    svc = refit_svc(X, y, gamma, tol=1e-12, shrinking=False, cache_size=1000)
    err_svc = np.max(np.abs(svc.decision_function(X) - f))
    assert err_svc < SVC_TOL, f"decision values differ from an SVC refit by {err_svc:.2e}"
    K = reference_kernel(X, X, "rbf", gamma, 3, 0.0)
    ref = reference_solve(K, y.astype(np.float64), np.full(len(y), C))
    assert ref.polished
    f_ref = ref.decision(K, y.astype(np.float64))
    err_ref = np.max(np.abs(f_ref - f))
    assert err_ref < REFERENCE_TOL, f"decision values differ from the reference by {err_ref:.2e}"
    return f_ref


class Workloads:
    """Session cache of the data sets, fitted models and checks."""

    def __init__(self):
        self.data_dir, self.origin = mnist_dir()
        self._binary = {}
        self._multi = {}
        self.sources = set()

    def binary(self, n):
        """The binary workload of `n` rows (digit 0 against the rest)."""
        if n not in self._binary:
            X, y, source = mnist_features(self.data_dir, n=n)
            self.sources.add(source)
            model = CPSVM(C=C, kernel="rbf", gamma=scale_gamma(X)).fit(X, y)
            assert model.kkt_violation() < KKT_TOL
            self._binary[n] = BinaryWorkload(n, X, y, source, model, model.state_digest())
        return self._binary[n]

    def multiclass(self, n):
        """`n` rows with all ten digits (the same rows and PCA features as the binary set).

        Returns
        -------
        X : ndarray of shape (n, 50)
        digits : ndarray of shape (n,)
        source : str
        """
        if n not in self._multi:
            X, y, source = mnist_features(self.data_dir, n=n)
            self.sources.add(source)
            digits = mnist_digits(self.data_dir, n)
            assert len(np.unique(digits)) == 10
            self._multi[n] = (X, digits, source)
        return self._multi[n]


@pytest.fixture(scope="session")
def workloads(request):
    return request.config.stash.setdefault(_WORKLOADS_KEY, Workloads())


# ------------------------------------------------------------ results table


@dataclass
class Comparison:
    """A ratio of two medians, each divided by a count (per-event costs)."""

    label: str
    numerator: str
    denominator: str
    target: str | None = None  # ">= 10", "<= 2", or None (reported only)
    num_scale: float = 1.0
    den_scale: float = 1.0

    def value(self, times):
        """The ratio of two entries of `times` (medians, or minima), or None."""
        if self.numerator not in times or self.denominator not in times:
            return None
        num = times[self.numerator] / self.num_scale
        den = times[self.denominator] / self.den_scale
        return num / den if den > 0 else math.inf

    def met(self, value):
        if self.target is None:
            return None
        op, bound = self.target.split()
        return value >= float(bound) if op == ">=" else value <= float(bound)


class Results:
    """Medians of this run, and the comparisons between them."""

    def __init__(self):
        self.medians = {}
        self.minima = {}
        self.rounds = {}
        self.notes = {}
        self.comparisons = {}
        self.slopes = {}  # curve -> {n: key of its median}

    def track_slope(self, curve, n, key):
        """Add the median stored under `key` to `curve` at size `n` (log-log slope)."""
        self.slopes.setdefault(curve, {})[n] = key

    def slope_values(self):
        """Least-squares slope of log median against log n, per curve with two sizes or more."""
        out = {}
        for curve, points in self.slopes.items():
            pts = [(n, self.medians[k]) for n, k in sorted(points.items()) if k in self.medians]
            if len(pts) >= 2:
                ns, ts = zip(*pts)
                out[curve] = (float(np.polyfit(np.log(ns), np.log(ts), 1)[0]), ns)
        return out

    def record(self, benchmark, key, *, compare=(), note="", **extra):
        """Store the median of `benchmark` under `key`; register comparisons.

        Parameters
        ----------
        benchmark : pytest-benchmark fixture, after its run
        key : str
            Name of the measurement in the summary table.
        compare : iterable of Comparison
            Ratios involving this measurement; their values go into
            ``benchmark.extra_info`` when both medians are known already and
            into the summary in any case.
        note : str
            Shown beside the median in the summary (path steps, say).
        **extra
            More ``extra_info`` entries.
        """
        benchmark.extra_info.update(extra)
        stats = benchmark.stats
        if not stats:  # --benchmark-disable: nothing was timed
            return None
        self.medians[key] = stats["median"]
        self.minima[key] = stats["min"]
        self.rounds[key] = stats["rounds"]
        self.notes[key] = note
        benchmark.extra_info["median_s"] = stats["median"]
        for comp in compare:
            self.comparisons[comp.label] = comp
        for comp in self.comparisons.values():
            if key in (comp.numerator, comp.denominator):
                v = comp.value(self.medians)
                if v is not None:
                    benchmark.extra_info[comp.label] = v
                    if comp.target is not None:
                        benchmark.extra_info[comp.label + " target"] = comp.target
        return stats["median"]

    def record_times(self, key, times):
        """Store the median and minimum of times measured by hand (seconds)."""
        if times:
            self.medians[key] = float(np.median(times))
            self.minima[key] = float(np.min(times))
            self.rounds[key] = len(times)
            self.notes[key] = "timed between the rounds of another benchmark"


@pytest.fixture(scope="session")
def bench():
    """The constants and helpers of this file, for the benchmark modules.

    (``from conftest import ...`` would pick whichever conftest pytest loaded
    last when ``tests/`` and ``benchmarks/`` are collected together.)
    """
    return SimpleNamespace(
        C=C, KKT_TOL=KKT_TOL, SVC_TOL=SVC_TOL, REFERENCE_TOL=REFERENCE_TOL,
        DEFAULT_SVC_TOL=DEFAULT_SVC_TOL, Comparison=Comparison, refit_svc=refit_svc,
        check_against_refits=check_against_refits, refit_frozen=refit_frozen,
        scale_gamma=scale_gamma)


@pytest.fixture(scope="session")
def results(request):
    return request.config.stash.setdefault(_RESULTS_KEY, Results())


def _fmt_time(seconds):
    if seconds >= 1.0:
        return f"{seconds:9.3f} s "
    if seconds >= 1e-3:
        return f"{seconds * 1e3:9.3f} ms"
    return f"{seconds * 1e6:9.1f} us"


def _describe_setup():
    path, origin = mnist_dir()
    data = (f"MNIST from {path} ({origin})" if path is not None
            else "synthetic fallback data (set ECO_MNIST_DIR for MNIST)")
    threads = blas_threads()
    return f"{data}; BLAS threads: {threads if threads is not None else 'library default'}"


def pytest_report_header(config):
    return f"eco benchmarks: {_describe_setup()}"


def pytest_sessionstart(session):
    # what else the machine does from here to the summary (is the run quiet?);
    # Ray's workers are other processes, so a Ray suite counts its own work there
    session.config.stash[_LOAD_KEY] = machine_load.MachineLoad()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    res = config.stash.get(_RESULTS_KEY, None)
    if res is None or not res.medians:
        return
    tr = terminalreporter
    tr.section("eco benchmark summary (medians of this run)")
    wl = config.stash.get(_WORKLOADS_KEY, None)
    used = ", ".join(sorted(wl.sources)) if wl is not None and wl.sources else "none"
    tr.write_line(f"data source used: {used}; {_describe_setup()}")
    load = config.stash.get(_LOAD_KEY, None)
    if load is not None:
        tr.write_line(machine_load.sentence(load.result()))
    width = max(len(k) for k in res.medians)
    for key, median in res.medians.items():
        note = f"  {res.notes[key]}" if res.notes.get(key) else ""
        tr.write_line(f"  {key:<{width}}  {_fmt_time(median)}  ({res.rounds[key]:>3} rounds){note}")
    rows = [(c, c.value(res.medians), c.value(res.minima)) for c in res.comparisons.values()]
    rows = [row for row in rows if row[1] is not None]
    if rows:
        tr.write_line("")
        tr.write_line("ratios of the medians (of the minima, less sensitive to other load, "
                      "in brackets); targets are reported, not asserted:")
        width = max(len(c.label) for c, _, _ in rows)
        for comp, v, v_min in rows:
            met = comp.met(v)
            verdict = "" if met is None else ("met" if met else "MISSED")
            target = "" if comp.target is None else f"target {comp.target}"
            tr.write_line(f"  {comp.label:<{width}}  {v:10.2f} [{v_min:10.2f}]  "
                          f"{target:<16} {verdict}".rstrip())
    slopes = res.slope_values()
    if slopes:
        tr.write_line("")
        tr.write_line("slopes of the medians on log-log axes (time ~ n^slope):")
        width = max(len(c) for c in slopes)
        for curve, (s, ns) in slopes.items():
            tr.write_line(f"  {curve:<{width}}  {s:6.2f}  (n = {', '.join(map(str, ns))})")
