import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.exceptions import NotFittedError  # noqa: E402

from eco.exceptions import InvalidInputError, UnknownIdError  # noqa: E402
from eco.nn import (  # noqa: E402
    MembershipInferenceAttack,
    NaiveRetraining,
    TrainingConfig,
    label_free_outputs,
    make_network,
    membership_rate,
    predict_proba,
    train_network,
)

pytestmark = pytest.mark.torch


def test_label_free_outputs():
    outputs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    np.testing.assert_array_equal(label_free_outputs(outputs), [[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    np.testing.assert_array_equal(label_free_outputs(np.array([-2.0, 1.0])), [[2.0, -2.0], [1.0, -1.0]])
    with pytest.raises(InvalidInputError):
        label_free_outputs(np.zeros((2, 2, 2)))
    with pytest.raises(InvalidInputError):
        MembershipInferenceAttack().fit(np.zeros((1, 3)), np.zeros((5, 3)))


def test_attack_calls_members_of_an_overfitted_model_members(digits):
    X, y = digits
    members, nonmembers = np.arange(0, 150), np.arange(900, 1200)
    net = make_network("digits", seed=0)
    # Many epochs on few examples: the network memorises its training set.
    train_network(net, X[members], y[members], TrainingConfig(epochs=40, lr=1e-2, seed=0))

    def outputs(ids):
        return predict_proba(net, X[ids])

    attack_members, held_members = members[::2], members[1::2]
    attack_nonmembers, held_nonmembers = nonmembers[:150], nonmembers[150:]
    attack = MembershipInferenceAttack(random_state=0).fit(outputs(attack_members), outputs(attack_nonmembers))
    assert attack.n_per_class_ == 75
    on_members = attack.membership_rate(outputs(held_members))
    on_nonmembers = attack.membership_rate(outputs(held_nonmembers))
    assert on_members > on_nonmembers + 0.2, (on_members, on_nonmembers)
    rates = membership_rate(outputs(attack_members), outputs(attack_nonmembers),
                            {"members": outputs(held_members), "nonmembers": outputs(held_nonmembers)})
    assert rates == {"members": on_members, "nonmembers": on_nonmembers}


def test_naive_retraining_equals_training_without_the_ids(digits):
    X, y = digits
    X, y = X[:200], y[:200]
    config = TrainingConfig(epochs=2, seed=0)
    nr = NaiveRetraining(lambda: make_network("digits", seed=0), config)
    with pytest.raises(NotFittedError):
        nr.predict(X)
    nr.fit(X, y, ids=np.arange(1000, 1200))
    forget = [1000, 1005, 1199, 5]  # 5 is unknown
    with pytest.raises(UnknownIdError, match="1 ids"):
        nr.unlearn(forget)
    assert len(nr.ids_) == 200
    other = nr.without([1000, 1005, 1199])  # a new model; nr itself unchanged
    assert len(other.ids_) == 197 and len(nr.ids_) == 200
    seconds = nr.unlearn(forget, errors="ignore")
    assert seconds > 0 and len(nr.ids_) == 197
    keep = np.ones(200, dtype=bool)
    keep[[0, 5, 199]] = False
    direct = make_network("digits", seed=0)
    train_network(direct, X[keep], y[keep], config)
    for a, b in zip(nr.network_.parameters(), direct.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(other.network_.parameters(), direct.parameters()):
        assert torch.equal(a, b)
    probabilities = nr.predict_proba(X[:7])
    assert probabilities.shape == (7, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert 0.0 <= nr.score(X, y) <= 1.0
