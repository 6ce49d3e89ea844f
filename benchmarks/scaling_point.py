"""One point (data set, n) of the scaling benchmark: data, fitted model, checks, timed calls.

Shared by ``scaling.py`` (the sweep script, one subprocess per point) and
``test_bench_scaling.py`` (pytest-benchmark). Public eco API only: a model is
restored between rounds with ``copy.deepcopy`` of the fitted one.

Every timed call is checked first, once:

- a fitted or unlearned model meets the KKT certificate (below ``KKT_TOL``)
  and its decision values on its training rows equal those of the same
  estimator fitted from scratch on those rows (hyper-parameters frozen)
  within ``REFIT_TOL``; the receipt says the CP path served the request;
- the default-tolerance SVC (fit and refit) agrees within ``SVC_DEFAULT_TOL``;
- the plain NumPy path ends in eco's sets with the same number of
  migrations and the same decision values within ``NUMPY_TOL``.
"""

import copy
import gc
import os
import time

import numpy as np
from sklearn.svm import SVC

from eco import CPSVM
from eco.testing import refit_frozen
from eco.receipt import PATH_RESERVE_DROP, PATH_STEPS

import numpy_cp
from workloads import MNIST_ROWS, gaussian_mixture, mnist_dir, mnist_features

C = 1.0
KKT_TOL = 1e-8
#: Decision values against the same estimator refitted from scratch.
REFIT_TOL = 1e-9
#: Decision values of a default SVC (libsvm tol=1e-3) against the exact solution.
SVC_DEFAULT_TOL = 1e-2
#: The plain NumPy path against eco.
NUMPY_TOL = 1e-9
#: Size of the batch request.
BATCH = 50
KINDS = ("reserve", "margin", "error")
DATASETS = ("mixture", "mnist")
#: Sizes of the sweep; those above ECO_BENCH_MAX_N (default 20000) are skipped.
SIZES = {"mixture": (5_000, 10_000, 20_000, 50_000, 100_000),
         "mnist": (5_000, 10_000)}
DEFAULT_MAX_N = 20_000
#: The NumPy yardstick holds the kernel rows of the margin set (|S| x n floats):
#: only up to this n (ECO_BENCH_NUMPY_MAX_N).
DEFAULT_NUMPY_MAX_N = 20_000


def max_n():
    return int(os.environ.get("ECO_BENCH_MAX_N", DEFAULT_MAX_N))


def numpy_max_n():
    return int(os.environ.get("ECO_BENCH_NUMPY_MAX_N", DEFAULT_NUMPY_MAX_N))


def sweep_points():
    """(data set, n) pairs of the sweep at the current ``ECO_BENCH_MAX_N``."""
    return [(d, n) for d in DATASETS for n in SIZES[d] if n <= max_n()]


def load_data(dataset, n):
    """(X, y, source) of a point."""
    if dataset == "mixture":
        X, y = gaussian_mixture(n)
        return X, y, "gaussian mixture, 64 dims"
    if dataset == "mnist":
        if n > MNIST_ROWS:
            raise ValueError(f"the MNIST test set has {MNIST_ROWS} rows, not {n}")
        X, y, source = mnist_features(mnist_dir()[0], n=n)
        return X, y, f"{source} test set, PCA-50, digit 0 vs rest"
    raise ValueError(f"unknown data set {dataset!r}")


def time_calls(fn, setup=None, rounds=5):
    """Wall times of `rounds` calls of ``fn(*setup())`` (setup untimed).

    Garbage is collected before each call (untimed): the copies a setup
    makes are not the timed call's to collect.
    """
    times = []
    for _ in range(rounds):
        args = setup() if setup is not None else ()
        gc.collect()
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return times


class Point:
    """Data, fitted model and cached checks of one (data set, n)."""

    def __init__(self, dataset, n):
        self.dataset, self.n = dataset, n
        self.X, self.y, self.source = load_data(dataset, n)
        self.gamma = 1.0 / (self.X.shape[1] * self.X.var())  # "scale", frozen
        self.model = self.fit()
        assert np.array_equal(self.model.ids_, np.arange(n))  # ids are row numbers
        self.digest = self.model.state_digest()
        self._checked = {}

    # ---------------------------------------------------------- the calls

    def fit(self):
        return CPSVM(C=C, kernel="rbf", gamma=self.gamma).fit(self.X, self.y)

    def svc_fit(self, X=None, y=None):
        X = self.X if X is None else X
        y = self.y if y is None else y
        return SVC(C=C, kernel="rbf", gamma=self.gamma).fit(X, y)

    def fresh(self):
        return copy.deepcopy(self.model)

    def example(self, kind):
        """One id of the fitted model's `kind` set (fixed seed)."""
        ids = np.asarray(getattr(self.model, f"{kind}_"))
        assert len(ids) > 0, f"no {kind} vector at n={self.n}"
        return [int(np.random.default_rng(0).choice(ids))]

    def batch(self):
        """`BATCH` ids drawn (fixed seed) from all examples."""
        return [int(i) for i in np.random.default_rng(1).choice(self.n, BATCH, replace=False)]

    def remaining(self, ids):
        keep = np.ones(self.n, dtype=bool)
        keep[ids] = False
        return self.X[keep], self.y[keep]

    def stream(self, kind, rounds):
        """Successive removals from one warm model: `rounds` requests of `kind`.

        Each request removes one id drawn (fixed seed) from the current
        model's `kind` set, the way a server meets a stream of deletions:
        the kernel rows earlier requests computed are cached. Returns the
        wall time and the set migrations of each request (garbage collected
        before each, untimed) after checking the end state against the same estimator refitted on
        the rows left (and every receipt: the CP path served it).
        """
        model = self.fresh()
        rng = np.random.default_rng(3)
        times, migrations, gone = [], [], []
        for _ in range(rounds):
            pool = np.asarray(getattr(model, f"{kind}_"))
            assert len(pool) > 0, f"no {kind} vector left"
            i = int(rng.choice(pool))
            gc.collect()
            t0 = time.perf_counter()
            receipt = model.decrement(i)
            times.append(time.perf_counter() - t0)
            assert receipt.paths[i] in (PATH_RESERVE_DROP, PATH_STEPS), receipt.paths
            assert receipt.resolved_heads == ()
            migrations.append(receipt.n_migrations)
            gone.append(i)
        assert model.kkt_violation() < KKT_TOL
        Xr, yr = self.remaining(gone)
        err = np.max(np.abs(model.decision_function(Xr)
                            - refit_frozen(model, Xr, yr).decision_function(Xr)))
        assert err < REFIT_TOL, f"the stream's model differs from the refit by {err:.2e}"
        return times, migrations

    # ---------------------------------------------------------- the checks

    def check_fit(self):
        """The fitted model is exact and the default SVC solves the same problem."""
        if "fit" not in self._checked:
            assert self.model.kkt_violation() < KKT_TOL
            assert self.fit().state_digest() == self.digest  # deterministic
            f = self.model.decision_function(self.X)
            err = np.max(np.abs(self.svc_fit().decision_function(self.X) - f))
            assert err < SVC_DEFAULT_TOL, f"SVC.fit differs by {err:.2e}"
            self._checked["fit"] = f
        return self._checked["fit"]

    def check_removal(self, ids, kind):
        """Unlearn `ids` with the default call on a copy; check it against a refit.

        Returns the digest of the unlearned model, its receipt and its
        decision values on the remaining rows (cached per ids).
        """
        key = tuple(ids)
        if key not in self._checked:
            model = self.fresh()
            receipt = model.decrement(ids if len(ids) > 1 else ids[0])
            expected = PATH_RESERVE_DROP if kind == "reserve" else PATH_STEPS
            if kind != "batch":
                assert receipt.paths[ids[0]] == expected, receipt.paths
            # every id was served by a reserve drop or the CP path, none by a re-solve
            assert set(receipt.paths.values()) <= {PATH_RESERVE_DROP, PATH_STEPS}, receipt.paths
            assert receipt.resolved_heads == ()
            assert model.kkt_violation() < KKT_TOL
            Xr, yr = self.remaining(ids)
            f = model.decision_function(Xr)
            f_ref = refit_frozen(model, Xr, yr).decision_function(Xr)
            err = np.max(np.abs(f - f_ref))
            assert err < REFIT_TOL, f"unlearned model differs from the refit by {err:.2e}"
            err = np.max(np.abs(self.svc_fit(Xr, yr).decision_function(Xr) - f))
            assert err < SVC_DEFAULT_TOL, f"SVC refit differs by {err:.2e}"
            # the model itself only where the NumPy yardstick reads it: at 100k
            # rows each checked model holds gigabytes
            self._checked[key] = {"digest": model.state_digest(), "receipt": receipt, "f": f,
                                  "model": model if self.n <= numpy_max_n() else None}
        return self._checked[key]

    def numpy_state(self, ids):
        """A NumPy CP state of the fitted model, checked against eco on `ids` once."""
        state = numpy_cp.NumpyCP.from_model(self.model, self.X, self.y)
        key = ("numpy",) + tuple(ids)
        if key not in self._checked:
            probe = copy.deepcopy(state)
            probe.unlearn(ids[0])
            eco_done = self.check_removal(ids, "one")
            model, receipt = eco_done["model"], eco_done["receipt"]
            margin, error, _ = probe.set_ids()
            assert np.array_equal(margin, np.sort(model.margin_)), "numpy: other margin set"
            assert np.array_equal(error, np.sort(model.error_)), "numpy: other error set"
            assert probe.n_migrations == receipt.n_migrations, \
                f"numpy: {probe.n_migrations} migrations, eco {receipt.n_migrations}"
            Xr, _ = self.remaining(ids)
            err = np.max(np.abs(probe.decision(Xr) - eco_done["f"]))
            assert err < NUMPY_TOL, f"numpy path differs from eco by {err:.2e}"
            self._checked[key] = True
        return state

    def margin_rows(self):
        """Kernel rows of the fitted margin set (|S|, n) and a vector: the matvec yardstick."""
        S = np.sort(np.asarray(self.model.margin_))
        K_S = numpy_cp.rbf_rows(self.X, S, self.gamma)
        v = np.random.default_rng(2).standard_normal(len(S))
        return K_S, v
