import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eco.exceptions import InvalidInputError  # noqa: E402
from eco.nn import (  # noqa: E402
    DigitsCNN,
    MnistCNN,
    TrainingConfig,
    feature_extractor,
    make_network,
    train_network,
)

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("shape", [(5, 64), (5, 8, 8), (5, 1, 8, 8)])
def test_digits_cnn_accepts_flat_and_image_inputs(shape):
    net = DigitsCNN()
    assert net(torch.zeros(shape)).shape == (5, 10)
    assert feature_extractor(net)(torch.zeros(shape)).shape == (5, net.n_features)


def test_mnist_cnn_shapes():
    net = MnistCNN(n_classes=3, n_features=32)
    assert net(torch.zeros(2, 784)).shape == (2, 3)
    assert net.features(torch.zeros(2, 1, 28, 28)).shape == (2, 32)
    assert net.classifier is list(net.children())[-1]


def test_wrong_image_shape_is_named():
    with pytest.raises(ValueError, match=r"\(5, 63\)"):
        DigitsCNN()(torch.zeros(5, 63))


def test_feature_extractor_of_sequential_and_errors():
    seq = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    phi = feature_extractor(seq)
    assert len(phi) == 2 and phi[0] is seq[0]
    with pytest.raises(TypeError, match="feature extractor"):
        feature_extractor(torch.nn.Linear(3, 2))


def test_make_network_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = make_network("digits", seed=3), make_network("digits", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    c = make_network("digits", seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    with pytest.raises(ValueError, match="unknown network"):
        make_network("cifar")


def _train(X, y, **overrides):
    net = make_network("digits", seed=0)
    history = train_network(net, X, y, TrainingConfig(epochs=2, seed=1, **overrides))
    return net, history


def test_training_is_deterministic_and_learns(digits):
    X, y = digits[0][:256], digits[1][:256]
    net_a, history_a = _train(X, y)
    net_b, history_b = _train(X, y)
    for pa, pb in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(pa, pb)
    assert history_a.losses == history_b.losses
    assert history_a.losses[-1] < history_a.losses[0]
    assert history_a.n_examples == 256 and history_a.wall_time_s > 0
    assert not net_a.training  # left in eval mode
    net_c = make_network("digits", seed=0)
    train_network(net_c, X, y, TrainingConfig(epochs=2, seed=2))  # another batch order
    assert not torch.equal(next(net_a.parameters()), next(net_c.parameters()))


def test_training_restores_global_determinism_switch(digits):
    before = torch.are_deterministic_algorithms_enabled()
    _train(digits[0][:64], digits[1][:64])
    assert torch.are_deterministic_algorithms_enabled() == before


def test_sgd_and_dataset_input(digits):
    X = torch.tensor(digits[0][:128], dtype=torch.float32)
    y = torch.tensor(digits[1][:128])
    _, history = _train(X, y, optimizer="sgd", lr=0.05)
    assert np.isfinite(history.losses).all()
    dataset = torch.utils.data.TensorDataset(X, y)
    net = make_network("digits", seed=0)
    history = train_network(net, dataset, config=TrainingConfig(epochs=1, seed=0))
    assert history.n_examples == 128


@pytest.mark.parametrize(
    "change, match",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "lbfgs"}, "optimizer"),
    ],
)
def test_bad_recipe(change, match):
    with pytest.raises(InvalidInputError, match=match):
        TrainingConfig(**change)


def test_bad_labels_and_inputs(digits):
    X, y = digits[0][:32], digits[1][:32]
    with pytest.raises(InvalidInputError, match="class indices"):
        _train(X, y + 10)
    with pytest.raises(InvalidInputError, match="rows"):
        _train(X, y[:10])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        _train(bad, y)
