import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sklearn.exceptions import NotFittedError  # noqa: E402

import eco  # noqa: E402
from eco.exceptions import (  # noqa: E402
    DuplicateIdError,
    InvalidInputError,
    ModelFileError,
    UnknownIdError,
    UnlearningError,
)
from eco.nn import ECO, UnlearningResult, extract_features, feature_extractor, scale_gamma  # noqa: E402
from eco.nn.experiment import frozen_head_parameters  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture
def model(digits, split, trained_phi):
    net, trainer = trained_phi
    X, y = digits
    ccp = split["ccp"]
    return ECO(feature_extractor(net), eco.CPSVM(C=10.0), phi_trainer=trainer).fit(
        X[ccp], y[ccp], ids=ccp, feature_ids=split["phi"]
    )


def _state(model, X):
    return np.asarray(model.ids_).copy(), model.decision_function(X), tuple(model.feature_ids_)


def _assert_unchanged(model, X, before):
    ids, decision, lineage = before
    np.testing.assert_array_equal(model.ids_, ids)
    np.testing.assert_array_equal(model.decision_function(X), decision)
    assert tuple(model.feature_ids_) == lineage


def _head_nr(model, X, y, ccp, remaining):
    """The head trained from scratch on the remaining rows, Phi fixed, frozen hyper-parameters."""
    # Rows of the features the model was fitted on: on a GPU, float32
    # convolutions may round differently when the batches are composed
    # differently, and Phi fixed means the same feature vectors.
    features = model.transform(X[ccp])[np.isin(ccp, remaining)]
    return eco.CPSVM(**frozen_head_parameters(model.head_)).fit(features, y[remaining], ids=list(remaining))


def test_eco_and_eco_i_end_in_the_same_head_as_head_nr(digits, split, trained_phi):
    X, y = digits
    ccp = split["ccp"]

    def fresh_model():
        return ECO(feature_extractor(trained_phi[0]), eco.CPSVM(C=10.0)).fit(X[ccp], y[ccp], ids=ccp, feature_ids=())

    # Half support vectors (the path must move), half drawn from all of C_CP.
    rng = np.random.default_rng(1)
    support = np.asarray(fresh_model().head_.support_ids_)
    forget = np.unique(np.r_[rng.choice(support, 6, replace=False), rng.choice(ccp, 6, replace=False)])
    results, heads = {}, {}
    for batch in (True, False):
        heads[batch] = fresh_model()
        results[batch] = heads[batch].unlearn(forget, batch=batch)
    assert results[True].path == results[False].path == "decrement"
    assert results[True].batch and not results[False].batch
    assert results[True].exact and results[False].exact
    assert set(results[True].removed_ids) == set(forget.tolist())
    remaining = np.array([i for i in split["ccp"] if i not in set(forget.tolist())])
    np.testing.assert_array_equal(heads[True].ids_, remaining)
    test = X[split["test"]]
    decision_batch = heads[True].decision_function(test)
    decision_single = heads[False].decision_function(test)
    reference = _head_nr(heads[True], X, y, ccp, remaining).decision_function(heads[True].transform(test))
    assert np.max(np.abs(decision_batch - decision_single)) <= 1e-6
    assert np.max(np.abs(decision_batch - reference)) <= 1e-6
    assert np.max(np.abs(decision_single - reference)) <= 1e-6
    for batch in (True, False):
        np.testing.assert_array_equal(heads[batch].head_.alpha_.shape, heads[True].head_.alpha_.shape)
        np.testing.assert_allclose(heads[batch].head_.alpha_, heads[True].head_.alpha_, atol=1e-8)


def test_reserve_only_request_with_a_numeric_gamma_moves_no_head(digits, split, trained_phi):
    X, y = digits
    ccp, phi = split["ccp"], feature_extractor(trained_phi[0])
    gamma = scale_gamma(extract_features(phi, X[split["phi"]]))  # resolved on data not subject to deletion
    model = ECO(phi, eco.CPSVM(C=10.0, gamma=gamma)).fit(X[ccp], y[ccp], ids=ccp, feature_ids=())
    reserve = sorted(set(model.ids_.tolist()) - set(np.asarray(model.head_.support_ids_).tolist()))
    before = model.decision_function(X[:50])
    result = model.unlearn(reserve[:3])
    assert result.path == "reserve_only"
    assert set(result.receipt.paths.values()) == {"reserve_drop"}
    assert result.receipt.hyper_paths == {}
    assert model.head_.gamma_ == gamma
    assert not set(reserve[:3]) & set(model.ids_.tolist())
    np.testing.assert_allclose(model.decision_function(X[:50]), before, atol=1e-12)


def test_reserve_request_with_gamma_scale_resolves_the_head(model, digits):
    # gamma="scale" is resolved on C_CP: removing even reserve vectors moves
    # it, so the heads are re-solved and the path says the head changed.
    X, y = digits
    reserve = sorted(set(model.ids_.tolist()) - set(np.asarray(model.head_.support_ids_).tolist()))
    ccp = np.asarray(model.ids_)
    features = model.transform(X[ccp])
    result = model.unlearn(reserve[:3])
    assert result.path == "decrement" and result.exact
    assert result.receipt.hyper_paths == {"gamma": "resolve_gamma"}
    keep = ~np.isin(ccp, reserve[:3])
    reference = eco.CPSVM(C=10.0).fit(features[keep], y[ccp[keep]], ids=list(ccp[keep]))
    assert model.head_.gamma_ == pytest.approx(reference.gamma_, rel=1e-12)
    assert model.head_.gamma_ == pytest.approx(scale_gamma(features[keep]), rel=1e-12)
    test = model.transform(X[:50])
    assert np.max(np.abs(model.head_.decision_function(test) - reference.decision_function(test))) <= 1e-6


def test_scale_gamma_is_what_gamma_scale_resolves(digits):
    X, y = digits
    rows = X[:200]
    assert scale_gamma(rows) == pytest.approx(1.0 / (rows.shape[1] * rows.var()), rel=1e-12)
    assert scale_gamma(torch.as_tensor(rows)) == scale_gamma(rows)
    assert scale_gamma(rows) == pytest.approx(eco.CPSVM().fit(rows, y[:200]).gamma_, rel=1e-12)
    assert scale_gamma(np.ones((5, 3))) == 1.0  # constant features, as scikit-learn
    for bad in (rows[0], np.empty((0, 4)), np.full((3, 2), np.nan), [["a", "b"]]):
        with pytest.raises(InvalidInputError, match="features"):
            scale_gamma(bad)


def test_unknown_ids_raise_by_default_and_change_nothing(model, digits):
    X, _ = digits
    before = _state(model, X[:40])
    known = int(model.ids_[0])
    with pytest.raises(UnknownIdError, match="nobody"):
        model.unlearn([known, "nobody"])
    _assert_unchanged(model, X[:40], before)
    with pytest.raises(InvalidInputError, match="errors"):
        model.unlearn([known], errors="skip")
    _assert_unchanged(model, X[:40], before)


def test_unknown_ids_ignored_on_request_are_reported(model, digits):
    X, _ = digits
    before = _state(model, X[:40])
    result = model.unlearn([10**9, "nobody"], errors="ignore")
    assert result.path == "none" and result.exact and result.receipt is None
    assert result.ignored_ids == (10**9, "nobody") and result.removed_ids == ()
    _assert_unchanged(model, X[:40], before)
    known = int(model.ids_[0])
    result = model.unlearn(np.array([known, 10**9, known]), errors="ignore")  # repeats count once
    assert result.requested_ids == (known, 10**9)
    assert result.removed_ids == (known,) and result.ignored_ids == (10**9,)
    json.dumps(result.to_dict())


@pytest.mark.parametrize("request_ids", [[float("nan")], [[1, 2]], np.zeros((2, 2)), None])
def test_malformed_requests_change_nothing(model, digits, request_ids):
    X, _ = digits
    before = _state(model, X[:40])
    with pytest.raises(InvalidInputError):
        model.unlearn(request_ids)
    _assert_unchanged(model, X[:40], before)


def test_not_fitted(trained_phi):
    model = ECO(feature_extractor(trained_phi[0]))
    for call in (lambda: model.unlearn([1]), lambda: model.predict(np.zeros((1, 64))), lambda: model.ids_):
        with pytest.raises(NotFittedError):
            call()


def test_lineage_path_retrains_phi(model, digits, split):
    X, y = digits
    calls = []
    trainer = model.phi_trainer

    def recording_trainer(ids):
        calls.append(list(ids))
        return trainer(ids)

    model.phi_trainer = recording_trainer
    old_phi = model.feature_extractor
    phi_ids = split["phi"].tolist()
    ccp_id = int(model.ids_[5])
    result = model.unlearn([phi_ids[0], phi_ids[7], ccp_id])
    assert result.path == "retrain_phi" and result.exact
    assert result.removed_ids == (phi_ids[0], phi_ids[7], ccp_id)
    assert calls == [[i for i in phi_ids if i not in (phi_ids[0], phi_ids[7])]]
    assert model.feature_extractor is not old_phi
    assert tuple(model.feature_ids_) == tuple(calls[0])
    remaining = np.array([i for i in split["ccp"] if i != ccp_id])
    np.testing.assert_array_equal(model.ids_, remaining)
    # The refitted head is the head trained from scratch on the new features.
    expected = ECO(model.feature_extractor, eco.CPSVM(C=10.0)).fit(X[remaining], y[remaining], ids=remaining,
                                                                   feature_ids=())
    test = X[split["test"]]
    np.testing.assert_allclose(model.decision_function(test), expected.decision_function(test), atol=1e-8)
    # An id of the lineage only (not in C_CP) is also served, not ignored.
    result = model.unlearn(phi_ids[1])
    assert result.path == "retrain_phi" and result.ignored_ids == ()


def test_lineage_without_trainer_raises_before_changing_anything(digits, split, trained_phi):
    X, y = digits
    ccp = split["ccp"]
    model = ECO(feature_extractor(trained_phi[0])).fit(X[ccp], y[ccp], ids=ccp, feature_ids=split["phi"])
    before = _state(model, X[:40])
    with pytest.raises(UnlearningError, match="phi_trainer"):
        model.unlearn([int(ccp[0]), int(split["phi"][0])])
    _assert_unchanged(model, X[:40], before)


class _SpatialPhi(torch.nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], 1, 8, 8)


def test_extractor_with_non_matrix_output(digits, split, model):
    X, y = digits
    ccp = split["ccp"]
    bad = ECO(_SpatialPhi())
    with pytest.raises(InvalidInputError, match=r"\(\d+, 1, 8, 8\)"):
        bad.fit(X[ccp], y[ccp], feature_ids=())
    with pytest.raises(NotFittedError):
        bad.unlearn([0])
    # A fitted model whose Phi is replaced by a bad one keeps its head.
    before = _state(model, X[:40])
    good_phi = model.feature_extractor
    model.feature_extractor = _SpatialPhi()
    with pytest.raises(InvalidInputError, match="shape"):
        model.fit(X[ccp], y[ccp], ids=ccp, feature_ids=())
    model.feature_extractor = good_phi
    _assert_unchanged(model, X[:40], before)


def test_fit_validation(digits, trained_phi):
    X, y = digits
    model = ECO(feature_extractor(trained_phi[0]))
    with pytest.raises(DuplicateIdError):
        model.fit(X[:20], y[:20], ids=[1] * 20, feature_ids=())
    with pytest.raises(InvalidInputError, match="ids"):
        model.fit(X[:20], y[:20], ids=range(19), feature_ids=())
    with pytest.raises(InvalidInputError, match="label"):
        model.fit(X[:20], y[:19], feature_ids=())
    with pytest.raises(InvalidInputError):
        ECO("not a module")


def test_predict_score_and_string_ids(digits, split, trained_phi):
    X, y = digits
    ccp, test = split["ccp"], split["test"]
    ids = [f"user-{i}" for i in ccp]
    model = ECO(feature_extractor(trained_phi[0])).fit(X[ccp], y[ccp], ids=ids, feature_ids=())
    assert model.score(X[test], y[test]) > 0.8
    np.testing.assert_array_equal(model.predict(X[test]), model.head_.predict(model.transform(X[test])))
    result = model.unlearn(["user-%d" % ccp[0], "nobody"], errors="ignore")
    assert result.removed_ids == ("user-%d" % ccp[0],) and result.ignored_ids == ("nobody",)
    assert isinstance(result, UnlearningResult)


def test_save_and_load(tmp_path, model, digits, split, trained_phi):
    if not hasattr(eco, "load"):
        pytest.skip("eco.load (head persistence) is not available yet")
    X, _ = digits
    test = X[split["test"]]
    model.save(tmp_path / "model")
    fresh = feature_extractor(type(trained_phi[0])())  # other (random) weights
    loaded = ECO.load(tmp_path / "model", fresh, phi_trainer=model.phi_trainer)
    np.testing.assert_allclose(loaded.decision_function(test), model.decision_function(test), atol=1e-10)
    assert tuple(loaded.feature_ids_) == tuple(model.feature_ids_)
    np.testing.assert_array_equal(loaded.ids_, model.ids_)
    # the loaded model can still take the lineage path (it kept C_CP's inputs)
    assert loaded.unlearn(int(split["phi"][0])).path == "retrain_phi"
    # saving again over a model folder replaces it; other folders are refused
    model.unlearn(int(model.ids_[0]))
    model.save(tmp_path / "model")
    again = ECO.load(tmp_path / "model", feature_extractor(type(trained_phi[0])()))
    np.testing.assert_array_equal(again.ids_, model.ids_)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging left behind
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ModelFileError, match="not overwriting"):
        model.save(tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    # tampering is detected
    path = tmp_path / "model" / "feature_extractor.pt"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelFileError, match="altered"):
        ECO.load(tmp_path / "model", fresh)
    with pytest.raises(ModelFileError):
        ECO.load(tmp_path / "nowhere", fresh)


@pytest.fixture
def small_model(digits, trained_phi):
    """60 rows with the default ids 0 .. 59, a numeric gamma, no lineage."""
    X, y = digits
    return ECO(feature_extractor(trained_phi[0]), eco.CPSVM(C=10.0, gamma=0.05), device="cpu").fit(
        X[:60], y[:60], feature_ids=()
    )


@pytest.mark.parametrize("request_ids", [[3.0, 10**6], [True], torch.tensor([4.0]), np.array([5.0])])
def test_ids_match_by_value_and_kind_as_the_head_does(small_model, digits, request_ids):
    # 3.0 == 3 and True == 1 in Python, but the head's decrement does not
    # take them for the ids 3 and 1: ECO must not either.
    X, _ = digits
    before = _state(small_model, X[:40])
    result = small_model.unlearn(request_ids, errors="ignore")
    assert result.path == "none" and result.removed_ids == ()
    assert result.ignored_ids == result.requested_ids and len(result.ignored_ids) >= 1
    _assert_unchanged(small_model, X[:40], before)
    with pytest.raises(UnknownIdError, match="neither in C_CP"):
        small_model.unlearn(request_ids)
    _assert_unchanged(small_model, X[:40], before)


def test_a_request_naming_an_id_and_its_float_twin_removes_the_id_only(small_model):
    result = small_model.unlearn([3, 3.0], errors="ignore")
    assert result.requested_ids == (3, 3.0)
    assert result.removed_ids == (3,) and result.ignored_ids == (3.0,)
    assert 3 not in small_model.ids_.tolist()


def test_ids_of_different_kinds_must_differ_by_value(digits, trained_phi, small_model):
    X, y = digits
    fresh = ECO(feature_extractor(trained_phi[0]), eco.CPSVM(C=10.0, gamma=0.05), device="cpu")
    # as the core: 1 and True are the same id twice
    with pytest.raises(DuplicateIdError, match="differ by value"):
        fresh.fit(X[:20], y[:20], ids=[1, True] + list(range(2, 20)), feature_ids=())
    with pytest.raises(InvalidInputError, match="another kind"):
        fresh.fit(X[:20], y[:20], feature_ids=[3.0])  # the row id 3 would not name Phi's "3.0"
    with pytest.raises(InvalidInputError, match="another kind"):
        fresh.fit(X[:20], y[:20], feature_ids=[100, 100.0])
    assert not hasattr(fresh, "head_")
    with_lineage = ECO(feature_extractor(trained_phi[0]), eco.CPSVM(C=10.0, gamma=0.05), device="cpu").fit(
        X[:20], y[:20], feature_ids=[100])
    before = _state(with_lineage, X[:40])
    with pytest.raises(InvalidInputError, match="another kind"):
        with_lineage.increment(X[20:21], y[20:21], ids=[100.0], feature_ids=())
    with pytest.raises(InvalidInputError, match="among its ids"):
        with_lineage.increment(X[20:21], y[20:21], ids=[21], feature_ids=[21.0])
    _assert_unchanged(with_lineage, X[:40], before)


@pytest.mark.parametrize("lineage", [[1000.5], [True], [(9, 9)], [2**63]])
def test_save_refuses_a_lineage_it_cannot_store_and_keeps_the_saved_model(tmp_path, digits, trained_phi,
                                                                         small_model, lineage):
    X, y = digits
    small_model.save(tmp_path / "model")
    manifest = (tmp_path / "model" / "manifest.json").read_bytes()
    model = ECO(feature_extractor(trained_phi[0]), eco.CPSVM(C=10.0, gamma=0.05), device="cpu").fit(
        X[:60], y[:60], ids=range(10, 70), feature_ids=lineage)  # no row id equals True by value
    with pytest.raises(InvalidInputError, match="feature_ids"):
        model.save(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing staged beside it
    assert (tmp_path / "model" / "manifest.json").read_bytes() == manifest
    loaded = ECO.load(tmp_path / "model", feature_extractor(type(trained_phi[0])()), device="cpu")
    np.testing.assert_array_equal(loaded.decision_function(X[:20]), small_model.decision_function(X[:20]))
    with pytest.raises(InvalidInputError, match="feature_ids"):
        model.save(tmp_path / "new")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1e-6, "x", True, None])
def test_kkt_tolerance_must_be_a_finite_number(trained_phi, tolerance):
    with pytest.raises(InvalidInputError, match="kkt_tolerance"):
        ECO(feature_extractor(trained_phi[0]), kkt_tolerance=tolerance)
    assert ECO(feature_extractor(trained_phi[0]), kkt_tolerance=np.float32(1e-3)).kkt_tolerance == pytest.approx(1e-3)
