"""The auditor's view: verify_model reports and unlearning receipts."""

import json

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from eco import CPSVM, UnlearningReceipt
from eco.audit import VerificationReport, verify_model
from eco.reference import reference_kernel
from exact_helpers import noisy_classes


def _data(n=80, n_classes=2, d=4, seed=0):
    return noisy_classes(n=n, n_classes=n_classes, d=d, noise=0.7, seed=seed)


def _models():
    X, y = _data()
    yield "binary", CPSVM(C=2.0).fit(X, y)
    X3, y3 = _data(n_classes=3, seed=1)
    m = CPSVM(C=1.0, kernel="poly", degree=3, coef0=1.0).fit(X3[:60], y3[:60])
    m.increment(X3[60:], y3[60:])
    m.decrement([0, 3, 61], batch=False)
    yield "multiclass_updated", m
    K = reference_kernel(X, X, "rbf", 0.3, 3, 0.0)
    m = CPSVM(C=5.0, kernel="precomputed").fit(K, y, sample_weight=np.linspace(0.1, 2, len(y)))
    m.decrement([1, 2, 30])
    yield "precomputed", m


@pytest.mark.parametrize("name, model", list(_models()))
def test_verify_exact_models(name, model):
    digest = model.state_digest()
    rep = model.verify()
    assert isinstance(rep, VerificationReport)
    assert rep.ok and rep.kkt_violation == model.kkt_violation() < 1e-8
    assert rep.max_decision_diff is None and rep.reference_kkt_violation is None
    assert rep.n_active == model.n_active_ and rep.n_heads == model.head_set_.n_heads
    assert rep.digest == digest
    full = verify_model(model, reference=True)
    assert full.ok and full.reference_polished
    assert full.max_decision_diff < 1e-9
    assert full.reference_kkt_violation < 1e-9
    assert model.state_digest() == digest  # the audit changed nothing


def test_report_serialises_to_json():
    _, model = next(_models())
    rep = model.verify(reference=True)
    d = json.loads(rep.to_json())
    assert d == rep.to_dict()
    assert set(d) == {"kkt_violation", "n_active", "n_heads", "digest", "max_decision_diff",
                      "reference_kkt_violation", "reference_polished", "tol", "tol_ref", "ok"}
    assert d["ok"] is True and d["digest"] == model.state_digest()


def test_certificate_catches_a_moved_coefficient():
    X, y = _data(seed=2)
    m = CPSVM(C=1.0).fit(X, y)
    heads = m.head_set_
    st = heads.head_state(0)
    k = int(st.margin_order[0])
    st.alpha[k] *= 0.9  # an off-path change: g and b not updated
    heads.restore_head(0, st)
    rep = m.verify(reference=True)
    assert not rep.ok
    assert rep.kkt_violation > 1e-4
    assert rep.max_decision_diff > 1e-4


def test_reference_catches_a_state_solved_for_other_bounds():
    """A self-consistent state of another problem passes KKT but not the reference."""
    X, y = _data(seed=3)
    m = CPSVM(C=1.0).fit(X, y)
    other = CPSVM(C=10.0).fit(X, y)
    # exact for C = 10, while the model's bounds say 1
    m.head_set_.restore_head(0, other.head_set_.head_state(0))
    rep = m.verify(reference=True)
    assert rep.kkt_violation < 1e-8
    assert rep.max_decision_diff > 1e-3
    assert not rep.ok


def test_tolerances_decide_ok():
    _, model = next(_models())
    rep = verify_model(model, reference=True, tol=0.0, tol_ref=1.0)
    assert rep.ok == (rep.kkt_violation == 0.0)
    assert verify_model(model, tol=1.0).ok


def test_one_class_left():
    X, y = _data(40, seed=4)
    m = CPSVM().fit(X, y)
    m.decrement(np.flatnonzero(y == 0).tolist())
    rep = m.verify(reference=True)
    assert rep.ok and rep.max_decision_diff == 0.0


def test_verify_before_fit():
    with pytest.raises(NotFittedError):
        CPSVM().verify()
    with pytest.raises(NotFittedError):
        verify_model(CPSVM(), reference=True)


# ------------------------------------------------------------------ receipts


def test_receipt_of_a_real_decrement():
    X, y = _data(n_classes=3, seed=5)
    # numeric gamma: "scale" would re-solve (path "resolve_gamma")
    m = CPSVM(C=1.0, gamma=0.3).fit(X, y, ids=[f"id{i}" for i in range(len(y))])
    support = [i for i in m.support_ids_.tolist()][:3]
    before = m.state_digest()
    r = m.decrement(support, batch=True, audit=True)
    assert isinstance(r, UnlearningReceipt)
    assert r.digest_before == before
    assert r.digest_before != r.digest_after
    assert r.digest_after == m.state_digest()
    assert r.kkt_violation == m.kkt_violation()  # the certificate, recomputed
    assert r.kkt_violation < 1e-8
    assert r.removed_ids == tuple(support)
    assert set(r.paths) == set(support) and set(r.paths.values()) <= {"path", "reserve_drop"}
    assert r.n_steps >= 1
    d = json.loads(r.to_json())
    assert d == r.to_dict()
    assert d["removed_ids"] == support
    assert d["paths"] == [[k, v] for k, v in r.paths.items()]
    assert d["digest_after"] == m.state_digest()


def test_receipt_of_a_reserve_drop_and_without_audit():
    X, y = _data(seed=6)
    m = CPSVM(C=1.0).fit(X, y)
    reserve = m.reserve_[:2].tolist()
    r = m.decrement(reserve, audit=True)
    assert r.paths == {i: "reserve_drop" for i in reserve}
    assert r.digest_before != r.digest_after == m.state_digest()
    assert json.loads(r.to_json())["removed_ids"] == reserve
    r = m.decrement([m.support_ids_[0]], audit=False)
    assert r.kkt_violation is None and r.digest_before is None and r.digest_after is None
    assert json.loads(r.to_json()) == r.to_dict()
    # the default call audits nothing: the certificate is on request
    r = m.decrement([m.support_ids_[0]])
    assert r.kkt_violation is None and r.digest_before is None and r.digest_after is None
    assert m.kkt_violation() < 1e-8


def test_receipt_with_numpy_ids_serialises():
    X, y = _data(seed=7)
    m = CPSVM().fit(X, y, ids=np.arange(100, 100 + len(y)))
    r = m.decrement(np.array([101, 102]))
    d = json.loads(r.to_json())
    assert d["removed_ids"] == [101, 102]
