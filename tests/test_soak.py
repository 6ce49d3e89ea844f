"""Soak test: long random sequences of updates, the certificate after every one.

A seeded rule-based loop draws operations (fit, increment, decrement one id,
batch decrement, sequential decrement, save and load) on a pool of examples.
After every operation the KKT certificate, recomputed from scratch, must hold;
receipts must match the model; a loaded model must have the digest of the
saved one. Every ``CHECK_EVERY`` operations, and at the end, the model must
equal the SVM trained from scratch on its active examples.

The default run is short; set ``ECO_SOAK_OPS`` (operations per scenario) for a
long one, e.g. ``ECO_SOAK_OPS=2000 pytest tests/test_soak.py``.
"""

import os

import numpy as np
import pytest

import eco
from eco import CPSVM
from eco.reference import reference_kernel, reference_solve

N_OPS = int(os.environ.get("ECO_SOAK_OPS", "200"))
CHECK_EVERY = 100
POOL = 300
KKT_TOL = 1e-8
REF_TOL = 1e-8

SCENARIOS = {
    "rbf-binary": dict(n_classes=2, params=dict(C=2.0, gamma=0.3)),
    "rbf-3-classes": dict(n_classes=3, params=dict(C=1.0, gamma=0.3, class_weight="balanced")),
    "poly-binary-weights": dict(n_classes=2, params=dict(C=5.0, kernel="poly", degree=3,
                                                         coef0=1.0, gamma=0.2), weights=True),
    "precomputed-4-classes": dict(n_classes=4, params=dict(C=1.0, kernel="precomputed")),
}


class Soak:
    """The pool, the model and the bookkeeping of one scenario."""

    def __init__(self, name, seed, tmp_path):
        spec = SCENARIOS[name]
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.X = rng.normal(size=(POOL, 5))
        k = spec["n_classes"]
        if k == 2:
            self.y = (self.X[:, 0] * self.X[:, 1] + 0.4 * rng.normal(size=POOL) > 0).astype(int)
        else:
            self.y = np.argmax(self.X[:, :k] + 0.6 * rng.normal(size=(POOL, k)), axis=1)
        self.sw = rng.uniform(0.3, 2.0, size=POOL) if spec.get("weights") else None
        self.params = spec["params"]
        self.precomputed = self.params.get("kernel") == "precomputed"
        self.K = reference_kernel(self.X, self.X, "rbf", 0.4, 3, 0.0) if self.precomputed else None
        self.path = tmp_path / f"{name}.eco"
        self.log = []
        self.model = None

    # ------------------------------------------------------------ helpers

    def _rows(self, rows, given=None):
        """Training input of pool rows: features, or kernel rows against `given`."""
        if not self.precomputed:
            return self.X[rows]
        return self.K[np.ix_(rows, rows if given is None else given)]

    def _sw(self, rows):
        return None if self.sw is None else self.sw[rows]

    def active(self):
        return np.asarray(self.model.ids_, dtype=np.int64)

    def inactive(self):
        return np.setdiff1d(np.arange(POOL), self.active())

    def classes_ok(self, rows):
        return len(np.unique(self.y[rows])) == len(np.unique(self.y))

    # --------------------------------------------------------- operations

    def fit(self):
        n = int(self.rng.integers(40, 120))
        rows = self.rng.choice(POOL, n, replace=False)
        while not self.classes_ok(rows):
            rows = self.rng.choice(POOL, n, replace=False)
        self.model = CPSVM(**self.params).fit(self._rows(rows), self.y[rows],
                                              sample_weight=self._sw(rows), ids=rows.tolist())
        return f"fit n={n}"

    def increment(self):
        free = self.inactive()
        if len(free) == 0 or self.model.n_active_ > 160:
            return self.decrement_batch()
        rows = self.rng.choice(free, min(len(free), int(self.rng.integers(1, 6))), replace=False)
        given = np.asarray(self.model.head_set_.slot_ids, dtype=np.int64)  # pool row of every slot
        Xn = self._rows(rows, np.concatenate([given, rows])) if self.precomputed \
            else self._rows(rows)
        before = self.model.state_digest()
        ids = self.model.increment(Xn, self.y[rows], ids=rows.tolist(),
                                   sample_weight=self._sw(rows))
        assert ids.tolist() == rows.tolist()
        assert self.model.state_digest() != before
        return f"increment {rows.tolist()}"

    def _decrement(self, k, batch):
        act = self.active()
        if len(act) <= 20:
            return self.increment()
        rows = self.rng.choice(act, k, replace=False)
        before = self.model.state_digest()
        r = self.model.decrement(rows.tolist(), batch=batch, audit=True)
        assert r.digest_before == before != r.digest_after == self.model.state_digest()
        assert r.kkt_violation == self.model.kkt_violation()
        assert set(r.paths) == set(rows.tolist())
        return f"decrement {rows.tolist()} batch={batch} paths={sorted(set(r.paths.values()))}"

    def decrement_one(self):
        return self._decrement(1, True)

    def decrement_batch(self):
        return self._decrement(int(self.rng.integers(2, 8)), True)

    def decrement_sequential(self):
        return self._decrement(int(self.rng.integers(2, 5)), False)

    def save_load(self):
        before = self.model.state_digest()
        self.model.save(self.path)
        self.model = eco.load(self.path)
        assert self.model.state_digest() == before
        return "save/load"

    OPS = (("increment", 30), ("decrement_one", 20), ("decrement_batch", 20),
           ("decrement_sequential", 15), ("save_load", 10), ("fit", 2))

    def step(self):
        names = [o for o, _ in self.OPS]
        p = np.array([w for _, w in self.OPS], dtype=float)
        op = names[self.rng.choice(len(names), p=p / p.sum())]
        self.log.append(getattr(self, op)())

    # ------------------------------------------------------------- checks

    def check_certificate(self):
        kkt = self.model.kkt_violation()
        assert kkt < KKT_TOL, f"KKT {kkt:.3g} after {self.log[-3:]}"

    def check_scratch(self):
        """The model equals the SVM trained from scratch on its active rows."""
        m = self.model
        rows = self.active()
        if self.precomputed:
            Ka = self.K[np.ix_(rows, rows)]
            f_model = m.decision_function(self.K[np.ix_(rows, np.asarray(m.head_set_.slot_ids, int))])
        else:
            Ka = reference_kernel(self.X[rows], self.X[rows], m.kernel, m.gamma_, m.degree,
                                  m.coef0)
            f_model = m.decision_function(self.X[rows])
        f_model = f_model.reshape(len(rows), -1)
        C = m.head_set_.slot_C[m.head_set_.active_slots()]
        for h in range(f_model.shape[1]):
            pos = m.classes_[1] if f_model.shape[1] == 1 else m.classes_[h]
            yh = np.where(self.y[rows] == pos, 1.0, -1.0)
            sol = reference_solve(Ka, yh, C)
            diff = np.max(np.abs(f_model[:, h] - sol.decision(Ka, yh)))
            assert diff < REF_TOL, f"head {h}: off the reference by {diff:.3g}; {self.log[-3:]}"
        if not self.classes_ok(rows):
            return  # a class left entirely: CPSVM.fit would see fewer classes
        # and CPSVM itself, fitted from scratch with the frozen hyper-parameters
        params = dict(self.params, gamma=m.gamma_,
                      class_weight=dict(zip(m.classes_.tolist(), m.class_weight_.tolist())))
        fresh = CPSVM(**params).fit(Ka if self.precomputed else self.X[rows], self.y[rows],
                                    sample_weight=self._sw(rows))
        f_fresh = fresh.decision_function(Ka if self.precomputed else self.X[rows])
        assert np.max(np.abs(f_fresh.reshape(f_model.shape) - f_model)) < REF_TOL


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_soak(name, tmp_path):
    soak = Soak(name, seed=sorted(SCENARIOS).index(name), tmp_path=tmp_path)
    soak.log.append(soak.fit())
    soak.check_certificate()
    for i in range(N_OPS):
        soak.step()
        soak.check_certificate()
        if (i + 1) % CHECK_EVERY == 0:
            soak.check_scratch()
    soak.check_scratch()
    assert len(soak.log) == N_OPS + 1
