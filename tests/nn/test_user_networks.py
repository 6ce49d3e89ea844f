"""ECO with networks, datasets and loaders written the way a user writes them.

The networks are trained briefly on the Phi part of the digits, then put in
eval mode as a user would before handing them to ECO; every test checks that
eco leaves them exactly as it found them.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, TensorDataset  # noqa: E402

import eco  # noqa: E402
from eco.exceptions import (  # noqa: E402
    DuplicateIdError,
    FeatureExtractorChangedError,
    InvalidInputError,
    UnknownIdError,
    UnlearningError,
)
from eco.nn import ECO  # noqa: E402
from eco.nn.experiment import frozen_head_parameters  # noqa: E402

pytestmark = pytest.mark.torch


class Scaler(nn.Module):
    """A module with buffers of its own (a fixed input normalisation and a call counter)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.full((64,), 0.3))
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        if self.training:
            self.calls += 1  # a buffer a training-mode forward would touch
        return x.reshape(x.shape[0], -1) - self.mean


def user_network(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        Scaler(),
        nn.Linear(64, 48),
        nn.BatchNorm1d(48),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(48, 24),
        nn.ReLU(),
        nn.Linear(24, 10),
    )


@pytest.fixture(scope="module")
def user_net(digits, split):
    """A trained user network, in eval mode; its last layer is cut off for Phi."""
    X, y = digits
    net = user_network()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    inputs = torch.as_tensor(X[split["phi"]], dtype=torch.float32)
    labels = torch.as_tensor(y[split["phi"]])
    net.train()
    for _ in range(30):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    net.eval()
    return net


def _snapshot(module):
    return (
        [(name, m.training) for name, m in module.named_modules()],
        {k: v.detach().clone() for k, v in module.state_dict().items()},
        [p.grad for p in module.parameters()],
    )


def _assert_same(module, snapshot):
    modes, state, grads = snapshot
    assert [(name, m.training) for name, m in module.named_modules()] == modes
    now = module.state_dict()
    assert now.keys() == state.keys()
    for key in state:
        assert torch.equal(now[key], state[key]), key
    assert all(g is None for g in (p.grad for p in module.parameters())) == all(g is None for g in grads)


class PairDataset(Dataset):
    """A user's map-style dataset yielding (x, y)."""

    def __init__(self, X, y):
        self.X, self.y = X.astype(np.float32), y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return torch.from_numpy(self.X[index]), int(self.y[index])


class InputDataset(Dataset):
    """A user's dataset yielding x only."""

    def __init__(self, X):
        self.X = X.astype(np.float32)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        return self.X[index]


def _model(user_net, X, y, ids, **fit):
    phi = user_net[:-1]  # a sliced nn.Sequential
    return ECO(phi, eco.CPSVM(C=10.0)).fit(X, y, ids=ids, feature_ids=(), **fit)


def _reference(model, features, y, ids):
    """The same estimator fitted from scratch, frozen hyper-parameters (the exactness reference).

    It gets the very feature rows the model was given: on a GPU, float32
    layers may round differently when batches are composed differently.
    """
    return eco.CPSVM(**frozen_head_parameters(model.head_)).fit(features, y, ids=list(ids))


def test_modes_buffers_and_gradients_of_the_users_network_are_untouched(user_net, digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    # Mixed modes on purpose: eco must give back each submodule's own flag,
    # and the Scaler in training mode would count calls in its buffer.
    user_net[4].train()
    user_net[0].train()
    try:
        before = _snapshot(user_net)
        model = _model(user_net, X[ccp], y[ccp], ccp)
        model.predict(X[test])
        model.score(X[test], y[test])
        model.unlearn(ccp[:3])
        _assert_same(user_net, before)
        assert user_net[4].training and user_net[0].training and not user_net[2].training
    finally:
        user_net[4].eval()
        user_net[0].eval()


def test_sliced_sequential_modes_would_be_reset_by_train_mode(user_net):
    # The measured trap that untouched() avoids: restoring the mode on the
    # sliced container sets every child to the container's flag.
    phi = user_net[:-1]
    phi.train(phi.training)
    assert all(m.training for m in phi.modules())
    user_net.eval()
    assert not any(m.training for m in user_net.modules())


def test_users_forward_pass_after_fit_leaves_eco_unchanged(user_net, digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    model = _model(user_net, X[ccp], y[ccp], ccp)
    decision = model.decision_function(X[test])
    with torch.no_grad():
        user_net(torch.as_tensor(X[test], dtype=torch.float32))  # eval mode: BatchNorm fixed
    np.testing.assert_array_equal(model.decision_function(X[test]), decision)


def test_changed_phi_is_detected_before_transform_and_unlearn(digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    net = user_network(seed=1).eval()
    model = _model(net, X[ccp], y[ccp], ccp)
    ids_before = model.ids_.copy()
    net.train()
    with torch.no_grad():
        net(torch.as_tensor(X[test], dtype=torch.float32))  # updates BatchNorm statistics and Scaler.calls
    net.eval()
    for call in (lambda: model.transform(X[test]), lambda: model.predict(X[test]),
                 lambda: model.unlearn(ccp[:2]), lambda: model.increment(X[test[:2]], y[test[:2]], ids=[-1, -2],
                                                                         feature_ids=())):
        with pytest.raises(FeatureExtractorChangedError, match="changed since fit"):
            call()
    np.testing.assert_array_equal(model.ids_, ids_before)
    # A stray optimizer step on the weights is caught the same way.
    net2 = user_network(seed=2).eval()
    model2 = _model(net2, X[ccp], y[ccp], ccp)
    with torch.no_grad():
        net2[1].weight.add_(1e-3)
    with pytest.raises(FeatureExtractorChangedError):
        model2.unlearn(ccp[:1])


def test_lineage_must_be_stated(user_net, digits, split):
    X, y = digits
    ccp = split["ccp"]
    model = ECO(user_net[:-1])
    for statement in ({}, {"feature_ids": None}):
        with pytest.raises(InvalidInputError, match=r"feature_ids must be stated.*feature_ids=\(\)"):
            model.fit(X[ccp], y[ccp], ids=ccp, **statement)
    assert not hasattr(model, "head_")
    model.fit(X[ccp], y[ccp], ids=ccp, feature_ids=())
    assert model.feature_ids_ == ()


def test_unknown_ids_raise_and_can_be_ignored(user_net, digits, split):
    X, y = digits
    ccp = split["ccp"]
    model = _model(user_net, X[ccp], y[ccp], ccp)
    with pytest.raises(UnknownIdError, match="typo"):
        model.unlearn(["typo"])
    with pytest.raises(KeyError):  # UnknownIdError is a KeyError as well
        model.unlearn([int(ccp[0]), "typo"])
    assert int(ccp[0]) in model.ids_.tolist()
    result = model.unlearn([int(ccp[0]), "typo"], errors="ignore")
    assert result.ignored_ids == ("typo",) and result.removed_ids == (int(ccp[0]),)


def test_datasets_and_loaders_give_what_arrays_give(user_net, digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    from_arrays = _model(user_net, X[ccp], y[ccp], None)
    tensors = TensorDataset(torch.as_tensor(X[ccp], dtype=torch.float32), torch.as_tensor(y[ccp]))
    sources = {
        "tensors": (torch.as_tensor(X[ccp]), torch.as_tensor(y[ccp])),
        "TensorDataset": (tensors, None),
        "user Dataset (x, y)": (PairDataset(X[ccp], y[ccp]), None),
        "user Dataset x": (InputDataset(X[ccp]), y[ccp]),
        "DataLoader": (DataLoader(PairDataset(X[ccp], y[ccp]), batch_size=37), None),
    }
    expected = from_arrays.decision_function(X[test])
    for name, (data, labels) in sources.items():
        model = ECO(user_net[:-1], eco.CPSVM(C=10.0)).fit(data, labels, feature_ids=())
        np.testing.assert_array_equal(model.ids_, np.arange(len(ccp)), err_msg=name)  # default ids: positions
        # atol: the batches differ (37 rows vs 256), which float32 layers on a GPU may round differently.
        np.testing.assert_allclose(model.decision_function(X[test]), expected, atol=1e-5, err_msg=name)
    loader = DataLoader(PairDataset(X[test], y[test]), batch_size=50)
    np.testing.assert_array_equal(from_arrays.predict(loader), from_arrays.predict(X[test]))
    np.testing.assert_array_equal(from_arrays.predict(InputDataset(X[test])), from_arrays.predict(X[test]))
    accuracy = from_arrays.score(X[test], y[test])
    assert from_arrays.score(loader) == accuracy
    assert from_arrays.score(TensorDataset(torch.as_tensor(X[test]), torch.as_tensor(y[test]))) == accuracy
    # Labels travel with the rows, so a shuffled loader scores the same.
    shuffled = DataLoader(PairDataset(X[test], y[test]), batch_size=50, shuffle=True,
                          generator=torch.Generator().manual_seed(0))
    assert from_arrays.score(shuffled) == pytest.approx(accuracy, abs=1e-12)


def test_shuffling_loader_refused_where_order_matters(user_net, digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    model = _model(user_net, X[ccp], y[ccp], ccp)
    shuffled = DataLoader(PairDataset(X[test], y[test]), batch_size=50, shuffle=True)
    for call in (lambda: model.predict(shuffled), lambda: model.transform(shuffled),
                 lambda: model.score(shuffled, y[test]),
                 lambda: ECO(user_net[:-1]).fit(shuffled, feature_ids=())):
        with pytest.raises(InvalidInputError, match="not in order"):
            call()
    with pytest.raises(InvalidInputError, match="drop_last"):
        model.predict(DataLoader(InputDataset(X[test]), batch_size=64, drop_last=True))
    with pytest.raises(InvalidInputError, match="twice"):
        ECO(user_net[:-1]).fit(PairDataset(X[ccp], y[ccp]), y[ccp], feature_ids=())


def test_increment_is_exact_and_kept_by_save_and_load(user_net, digits, split, tmp_path):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    first, extra = ccp[:200], ccp[200:]
    model = _model(user_net, X[first], y[first], first)
    decision_before = model.decision_function(X[test])
    with pytest.raises(InvalidInputError, match="needs ids"):
        model.increment(X[extra], y[extra], feature_ids=())
    with pytest.raises(InvalidInputError, match="feature_ids must be stated"):
        model.increment(X[extra], y[extra], ids=extra)
    with pytest.raises(DuplicateIdError):
        model.increment(X[first[:3]], y[first[:3]], ids=first[:3], feature_ids=())
    with pytest.raises(InvalidInputError, match="lineage was empty"):
        model.increment(X[extra], y[extra], ids=extra, feature_ids=extra[:1])
    np.testing.assert_array_equal(model.decision_function(X[test]), decision_before)  # unchanged by the errors
    loader = DataLoader(PairDataset(X[extra], y[extra]), batch_size=16)
    model.increment(loader, ids=extra, feature_ids=())
    np.testing.assert_array_equal(np.sort(model.ids_), np.sort(ccp))
    features = np.vstack([model.transform(X[first]), model.transform(loader)])
    reference = _reference(model, features, y[ccp], ccp)
    gap = np.max(np.abs(model.decision_function(X[test]) - reference.decision_function(model.transform(X[test]))))
    assert gap <= 1e-6
    model.save(tmp_path / "m")
    loaded = ECO.load(tmp_path / "m", user_network(seed=5)[:-1].eval())
    np.testing.assert_array_equal(np.sort(loaded.ids_), np.sort(ccp))
    np.testing.assert_allclose(loaded.decision_function(X[test]), model.decision_function(X[test]), atol=1e-10)
    assert loaded.unlearn(extra[:2]).exact


def test_increment_extends_the_lineage(digits, split, tmp_path):
    X, y = digits
    ccp, phi = split["ccp"], split["phi"]
    net = user_network(seed=3).eval()
    calls = []

    def trainer(ids):
        calls.append(sorted(ids))
        return user_network(seed=4)[:-1].eval()

    model = ECO(net[:-1], eco.CPSVM(C=10.0), phi_trainer=trainer).fit(
        X[ccp[:200]], y[ccp[:200]], ids=ccp[:200], feature_ids=phi[:50])
    new = ccp[200:210]
    model.increment(X[new], y[new], ids=new, feature_ids=new[:2])
    assert set(model.feature_ids_) == set(phi[:50].tolist()) | set(new[:2].tolist())
    model.save(tmp_path / "m")  # the extended lineage and the new rows' inputs are persisted
    model = ECO.load(tmp_path / "m", user_network(seed=9)[:-1].eval(), phi_trainer=trainer)
    assert set(model.feature_ids_) == set(phi[:50].tolist()) | set(new[:2].tolist())
    result = model.unlearn([int(new[0])])
    assert result.path == "retrain_phi"
    assert calls == [sorted(set(phi[:50].tolist()) | {int(new[1])})]
    assert int(new[0]) not in model.ids_.tolist() and int(new[1]) in model.ids_.tolist()
    # Rows added to the head behind ECO's back: a clear error, not a bare KeyError.
    extra = ccp[210:212]
    model.head_.increment(model.transform(X[extra]), y[extra], ids=extra.tolist())
    with pytest.raises(UnlearningError, match="not in the model"):
        model.unlearn([int(new[1])])


def test_unlearning_equals_a_cpsvm_fitted_from_scratch(user_net, digits, split):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    model = _model(user_net, X[ccp], y[ccp], ccp)
    support = np.asarray(model.head_.support_ids_)
    forget = np.unique(np.r_[support[:5], ccp[::40]])
    result = model.unlearn(forget)
    assert result.exact and result.path == "decrement"
    remaining = np.array([i for i in ccp if i not in set(forget.tolist())])
    reference = _reference(model, model.transform(X[ccp])[np.isin(ccp, remaining)], y[remaining], remaining)
    features = model.transform(X[test])
    assert np.max(np.abs(model.head_.decision_function(features) - reference.decision_function(features))) <= 1e-6


@pytest.mark.parametrize("head", ["svc", "pipeline", "object"])
def test_head_contract_is_enforced_at_construction(user_net, head):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    heads = {"svc": SVC(), "pipeline": make_pipeline(StandardScaler(), SVC()), "object": object()}
    with pytest.raises(InvalidInputError, match="eco estimator with ids"):
        ECO(user_net[:-1], heads[head])
