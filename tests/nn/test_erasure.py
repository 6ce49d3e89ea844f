"""Erasure in the ECO layer: after ECO.unlearn nothing of a removed row remains.

What ECO itself holds (the raw inputs it keeps for retraining Phi, their
labels, ids, Phi's lineage) and what ECO.save writes besides the head's member
are searched byte for byte for each removed row's input, its features Phi(x)
and its id, with a control that the same search finds the retained rows.

The head (CPSVM) erases its removed rows too, so the decrement and the
retrain-Phi paths are searched over the whole artefact (``whole_artefact_bytes``:
the pickle and every saved file, the head included).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import eco  # noqa: E402
from eco.nn import ECO, feature_extractor, make_network  # noqa: E402
from erasure_helpers import (  # noqa: E402
    assert_erased,
    assert_present,
    eco_own_bytes,
    head_memory_bytes,
    whole_artefact_bytes,
)

pytestmark = pytest.mark.torch

CCP_ROWS = np.arange(0, 80)
PHI_ONLY_ROWS = np.arange(200, 220)  # Phi's training rows that are not in C_CP
SHARED_ROWS = CCP_ROWS[:6]  # rows Phi was trained on that are also in C_CP


class SeededPhi:
    """A stand-in for retraining Phi: a fresh network determined by the remaining lineage (picklable)."""

    def __call__(self, remaining_ids):
        return feature_extractor(make_network("digits", seed=len(remaining_ids)))


ID_KINDS = {
    "str": lambda row: f"forget-me-{int(row):05d}",
    "int": lambda row: 7_000_000_000 + int(row),
}


def build(digits, id_of):
    X, y = digits
    lineage = [id_of(row) for row in np.concatenate([SHARED_ROWS, PHI_ONLY_ROWS])]
    model = ECO(
        feature_extractor(make_network("digits", seed=0)), eco.CPSVM(C=10.0), phi_trainer=SeededPhi(), device="cpu"
    )
    return model.fit(X[CCP_ROWS], y[CCP_ROWS], ids=[id_of(row) for row in CCP_ROWS], feature_ids=lineage)


def head_features(model, ids):
    """The head's stored feature rows of `ids` (its public state)."""
    state = model.head_.to_state()
    at = {identifier: k for k, identifier in enumerate(state.slot_ids.tolist())}
    return state.data[[at[identifier] for identifier in ids]]


def rows_of(ids, id_of):
    back = {id_of(row): row for row in np.concatenate([CCP_ROWS, PHI_ONLY_ROWS])}
    return np.asarray([back[identifier] for identifier in ids])


@pytest.mark.parametrize("batch", [True, False], ids=["ECO", "ECO_i"])
@pytest.mark.parametrize("kind", sorted(ID_KINDS))
def test_decrement_leaves_nothing_anywhere(digits, tmp_path, kind, batch):
    X, _ = digits
    id_of = ID_KINDS[kind]
    model = build(digits, id_of)
    support = set(np.asarray(model.head_.support_ids_).tolist())
    candidates = [id_of(row) for row in CCP_ROWS if row not in SHARED_ROWS]
    # support vectors (the head moves) and reserve vectors (it does not)
    removed = [i for i in candidates if i in support][:3] + [i for i in candidates if i not in support][:2]
    kept = [i for i in candidates if i not in removed][:5]
    removed_rows = X[rows_of(removed, id_of)]
    removed_features = model.transform(removed_rows)
    # the features as the head stores them (extracted in the fit's batches: other bits, maybe)
    stored, kept_stored = head_features(model, removed), head_features(model, kept)
    held = [model._inputs[identifier] for identifier in removed]  # ECO's own buffers of the rows

    result = model.unlearn(removed, batch=batch)
    assert result.path == "decrement" and set(result.removed_ids) == set(removed)

    # the buffers ECO held were overwritten, not merely released
    assert all(not buffer.any() for buffer in held)
    model.save(tmp_path / "model")
    # the whole artefact, the head included (it erases its removed rows too)
    everything = whole_artefact_bytes(model, tmp_path / "model")
    assert_erased(everything, rows=list(removed_rows) + list(removed_features) + list(stored), ids=removed)
    assert_present(everything, rows=list(X[rows_of(kept, id_of)]) + list(kept_stored), ids=kept)
    # and the head's memory (its rows, kernel rows, tables and states)
    memory = head_memory_bytes(model.head_)
    assert_erased(memory, rows=list(removed_features) + list(stored), ids=removed)
    assert_present(memory, rows=list(kept_stored), ids=kept)


@pytest.mark.parametrize("kind", sorted(ID_KINDS))
def test_retraining_phi_leaves_nothing_anywhere(digits, tmp_path, kind):
    X, y = digits
    id_of = ID_KINDS[kind]
    model = build(digits, id_of)
    removed = [id_of(SHARED_ROWS[0]), id_of(PHI_ONLY_ROWS[0]), id_of(CCP_ROWS[40]), id_of(CCP_ROWS[41])]
    removed_ccp = [i for i in removed if i != id_of(PHI_ONLY_ROWS[0])]
    removed_rows = X[rows_of(removed_ccp, id_of)]
    old_features = model.transform(removed_rows)
    held = [model._inputs[identifier] for identifier in removed_ccp]

    result = model.unlearn(removed)
    assert result.path == "retrain_phi"
    assert all(not buffer.any() for buffer in held)
    new_features = model.transform(removed_rows)
    kept_ccp = [id_of(row) for row in CCP_ROWS if id_of(row) not in removed][:5]
    kept_lineage = [id_of(SHARED_ROWS[1]), id_of(PHI_ONLY_ROWS[1])]

    model.save(tmp_path / "model")
    # The head was refitted from scratch on the remaining rows, so the whole
    # artefact, head included, is free of the removed rows today.
    everything = whole_artefact_bytes(model, tmp_path / "model")
    traces = list(removed_rows) + list(old_features) + list(new_features)
    assert_erased(everything, rows=traces, ids=removed)
    assert_present(everything, rows=list(X[rows_of(kept_ccp, id_of)]), ids=kept_ccp + kept_lineage)
    # and the model is the one trained from scratch without them
    remaining = [id_of(row) for row in CCP_ROWS if id_of(row) not in removed]
    reference = eco.CPSVM(C=10.0).fit(model.transform(X[rows_of(remaining, id_of)]), y[rows_of(remaining, id_of)],
                                     ids=remaining)
    test = X[500:560]
    np.testing.assert_allclose(model.decision_function(test), reference.decision_function(model.transform(test)),
                               atol=1e-8)


def test_refit_overwrites_the_inputs_kept_from_the_previous_fit(digits):
    X, y = digits
    id_of = ID_KINDS["str"]
    model = build(digits, id_of)
    held = list(model._inputs.values())
    model.fit(X[100:150], y[100:150], ids=[id_of(row) for row in range(100, 150)], feature_ids=())
    assert all(not buffer.any() for buffer in held)
    assert model._inputs is None  # an empty lineage keeps no inputs
    assert_erased(eco_own_bytes(model), rows=list(X[CCP_ROWS]), ids=[id_of(row) for row in CCP_ROWS])


def test_a_refused_request_erases_nothing(digits):
    from eco.exceptions import UnknownIdError

    X, _ = digits
    id_of = ID_KINDS["str"]
    model = build(digits, id_of)
    target = id_of(CCP_ROWS[30])
    held = model._inputs[target]
    with pytest.raises(UnknownIdError):
        model.unlearn([target, "nobody"])
    # error means unchanged: the row is still in the model, its input intact
    np.testing.assert_array_equal(held, X[CCP_ROWS[30]])
    assert target in set(np.asarray(model.ids_).tolist()) and model._inputs[target] is held
