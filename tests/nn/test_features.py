import numpy as np
import pytest

torch = pytest.importorskip("torch")

from eco.exceptions import InvalidInputError  # noqa: E402
from eco.nn import extract_features, resolve_device  # noqa: E402
from eco.nn.features import features_as_matrix  # noqa: E402

pytestmark = pytest.mark.torch


class Reshaper(torch.nn.Module):
    """Returns its input reshaped, to produce any output shape."""

    def __init__(self, *shape):
        super().__init__()
        self.shape = shape
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return (x * self.scale).reshape(x.shape[0], *self.shape)


def _phi():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.Dropout(0.5), torch.nn.ReLU())


def test_all_input_kinds_agree_and_return_float64():
    rng = np.random.default_rng(0)
    X = rng.random((37, 6))
    phi = _phi()
    reference = extract_features(phi, X, batch_size=8)
    assert reference.dtype == np.float64 and reference.shape == (37, 4)
    assert reference.flags.c_contiguous
    tensor = torch.tensor(X, dtype=torch.float32)
    dataset = torch.utils.data.TensorDataset(tensor, torch.zeros(37))
    loader = torch.utils.data.DataLoader(dataset, batch_size=5)
    for data in (tensor, dataset, X.tolist()):
        np.testing.assert_array_equal(extract_features(phi, data, batch_size=8), reference)
    # The loader keeps its own batches of 5; float32 sums may round differently.
    np.testing.assert_allclose(extract_features(phi, loader), reference, rtol=1e-5, atol=1e-6)


def test_eval_mode_is_used_and_training_mode_restored():
    phi = _phi()
    phi.train()
    X = np.ones((16, 6))
    a = extract_features(phi, X)
    b = extract_features(phi, X)
    np.testing.assert_array_equal(a, b)  # dropout off
    assert phi.training


def test_trailing_singleton_dimensions_are_dropped():
    X = np.arange(12.0).reshape(3, 4)
    features = extract_features(Reshaper(4, 1, 1), X)
    np.testing.assert_array_equal(features, X)


@pytest.mark.parametrize("shape", [(2, 2), (4, 1, 1, 3)])
def test_non_matrix_output_is_rejected_with_its_shape(shape):
    X = np.ones((3, 4 * (3 if len(shape) == 4 else 1)))
    with pytest.raises(InvalidInputError, match=r"shape \(3, " + ", ".join(map(str, shape))):
        extract_features(Reshaper(*shape), X)


def test_one_dimensional_output_and_row_mismatch():
    with pytest.raises(InvalidInputError, match=r"\(3,\)"):
        features_as_matrix(torch.zeros(3), 3)
    with pytest.raises(InvalidInputError, match=r"\(2, 5\)"):
        features_as_matrix(torch.zeros(2, 5), 3)
    with pytest.raises(InvalidInputError, match="tensor"):
        features_as_matrix((torch.zeros(3, 2),), 3)


def test_bad_data():
    phi = _phi()
    with pytest.raises(InvalidInputError, match="zero rows"):
        extract_features(phi, np.zeros((0, 6)))
    with pytest.raises(InvalidInputError, match="numeric"):
        extract_features(phi, np.array([["a"] * 6]))
    with pytest.raises(InvalidInputError, match="failed"):
        extract_features(phi, np.zeros((2, 5)))
    with pytest.raises(InvalidInputError, match="batch_size"):
        extract_features(phi, np.zeros((2, 6)), batch_size=0)
    with pytest.raises(InvalidInputError, match="Module"):
        extract_features(lambda x: x, np.zeros((2, 6)))


def test_non_finite_features_are_rejected():
    with pytest.raises(InvalidInputError, match="NaN"):
        extract_features(Reshaper(2), np.array([[np.nan, 1.0]]))


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidInputError, match="device"):
        resolve_device("no-such-device")


def test_cuda_asked_for_without_cuda_is_a_clean_error():
    from eco.exceptions import InvalidInputError
    from eco.nn import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
        return
    with pytest.raises(InvalidInputError, match="no CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(InvalidInputError, match="unknown device"):
        resolve_device("gpu")
    assert resolve_device("auto").type == "cpu"


def test_fingerprint_sees_weights_and_buffers_not_modes():
    from eco.nn import module_fingerprint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3)).eval()
    first = module_fingerprint(net)
    net.train()
    assert module_fingerprint(net) == first  # the mode is not state eco uses (it runs in eval)
    with torch.no_grad():
        net(torch.randn(5, 4))  # training mode: running statistics move
    second = module_fingerprint(net)
    assert second != first
    with torch.no_grad():
        net[0].bias[0] += 1e-7
    assert module_fingerprint(net) != second
