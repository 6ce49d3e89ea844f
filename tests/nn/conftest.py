"""Shared fixtures of the PyTorch tests: small digits data and a small trained Phi.

Everything is module- or session-scoped and small (a few hundred 8x8 digits,
a few epochs) so that the whole of tests/nn runs in well under two minutes on
two CPU cores.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny networks: one thread is as fast and keeps timings stable.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits():
    from eco.datasets import load_digits

    return load_digits()


@pytest.fixture(scope="session")
def split(digits):
    """Disjoint row ids: Phi's training part, C_CP, and a test part."""
    X, y = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    return {"phi": np.sort(order[:300]), "ccp": np.sort(order[300:560]), "test": np.sort(order[560:760])}


@pytest.fixture(scope="session")
def trained_phi(digits, split):
    """A DigitsCNN trained for a few epochs on the Phi part; returns (network, trainer)."""
    from eco.nn import TrainingConfig, feature_extractor, make_network, train_network

    X, y = digits
    config = TrainingConfig(epochs=4, lr=1e-2, batch_size=64, seed=0)

    def trainer(ids):
        net = make_network("digits", seed=0)
        ids = np.asarray(ids, dtype=np.int64)
        train_network(net, X[ids], y[ids], config)
        return net

    net = trainer(split["phi"])
    return net, lambda ids: feature_extractor(trainer(ids))
