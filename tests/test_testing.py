"""eco.testing: the frozen refit, the exactness assertion and the fault injection points."""

import numpy as np
import pytest

from eco import CPSVM
from eco.testing import (
    InjectedFault,
    active_data,
    assert_exact,
    fail_on_call,
    frozen_params,
    path_fault,
    refit_frozen,
)
from exact_helpers import noisy_classes


def _model(**params):
    X, y = noisy_classes(n=70, n_classes=3, d=4, noise=0.7, seed=21)
    sw = np.linspace(0.5, 2.0, len(y))
    params.setdefault("gamma", 0.3)  # numeric: updates run the heads' paths
    m = CPSVM(**params).fit(X[:60], y[:60], sample_weight=sw[:60])
    m.increment(X[60:], y[60:], sample_weight=sw[60:])
    m.decrement([1, 4, 9, 62])
    return m, X, y, sw


def test_frozen_params_resolve_gamma_and_class_weight():
    m, *_ = _model(class_weight="balanced")
    p = frozen_params(m)
    assert p["gamma"] == m.gamma_ and isinstance(p["gamma"], float)
    assert p["class_weight"] == dict(zip(m.classes_.tolist(), m.class_weight_.tolist()))


@pytest.mark.parametrize("own_rows", [True, False])
def test_refit_frozen_equals_the_updated_model(own_rows):
    m, X, y, sw = _model(class_weight="balanced", C=2.0)
    if own_rows:
        refit = refit_frozen(m)
    else:
        ids = np.asarray(m.ids_)
        refit = refit_frozen(m, X[ids], y[ids], sample_weight=sw[ids])
    assert np.array_equal(refit.ids_, m.ids_)
    assert np.max(np.abs(refit.decision_function(X) - m.decision_function(X))) < 1e-9
    # the same problem: same bounds for every active example
    assert np.allclose(active_data(refit)[2], active_data(m)[2], rtol=1e-15, atol=0)


def test_assert_exact_passes_an_exact_model_and_catches_a_moved_one():
    m, X, *_ = _model()
    assert_exact(m, X)
    heads = m.head_set_
    st = heads.head_state(0)
    st.alpha[int(st.margin_order[0])] *= 0.9  # off the path: no longer the SVM of its rows
    heads.restore_head(0, st)
    with pytest.raises(AssertionError, match="KKT violation"):
        assert_exact(m, X)


def test_fail_on_call_fires_at_the_kth_call_and_restores_the_method():
    m, *_ = _model()
    before = m.state_digest()
    with fail_on_call(m, "unlearn_head", 2) as calls:
        with pytest.raises(InjectedFault):
            m.decrement(list(m.support_ids_[:3]))
    assert len(calls) == 2
    assert m.state_digest() == before
    assert "unlearn_head" not in vars(m.head_set_)
    m.decrement(list(m.support_ids_[:3]))  # works again once the block is left


def test_path_fault_sends_a_head_to_its_exact_resolve():
    m, X, *_ = _model()
    support = [i for i in m.margin_[0][:2]]
    with path_fault(m, 0, 0):
        r = m.decrement(support)
    assert 0 in r.resolved_heads
    assert m.head_set_.engine(0).fail_at_step == -1
    assert_exact(m, X)
