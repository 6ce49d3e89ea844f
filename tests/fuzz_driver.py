"""Random scenarios for tests/test_fuzz.py, run in a subprocess.

    python fuzz_driver.py api SEED COUNT
    python fuzz_driver.py engine SEED COUNT

``api``: small awkward data sets and random sequences of every public
method of :class:`eco.CPSVM`; an exception that is not one of eco's (or
scikit-learn's ``NotFittedError`` after an un-fitting ``set_params``) is a
failure. ``engine``: random call sequences on the Python-visible API of
:mod:`eco._cp_core` (kernel store and engines), valid and invalid; any
Python exception is acceptable, a crash or a hang is not.

Each scenario prints its seed first, so that the parent reports the one that
crashed or hung. Exit status 0: every scenario ended; 3: an unexpected
exception (printed).
"""

import io
import os
import sys
import tempfile
import traceback
import warnings

import numpy as np
from sklearn.exceptions import NotFittedError

import eco
from eco import CPSVM, _cp_core
from eco.exceptions import EcoError

EXPECTED = (EcoError, NotFittedError)


def _data(rng):
    n = int(rng.integers(2, 16))
    d = int(rng.integers(1, 4))
    X = rng.normal(size=(n, d)) * 10.0 ** rng.integers(-3, 4)
    if rng.random() < 0.3:
        X = np.round(X)  # ties and duplicate rows
    n_classes = int(rng.choice([2, 2, 3]))
    y = rng.integers(0, n_classes, size=n)
    y[:n_classes] = np.arange(n_classes)[:min(n, n_classes)]
    return X, y


def _params(rng):
    kernel = str(rng.choice(["rbf", "linear", "poly", "precomputed"]))
    params = {"kernel": kernel, "C": float(10.0 ** rng.uniform(-2, 3))}
    if kernel in ("rbf", "poly"):
        params["gamma"] = str(rng.choice(["scale", "auto"])) if rng.random() < 0.5 \
            else float(10.0 ** rng.uniform(-2, 1))
    if kernel == "poly":
        params["degree"] = int(rng.integers(1, 5))
        params["coef0"] = float(rng.uniform(-1, 1))
    params["n_jobs"] = None if rng.random() < 0.5 else 2
    return params


def _gram(A, B, params):
    # the scenarios' own kernel for "precomputed" (a positive semi-definite one)
    return (A @ B.T + 1.0) ** 2 / 100.0


def api_scenario(rng, folder):
    X, y = _data(rng)
    params = _params(rng)
    pre = params["kernel"] == "precomputed"
    m = CPSVM(**params)
    rows = list(range(len(y)))  # rows given so far (for precomputed kernel rows)
    pool_X = rng.normal(size=(20, X.shape[1])) * np.std(X)
    pool_y = rng.integers(0, len(np.unique(y)), size=20)
    fit_X = _gram(X, X, params) if pre else X
    try:
        m.fit(fit_X, y, sample_weight=rng.uniform(0, 3, len(y)) if rng.random() < 0.3 else None)
    except EXPECTED:
        return
    given = X.copy()
    for _ in range(int(rng.integers(3, 12))):
        op = str(rng.choice(["inc", "dec", "dec_bad", "predict", "verify", "save", "loo",
                             "set", "pickle", "kkt", "score"]))
        try:
            if not hasattr(m, "classes_"):  # un-fitted by set_params: fit again
                given = X.copy()
                m.fit(fit_X, y)
            if op == "inc":
                k = int(rng.integers(1, 4))
                new = pool_X[rng.integers(0, 20, k)]
                lab = m.classes_[rng.integers(0, len(m.classes_), k)]
                if pre:
                    all_rows = np.vstack([given, new])
                    m.increment(_gram(new, all_rows, params), lab)
                else:
                    m.increment(new, lab)
                given = np.vstack([given, new])
            elif op == "dec":
                ids = m.ids_
                if len(ids):
                    pick = rng.choice(len(ids), size=int(rng.integers(1, len(ids) + 1)),
                                      replace=False)
                    m.decrement(ids[pick].tolist(), batch=bool(rng.random() < 0.5),
                                audit=bool(rng.random() < 0.5))
            elif op == "dec_bad":
                bads = [10 ** 6, -1, 3.0, True, "x", (1, 2), 2 ** 70, float("nan")]
                m.decrement([bads[int(rng.integers(0, len(bads)))]])
            elif op == "predict":
                Z = _gram(pool_X[:5], given, params) if pre else pool_X[:5]
                m.predict(Z)
                m.decision_function(Z)
            elif op == "verify":
                m.verify(reference=bool(rng.random() < 0.3))
            elif op == "save":
                path = os.path.join(folder, "m.eco")
                m.save(path)
                eco.load(path)
            elif op == "loo":
                m.loo_decision()
            elif op == "set":
                m.set_params(**{str(rng.choice(["n_jobs", "C", "max_steps"])):
                                rng.choice([None, 2, 5])})
            elif op == "pickle":
                import pickle
                pickle.loads(pickle.dumps(m))
            elif op == "kkt":
                m.kkt_violation()
                m.state_digest()
            elif op == "score":
                Z = _gram(given, given, params) if pre else given
                if len(Z):
                    m.score(Z, m.classes_[np.zeros(len(Z), dtype=int)])
        except EXPECTED:
            pass


def engine_scenario(rng):
    d = int(rng.integers(0, 3))
    kernel = str(rng.choice(["rbf", "linear", "poly", "precomputed"]))
    store = _cp_core.KernelStore(d, kernel, 0.5, 2, 1.0, bool(rng.random() < 0.5))
    engines = [_cp_core.CPEngine(store, int(rng.integers(0, 50)))
               for _ in range(int(rng.integers(1, 3)))]
    for _ in range(int(rng.integers(5, 40))):
        n = store.n_slots
        e = engines[int(rng.integers(0, len(engines)))]
        slot = int(rng.integers(-2, n + 3))
        slots = rng.integers(-1, n + 2, size=int(rng.integers(0, 4))).astype(np.intp)
        op = int(rng.integers(0, 21))
        try:
            if op == 0:
                m = int(rng.integers(0, 4))
                cols = n + m if kernel == "precomputed" else max(d, 0)
                if rng.random() < 0.1:
                    cols += 1
                A = rng.normal(size=(m, cols))
                if kernel == "precomputed":
                    A = np.abs(A)
                store.append(np.ascontiguousarray(A))
            elif op == 1:
                store.truncate(int(rng.integers(-1, n + 2)))
            elif op == 2:
                store.ensure_rows(slots)
            elif op == 3:
                store.release_rows(slots)
            elif op == 4:
                store.get_row(slot)
                store.kernel_block(slots)
                store.features_of(slots)
            elif op in (5, 6, 7):
                e.learn(slot, float(rng.choice([1.0, -1.0, 0.0])), float(rng.choice([1.0, 0.0, -1.0, np.inf])))
            elif op == 8:
                e.unlearn(slots)
            elif op == 9:
                e.restore(e.get_state())
            elif op == 10:
                st = e.get_state()
                key = str(rng.choice(["alpha", "sets", "margin_order", "y", "C", "g"]))
                arr = np.array(st[key])
                if arr.size:
                    arr[int(rng.integers(0, arr.size))] = rng.choice([-5, 3, 7, 4, np.nan])
                st[key] = arr
                e.restore(st)
            elif op == 11:
                sets = rng.integers(-1, 3, size=n + int(rng.integers(-1, 2))).astype(np.int8)
                y = rng.choice([1.0, -1.0], size=n)
                e.polish(y, np.ones(n), sets)
            elif op == 12:
                e.finish()
                e.refactorise()
            elif op == 13:
                e.recompute_gradients()
                e.drift()
            elif op == 14:
                e.alpha_of(slots)
                e.decision_of(slot)
                e.set_of(slot)
            elif op == 15:
                _cp_core.all_reserve(engines, slots)
                _cp_core.drop_reserve(engines, slots)
            elif op == 16:
                A = rng.normal(size=(int(rng.integers(0, 3)), max(d, 1)))
                _cp_core.kernel_matrix(A, A, str(rng.choice(["rbf", "linear", "poly", "bad"])),
                                       0.5, 2, 1.0)
            elif op == 17:
                e.sync_capacity()
                e.get_state()
                e.rinv()
            elif op == 18:
                e.certificate()
            elif op == 19:
                sets = rng.integers(-1, 3, size=n).astype(np.int8)
                y = rng.choice([1.0, -1.0], size=n)
                e.settle(y, np.ones(n), rng.uniform(0, 1, n), float(rng.normal()), sets)
            elif op == 20:
                e.path_step_for_tests(slots, rng.normal(size=len(slots)), bool(rng.random() < 0.5),
                                      str(rng.choice(["direction", "rates", "event", "apply",
                                                      "migrate"])))
        except Exception:  # noqa: BLE001 - any Python exception is an acceptable refusal
            pass


def main():
    kind, seed, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        for k in range(count):
            scenario_seed = seed * 100_000 + k
            print(f"scenario {scenario_seed}", flush=True)
            rng = np.random.default_rng(scenario_seed)
            try:
                if kind == "api":
                    api_scenario(rng, folder)
                else:
                    engine_scenario(rng)
            except Exception:  # noqa: BLE001 - reported to the parent
                buf = io.StringIO()
                traceback.print_exc(file=buf)
                print(f"UNEXPECTED in scenario {scenario_seed}:\n{buf.getvalue()}", flush=True)
                sys.exit(3)
    print("all scenarios ended", flush=True)


if __name__ == "__main__":
    main()
