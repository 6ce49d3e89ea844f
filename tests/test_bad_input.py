"""Bad input to every public method: the specific eco exception, a message naming
the problem, and the model exactly as it was (state digest)."""

import json
import os
import re

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import eco
from eco import CPSVM
from eco.exceptions import (
    DuplicateIdError,
    InvalidInputError,
    ModelFileError,
    UnknownIdError,
    UnseenLabelError,
)

_RNG = np.random.default_rng(0)
N, D = 40, 3
X = _RNG.normal(size=(N, D))
Y2 = (X[:, 0] + 0.5 * _RNG.normal(size=N) > 0).astype(np.int64)
Y3 = np.argmax(X + 0.5 * _RNG.normal(size=(N, D)), axis=1)
K = np.exp(-0.5 * ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))


def _with(a, index, value):
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


def _build(kind):
    if kind == "binary":
        m = CPSVM(C=1.0).fit(X, Y2, ids=[f"e{i}" for i in range(N)])
    elif kind == "multiclass":
        m = CPSVM(C=1.0, kernel="poly", degree=3, coef0=1.0).fit(X, Y3)
    else:
        m = CPSVM(C=1.0, kernel="precomputed").fit(K, Y2)
    m.decrement([m.ids_[0]])  # one removed id, for "already removed"
    return m


_CACHE = {}


def _fresh(kind):
    """A new model with the same state as the cached one (cheap rebuild, bit for bit)."""
    if kind not in _CACHE:
        _CACHE[kind] = _build(kind).to_state()
    return CPSVM.from_state(_CACHE[kind])


def _first_removed(m):
    # _build removed the first id given; the model itself keeps no trace of it
    return "e0" if len(m.classes_) == 2 and m.kernel != "precomputed" else 0


# (case id, model kind, call(model), exception type, regex the message must match)
CASES = [
    # ---------------------------------------------------------------- fit
    ("fit-nan", "binary", lambda m: m.fit(_with(X, (0, 0), np.nan), Y2), InvalidInputError, "NaN"),
    ("fit-inf", "binary", lambda m: m.fit(_with(X, (1, 2), np.inf), Y2), InvalidInputError,
     "infinity"),
    ("fit-neg-inf", "multiclass", lambda m: m.fit(_with(X, (1, 2), -np.inf), Y3),
     InvalidInputError, "infinity"),
    ("fit-words", "binary", lambda m: m.fit(np.full((N, D), "a"), Y2), InvalidInputError,
     "string"),
    ("fit-numeric-strings", "binary", lambda m: m.fit(X.astype(str), Y2), InvalidInputError,
     "numeric|string|dtype"),
    ("fit-complex", "binary", lambda m: m.fit(X + 1j, Y2), InvalidInputError, "[Cc]omplex"),
    ("fit-3d", "binary", lambda m: m.fit(X[:, :, None], Y2), InvalidInputError, "dim 3"),
    ("fit-1d", "binary", lambda m: m.fit(X[:, 0], Y2), InvalidInputError, "2D array"),
    ("fit-ragged", "binary", lambda m: m.fit([[1.0, 2.0], [3.0]], [0, 1]), InvalidInputError,
     "inhomogeneous|sequence"),
    ("fit-empty", "binary", lambda m: m.fit(np.zeros((0, D)), np.zeros(0)), InvalidInputError,
     "0 sample"),
    ("fit-y-length", "binary", lambda m: m.fit(X, Y2[:-1]), InvalidInputError,
     "inconsistent numbers of samples"),
    ("fit-y-2d", "binary", lambda m: m.fit(X, np.c_[Y2, Y2]), InvalidInputError, "1d array"),
    ("fit-y-nan", "binary", lambda m: m.fit(X, np.where(Y2 == 1, np.nan, 0.0)),
     InvalidInputError, "NaN"),
    ("fit-y-one-class", "binary", lambda m: m.fit(X, np.zeros(N)), InvalidInputError,
     "number of classes"),
    ("fit-y-continuous", "binary", lambda m: m.fit(X, np.linspace(0, 1, N)), InvalidInputError,
     "continuous"),
    ("fit-duplicate-ids", "binary", lambda m: m.fit(X, Y2, ids=[0] * N), DuplicateIdError,
     "id 0 appears more than once"),
    ("fit-unhashable-ids", "multiclass", lambda m: m.fit(X, Y3, ids=[[i] for i in range(N)]),
     InvalidInputError, "not hashable"),
    ("fit-ids-length", "binary", lambda m: m.fit(X, Y2, ids=range(N - 1)), InvalidInputError,
     "one entry per row"),
    ("fit-nan-id", "binary", lambda m: m.fit(X, Y2, ids=[np.nan] + list(range(N - 1))),
     InvalidInputError, "NaN"),
    ("fit-sample-weight-negative", "binary", lambda m: m.fit(X, Y2, sample_weight=-np.ones(N)),
     InvalidInputError, "non-negative"),
    ("fit-sample-weight-nan", "binary",
     lambda m: m.fit(X, Y2, sample_weight=_with(np.ones(N), 3, np.nan)), InvalidInputError,
     "NaN"),
    ("fit-sample-weight-shape", "binary", lambda m: m.fit(X, Y2, sample_weight=np.ones(3)),
     InvalidInputError, "shape"),
    ("fit-sample-weight-strings", "binary", lambda m: m.fit(X, Y2, sample_weight=["a"] * N),
     InvalidInputError, "numeric"),
    ("fit-method", "binary", lambda m: m.fit(X, Y2, method="fast"), InvalidInputError,
     "method"),
    ("fit-precomputed-not-square", "precomputed", lambda m: m.fit(K[:, :30], Y2),
     InvalidInputError, "square"),
    ("fit-precomputed-nan", "precomputed", lambda m: m.fit(_with(K, (2, 2), np.nan), Y2),
     InvalidInputError, "NaN"),
    # ---------------------------------------------------------- increment
    ("inc-nan", "binary", lambda m: m.increment(_with(X[:2], (0, 1), np.nan), Y2[:2]),
     InvalidInputError, "NaN"),
    ("inc-inf", "multiclass", lambda m: m.increment(_with(X[:2], (1, 1), np.inf), Y3[:2]),
     InvalidInputError, "infinity"),
    ("inc-words", "binary", lambda m: m.increment(np.full((2, D), "x"), Y2[:2]),
     InvalidInputError, "string"),
    ("inc-numeric-strings", "binary", lambda m: m.increment(X[:2].astype(str), Y2[:2]),
     InvalidInputError, "numeric|string|dtype"),
    ("inc-complex", "binary", lambda m: m.increment(X[:2] + 0j, Y2[:2]), InvalidInputError,
     "[Cc]omplex"),
    ("inc-3d", "binary", lambda m: m.increment(X[:2, :, None], Y2[:2]), InvalidInputError,
     "dim 3"),
    ("inc-1d", "binary", lambda m: m.increment(X[0], Y2[:1]), InvalidInputError, "2D array"),
    ("inc-columns", "multiclass", lambda m: m.increment(X[:2, :2], Y3[:2]), InvalidInputError,
     "2 features.*expecting 3"),
    ("inc-empty", "binary", lambda m: m.increment(np.zeros((0, D)), []), InvalidInputError,
     "0 sample|no rows"),
    ("inc-unseen-label", "binary", lambda m: m.increment(X[:2], [0, 5]), UnseenLabelError,
     "label .*5.* not one of the classes"),
    ("inc-unseen-str-label", "multiclass", lambda m: m.increment(X[:2], ["a", "b"]),
     UnseenLabelError, "label .*'a'.* not one of the classes"),
    ("inc-nan-label", "binary", lambda m: m.increment(X[:2], [0, np.nan]), UnseenLabelError,
     "nan"),
    ("inc-y-length", "binary", lambda m: m.increment(X[:2], [0]), InvalidInputError,
     r"y must have shape \(2,\)"),
    ("inc-duplicate-ids", "binary", lambda m: m.increment(X[:2], Y2[:2], ids=["a", "a"]),
     DuplicateIdError, "'a' appears more than once"),
    ("inc-active-id", "binary", lambda m: m.increment(X[:2], Y2[:2], ids=["e3", "new"]),
     DuplicateIdError, "'e3' is already active"),
    ("inc-unhashable-id", "binary", lambda m: m.increment(X[:2], Y2[:2], ids=[{}, "z"]),
     InvalidInputError, "not hashable"),
    ("inc-ids-length", "binary", lambda m: m.increment(X[:2], Y2[:2], ids=["q"]),
     InvalidInputError, "one entry per row"),
    ("inc-sample-weight", "binary", lambda m: m.increment(X[:2], Y2[:2], sample_weight=[1, -1]),
     InvalidInputError, "non-negative"),
    ("inc-precomputed-too-few-columns", "precomputed",
     lambda m: m.increment(np.ones((2, N)), Y2[:2]), InvalidInputError,
     f"expected {N + 2} columns, got {N}"),
    ("inc-precomputed-too-many-columns", "precomputed",
     lambda m: m.increment(np.ones((2, N + 3)), Y2[:2]), InvalidInputError,
     f"expected {N + 2} columns, got {N + 3}"),
    ("inc-precomputed-nan", "precomputed",
     lambda m: m.increment(np.full((2, N + 2), np.nan), Y2[:2]), InvalidInputError, "NaN"),
    ("inc-precomputed-strings", "precomputed",
     lambda m: m.increment(np.full((2, N + 2), "1.0"), Y2[:2]), InvalidInputError,
     "numeric|dtype"),
    ("inc-precomputed-y-2d", "precomputed",
     lambda m: m.increment(np.ones((2, N + 2)), [[0, 1]]), InvalidInputError, r"\by\b"),
    # ---------------------------------------------------------- decrement
    ("dec-unknown-id", "binary", lambda m: m.decrement(["nope"]), UnknownIdError,
     "unknown id 'nope'"),
    ("dec-unknown-int-id", "multiclass", lambda m: m.decrement([999]), UnknownIdError,
     "unknown id 999"),
    ("dec-removed-id", "binary", lambda m: m.decrement([_first_removed(m)]), UnknownIdError,
     r"unknown id 'e0' \(never given, or already removed\)"),
    ("dec-removed-id-in-batch", "multiclass",
     lambda m: m.decrement([3, 5, _first_removed(m)]), UnknownIdError,
     r"unknown id 0 \(never given, or already removed\)"),
    ("dec-duplicate-ids", "binary", lambda m: m.decrement(["e1", "e2", "e1"]), DuplicateIdError,
     "'e1' appears more than once"),
    ("dec-empty", "binary", lambda m: m.decrement([]), InvalidInputError, "no ids"),
    ("dec-unhashable", "precomputed", lambda m: m.decrement([[1]]), InvalidInputError,
     "not hashable"),
    ("dec-unhashable-mixed", "binary", lambda m: m.decrement(["e1", {}]), InvalidInputError,
     "not hashable"),
    ("dec-none", "binary", lambda m: m.decrement(None), UnknownIdError, "unknown id None"),
    ("dec-nan", "precomputed", lambda m: m.decrement(float("nan")), UnknownIdError,
     "unknown id nan"),
    # -------------------------------------------------- decision / predict / score
    ("decision-nan", "binary", lambda m: m.decision_function(_with(X, (0, 0), np.nan)),
     InvalidInputError, "NaN"),
    ("decision-inf", "multiclass", lambda m: m.decision_function(_with(X, (0, 0), np.inf)),
     InvalidInputError, "infinity"),
    ("decision-words", "binary", lambda m: m.decision_function(np.full((2, D), "a")),
     InvalidInputError, "string"),
    ("decision-numeric-strings", "binary", lambda m: m.decision_function(X.astype(str)),
     InvalidInputError, "numeric|string|dtype"),
    ("decision-complex", "binary", lambda m: m.decision_function(X * 1j), InvalidInputError,
     "[Cc]omplex"),
    ("decision-3d", "binary", lambda m: m.decision_function(X[:, :, None]), InvalidInputError,
     "dim 3"),
    ("decision-1d", "binary", lambda m: m.decision_function(X[0]), InvalidInputError,
     "2D array"),
    ("decision-columns", "binary", lambda m: m.decision_function(X[:, :2]), InvalidInputError,
     "2 features.*expecting 3"),
    ("decision-empty", "binary", lambda m: m.decision_function(np.zeros((0, D))),
     InvalidInputError, "0 sample"),
    ("decision-precomputed-columns", "precomputed", lambda m: m.decision_function(K[:, :-1]),
     InvalidInputError, f"expected {N} columns, got {N - 1}"),
    ("decision-precomputed-3d", "precomputed", lambda m: m.decision_function(K[:, :, None]),
     InvalidInputError, "2-D"),
    ("predict-nan", "multiclass", lambda m: m.predict(_with(X, (3, 1), np.nan)),
     InvalidInputError, "NaN"),
    ("predict-complex", "binary", lambda m: m.predict(X + 1j), InvalidInputError,
     "[Cc]omplex"),
    ("predict-columns", "binary", lambda m: m.predict(np.ones((2, 5))), InvalidInputError,
     "5 features"),
    ("predict-empty", "precomputed", lambda m: m.predict(np.zeros((0, N))), InvalidInputError,
     "0 sample|empty|no rows"),
    ("predict-precomputed-columns", "precomputed", lambda m: m.predict(np.ones((2, 3))),
     InvalidInputError, f"expected {N} columns"),
    ("score-nan", "binary", lambda m: m.score(_with(X, (0, 0), np.nan), Y2), InvalidInputError,
     "NaN"),
    ("score-y-length", "binary", lambda m: m.score(X, Y2[:-1]), InvalidInputError,
     "inconsistent numbers of samples"),
    # ------------------------------------------------------------- save / load
    ("save-int-path", "binary", lambda m: m.save(3), InvalidInputError, "path must be"),
    ("save-none-path", "multiclass", lambda m: m.save(None), InvalidInputError, "path must be"),
    ("save-empty-path", "binary", lambda m: m.save(""), InvalidInputError, "must not be empty"),
    ("load-int-path", "binary", lambda m: eco.load(3), InvalidInputError, "path must be"),
]


@pytest.mark.parametrize("case, kind, call, exc, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, kind, call, exc, pattern):
    m = _fresh(kind)
    digest = m.state_digest()
    with pytest.raises(exc) as info:
        call(m)
    assert type(info.value) is exc, f"{case}: {type(info.value).__name__} instead of {exc.__name__}"
    assert isinstance(info.value, eco.EcoError)
    assert re.search(pattern, str(info.value)), (case, str(info.value))
    assert m.state_digest() == digest
    assert m.kkt_violation() < 1e-8


@pytest.mark.parametrize("kind", ["binary", "multiclass", "precomputed"])
def test_bad_ids_at_save_leave_nothing(kind, tmp_path):
    m = _fresh(kind)
    # a copy of row 0 (kernel: its values against all N rows, then itself)
    data = np.concatenate([K[0], [K[0, 0]]])[None, :] if kind == "precomputed" else X[:1]
    # under an id the file format refuses (a float)
    m.increment(data, m.classes_[:1], ids=[2.5])
    digest = m.state_digest()
    with pytest.raises(InvalidInputError, match="id 2.5 of type float"):
        m.save(tmp_path / "m.eco")
    assert os.listdir(tmp_path) == []
    assert m.state_digest() == digest


@pytest.mark.parametrize("content, pattern", [
    (b"", "not an eco model file"),
    (b"\x00" * 100, "not an eco model file"),
    (json.dumps({"format": "eco-cpsvm", "format_version": 1}).encode(), "not a zip archive"),
    (b"PK\x03\x04" + b"\x00" * 40, "truncated"),
])
def test_load_bad_files(content, pattern, tmp_path):
    p = tmp_path / "bad.eco"
    p.write_bytes(content)
    with pytest.raises(ModelFileError, match=pattern):
        eco.load(p)


def test_save_into_missing_folder(tmp_path):
    m = _fresh("binary")
    with pytest.raises(FileNotFoundError):
        m.save(tmp_path / "no" / "such" / "m.eco")
    assert os.listdir(tmp_path) == []


# Ids are "hashable" per the documentation: a tuple is one, and so is an int
# beyond int64. Both must either work or raise InvalidInputError, never a bare
# numpy error; the file format then refuses them by name.
@pytest.mark.parametrize("bad_id, type_name", [((1, "a"), "tuple"), (2 ** 70, "int64")])
def test_unusual_hashable_ids(bad_id, type_name, tmp_path):
    ids = [bad_id] + list(range(1, N))
    m = CPSVM()
    try:
        m.fit(X, Y2, ids=ids)
    except InvalidInputError:
        return
    assert m.decrement([bad_id]).removed_ids == (bad_id,)
    m.increment(X[:1], Y2[:1], ids=[bad_id])
    with pytest.raises(InvalidInputError, match=type_name):
        m.save(tmp_path / "m.eco")


# ------------------------------------------------------------------ not fitted

_UNFITTED_CALLS = {
    "decision_function": lambda m: m.decision_function(X),
    "predict": lambda m: m.predict(X),
    "score": lambda m: m.score(X, Y2),
    "increment": lambda m: m.increment(X, Y2),
    "decrement": lambda m: m.decrement([1]),
    "kkt_violation": lambda m: m.kkt_violation(),
    "state_digest": lambda m: m.state_digest(),
    "verify": lambda m: m.verify(),
    "verify_reference": lambda m: m.verify(reference=True),
    "save": lambda m: m.save("unused.eco"),
    "loo_decision": lambda m: m.loo_decision(),
    "loo_error": lambda m: m.loo_error(),
    "ids_": lambda m: m.ids_,
    "alpha_": lambda m: m.alpha_,
    "n_active_": lambda m: m.n_active_,
    "support_ids_": lambda m: m.support_ids_,
}


@pytest.mark.parametrize("name", list(_UNFITTED_CALLS))
def test_not_fitted(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NotFittedError, match="not fitted"):
        _UNFITTED_CALLS[name](CPSVM())
    assert os.listdir(tmp_path) == []


def test_failed_fit_keeps_unfitted_model_unfitted():
    m = CPSVM()
    with pytest.raises(InvalidInputError):
        m.fit(_with(X, (0, 0), np.nan), Y2)
    with pytest.raises(NotFittedError):
        m.predict(X)


@pytest.mark.parametrize("params, pattern", [
    ({"C": -1.0}, "C must be"), ({"C": np.nan}, "C must be"), ({"kernel": "sigmoid"}, "kernel"),
    ({"gamma": -1.0}, "gamma"), ({"gamma": "large"}, "gamma"), ({"degree": 2.5}, "degree"),
    ({"class_weight": "auto"}, "class_weight"), ({"class_weight": {7: 1.0}}, r"\[7\] \(not in y\)"),
    ({"n_jobs": 0}, "n_jobs"), ({"max_steps": 0}, "max_steps"),
])
def test_bad_parameters_at_fit(params, pattern):
    m = CPSVM(**params)
    with pytest.raises(InvalidInputError, match=pattern):
        m.fit(X, Y2)
    with pytest.raises(NotFittedError):
        m.predict(X)


# ------------------------------------------------ strictness (issue 10, section 6)


def _int_ids_model():
    return CPSVM(C=1.0).fit(X, Y2)  # ids 0 .. N-1


@pytest.mark.parametrize("bad", [3.0, True, np.float64(3.0), np.True_, False])
def test_id_of_another_kind_names_no_id(bad):
    m = _int_ids_model()
    before = m.state_digest()
    with pytest.raises(UnknownIdError, match="unknown id"):
        m.decrement([bad])
    assert m.state_digest() == before
    assert m.n_active_ == N


def test_float_ids_match_floats_only():
    m = CPSVM(C=1.0).fit(X, Y2, ids=[float(i) + 0.5 for i in range(N - 1)] + [3.0])
    with pytest.raises(UnknownIdError):
        m.decrement([3])
    m.decrement([3.0])
    assert 3.0 not in m.ids_.tolist()


def test_new_id_equal_to_a_known_id_of_another_kind_is_refused():
    m = _int_ids_model()
    before = m.state_digest()
    with pytest.raises(DuplicateIdError, match="another kind"):
        m.increment(X[:1], Y2[:1], ids=[5.0])
    with pytest.raises(DuplicateIdError, match="another kind"):
        m.increment(X[:1], Y2[:1], ids=[True])
    assert m.state_digest() == before


@pytest.mark.parametrize("call", [
    lambda m: m.decrement([1], batch="no"),
    lambda m: m.decrement([1], batch=1),
    lambda m: m.decrement([1], audit="no"),
    lambda m: m.decrement([1], audit=None),
    lambda m: m.verify(reference="x"),
    lambda m: m.verify(reference=0),
])
def test_flags_take_bools_only(call):
    m = _int_ids_model()
    before = m.state_digest()
    with pytest.raises(InvalidInputError, match="must be True or False"):
        call(m)
    assert m.state_digest() == before


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_precompute_takes_bools_only(value):
    with pytest.raises(InvalidInputError, match="precompute must be True or False"):
        CPSVM(precompute=value).fit(X, Y2)


def test_sparse_input_is_an_eco_error():
    sparse = pytest.importorskip("scipy.sparse")
    m = _int_ids_model()
    with pytest.raises(eco.exceptions.InvalidTypeError, match="[Ss]parse"):
        CPSVM().fit(sparse.csr_matrix(X), Y2)
    with pytest.raises(eco.exceptions.InvalidTypeError, match="[Ss]parse"):
        m.predict(sparse.csr_matrix(X))
    with pytest.raises(eco.exceptions.InvalidTypeError, match="[Ss]parse"):
        m.increment(sparse.csr_matrix(X[:2]), Y2[:2], ids=["a", "b"])


def test_dtype_promotion_is_an_eco_error():
    m = _int_ids_model()
    dates = np.array([["2020-01-01"] * D] * 3, dtype="datetime64[D]")
    with pytest.raises(InvalidInputError):
        m.predict(dates)
    with pytest.raises(InvalidInputError):
        CPSVM().fit(np.array([[1, "a"], [2, "b"]], dtype=object), [0, 1])
    before = m.state_digest()
    with pytest.raises(UnseenLabelError):
        m.increment(X[:2], np.array(["2020-01-01"] * 2, dtype="datetime64[D]"), ids=["a", "b"])
    with pytest.raises(InvalidInputError):
        m.score(X, ["a"] * N)
    assert m.state_digest() == before


def test_huge_degree_is_an_eco_error():
    with pytest.raises(InvalidInputError, match="degree"):
        CPSVM(kernel="poly", degree=2 ** 40).fit(X, Y2)


def test_non_symmetric_precomputed_kernel_is_refused():
    bad = K.copy()
    bad[0, 1] += 0.5
    with pytest.raises(InvalidInputError, match="symmetric"):
        CPSVM(kernel="precomputed").fit(bad, Y2)
    m = CPSVM(kernel="precomputed").fit(K[:30, :30], Y2[:30])
    block = K[30:32, :32].copy()
    block[0, 31] += 1.0
    before = m.state_digest()
    with pytest.raises(InvalidInputError, match="symmetric"):
        m.increment(block, Y2[30:32])
    assert m.state_digest() == before


# --------------------------------------------------- set_params on a fitted model


@pytest.mark.parametrize("change", [{"kernel": "linear"}, {"C": 100.0}, {"gamma": 2.0},
                                    {"degree": 4}, {"coef0": 1.0}, {"class_weight": {0: 2.0}},
                                    {"C": 1}])
def test_changing_a_model_parameter_unfits(change):
    m = CPSVM(C=1.0, gamma=0.5).fit(X, Y2)
    m.set_params(**change)
    for call in (lambda: m.predict(X), lambda: m.verify(), lambda: m.decrement([1]),
                 lambda: m.increment(X[:1], Y2[:1], ids=["new"]), lambda: m.state_digest()):
        with pytest.raises(NotFittedError):
            call()
    # fitting again uses the new parameters
    m.fit(X, Y2)
    assert_exact_params = {k: v for k, v in m.get_params().items() if k in change}
    assert assert_exact_params == change
    assert m.kkt_violation() < 1e-8


def test_unchanged_or_work_parameters_keep_the_model():
    m = CPSVM(C=1.0, gamma=0.5).fit(X, Y2)
    before = m.decision_function(X)
    m.set_params(C=1.0, gamma=0.5, n_jobs=2, max_steps=500, precompute=True)
    assert np.array_equal(m.decision_function(X), before)
    # the state moved as it was: same model as one built with these settings
    twin = CPSVM.from_state(m.to_state())
    assert twin.state_digest() == m.state_digest()
    assert m.head_set_.n_jobs == 2
    m.decrement([1, 2, 3])
    assert m.kkt_violation() < 1e-8
    with pytest.raises(ValueError):
        m.set_params(no_such_parameter=1)
    assert m.get_params()["n_jobs"] == 2


# -------------------------------------------- hard fits end, exact or with an error


def _bounded_fit(make):
    """The fit ends (the suite's timeout would catch a hang): exact, or an eco error."""
    try:
        m = make()
    except eco.exceptions.EcoError as exc:
        assert str(exc)
        return None
    assert m.kkt_violation() < 1e-8
    return m


def test_hard_fits_end():
    rng = np.random.default_rng(3)
    Xh = rng.normal(size=(40, 3))
    yh = (Xh[:, 0] + 0.5 * rng.normal(size=40) > 0).astype(int)
    _bounded_fit(lambda: CPSVM(kernel="linear", C=10.0).fit(Xh * 1e6, yh))
    _bounded_fit(lambda: CPSVM(C=1.0).fit(Xh, yh, sample_weight=10.0 ** rng.uniform(0, 300, 40)))
    _bounded_fit(lambda: CPSVM(kernel="poly", degree=6, gamma=101.0).fit(Xh, yh))
    G = rng.normal(size=(13, 13))
    _bounded_fit(lambda: CPSVM(kernel="precomputed", C=839.0).fit(G + G.T, np.arange(13) % 2))


@pytest.mark.parametrize("tol", [float("nan"), -1.0, float("inf"), "1e-8", True])
def test_tolerances_must_be_finite_non_negative(tol):
    from eco.audit import verify_model
    from eco.testing import assert_exact

    m = _int_ids_model()
    with pytest.raises(InvalidInputError, match="finite number >= 0"):
        verify_model(m, tol=tol)
    with pytest.raises(InvalidInputError, match="finite number >= 0"):
        verify_model(m, tol_ref=tol)
    with pytest.raises(InvalidInputError, match="finite number >= 0"):
        assert_exact(m, kkt_tol=tol)


@pytest.mark.parametrize("change", [{"n_jobs": "x"}, {"n_jobs": 0}, {"max_steps": -1},
                                    {"precompute": "yes"}, {"screening": 2}])
def test_a_work_parameter_fit_refuses_is_refused_on_a_fitted_model(change):
    """set_params(n_jobs="x") on a fitted model was taken, and the next decrement
    raised a bare TypeError (n_jobs=0, max_steps=-1 and precompute="yes" passed silently)."""
    m = CPSVM(C=1.0, gamma=0.5).fit(X, Y2)
    before, params = m.state_digest(), m.get_params()
    with pytest.raises(InvalidInputError, match=next(iter(change))):
        m.set_params(**change)
    assert m.get_params() == params
    assert m.state_digest() == before
    m.decrement([1])
    assert m.kkt_violation() < 1e-8
