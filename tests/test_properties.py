"""Property-based tests: random interleavings of increments and decrements.

Data come from a small integer grid, so duplicate rows, exact ties and
contradictory labels (the same x with both labels) are frequent; sets are
tiny and often shrink to one class or to nothing. After every step the KKT
certificate must hold, and at the end the model must equal a fit from scratch
on the rows still active (decision values), or the documented constant when
fewer than two classes are left.
"""

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from eco import CPSVM
from exact_helpers import (
    Ledger,
    assert_certified,
    assert_close,
    assert_exact,
    refit_from_scratch,
)

PROPERTY_SETTINGS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,  # reproducible in CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

rows = st.tuples(st.integers(-2, 2), st.integers(-2, 2))
labelled = st.tuples(rows, st.integers(0, 1))


@st.composite
def scenarios(draw):
    """An initial set (both classes present) and a list of operations."""
    init = draw(st.lists(labelled, min_size=2, max_size=14))
    if len({lab for _, lab in init}) < 2:  # fit needs two classes
        init.append((init[0][0], 1 - init[0][1]))  # a contradictory label
    ops = draw(st.lists(
        st.one_of(
            st.tuples(st.just("inc"), st.lists(labelled, min_size=1, max_size=4)),
            st.tuples(st.just("dec"), st.lists(st.integers(0, 10**6), min_size=1, max_size=5,
                                               unique=True), st.booleans()),
            st.tuples(st.just("dec_all_of"), st.integers(0, 1), st.booleans()),
        ),
        min_size=1, max_size=10))
    kernel = draw(st.sampled_from(["linear", "rbf", "poly"]))
    C = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return init, ops, kernel, C


def _run(init, ops, kernel, C):
    X0 = np.array([r for r, _ in init], dtype=np.float64)
    y0 = np.array([lab for _, lab in init])
    model = CPSVM(C=C, kernel=kernel, gamma=0.5, coef0=1.0, degree=2)
    model.fit(X0, y0)
    ledger = Ledger(2)
    ledger.add(X0, y0)
    assert_certified(model)
    for op in ops:
        active = list(model.ids_)
        if op[0] == "inc":
            X = np.array([r for r, _ in op[1]], dtype=np.float64)
            y = np.array([lab for _, lab in op[1]])
            ids = model.increment(X, y)
            ledger.add(X, y, ids=list(ids))
        elif not active:
            continue
        elif op[0] == "dec":
            # positions drawn blindly, mapped onto the active ids
            chosen = sorted({active[k % len(active)] for k in op[1]})
            receipt = model.decrement(chosen, batch=op[2], audit=True)
            assert receipt.kkt_violation < 1e-8
        else:
            cls, batch = op[1], op[2]
            chosen = [i for i in active if ledger.labels[i] == cls]
            if not chosen:
                continue
            model.decrement(chosen, batch=batch)
        assert_certified(model)
    return model, ledger


def _check_final(model, ledger):
    X_eval = ledger.X()
    refit = refit_from_scratch(model, ledger)
    if refit is None:
        labels = set(ledger.y(list(model.ids_)).tolist())
        expected = 0.0 if not labels else (1.0 if labels == {1} else -1.0)
        np.testing.assert_array_equal(model.decision_function(X_eval), expected)
    else:
        assert_close(model.decision_function(X_eval), refit.decision_function(X_eval), 1e-9,
                     "updated model vs fit from scratch")
    assert_exact(model, ledger, svc=False)


@PROPERTY_SETTINGS
@given(scenarios())
def test_random_interleavings_are_exact(scenario):
    init, ops, kernel, C = scenario
    model, ledger = _run(init, ops, kernel, C)
    _check_final(model, ledger)


@PROPERTY_SETTINGS
@given(scenarios(), st.data())
def test_batch_and_single_decrements_agree(scenario, data):
    """From any reachable state, batch=True and batch=False end in the same model."""
    init, ops, kernel, C = scenario
    a, ledger = _run(init, ops, kernel, C)
    b, _ = _run(init, ops, kernel, C)
    assert a.state_digest() == b.state_digest()  # deterministic replay
    active = list(a.ids_)
    if not active:
        return
    k = data.draw(st.integers(1, len(active)))
    chosen = data.draw(st.permutations(active))[:k]
    a.decrement(chosen, batch=True)
    b.decrement(chosen, batch=False)
    X_eval = ledger.X()
    assert_close(a.decision_function(X_eval), b.decision_function(X_eval), 1e-9,
                 "batch vs one-by-one")
    assert_certified(a)
    assert_certified(b)


@PROPERTY_SETTINGS
@given(st.lists(labelled, min_size=4, max_size=16), st.sampled_from(["linear", "rbf"]),
       st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0]), min_size=16, max_size=16))
def test_weighted_fit_then_remove_everything(points, kernel, weights):
    """Weighted rows (zeros included): fit, then unlearn all rows one by one."""
    X = np.array([r for r, _ in points], dtype=np.float64)
    y = np.array([lab for _, lab in points])
    sw = np.array(weights[: len(y)])
    if len(np.unique(y)) < 2 or not np.any(sw > 0):
        return
    model = CPSVM(C=1.0, kernel=kernel, gamma=0.5).fit(X, y, sample_weight=sw)
    ledger = Ledger(2)
    ledger.add(X, y, sample_weight=sw)
    assert_exact(model, ledger, svc=False)
    for i in list(model.ids_):
        model.decrement([i])
        assert_certified(model)
    np.testing.assert_array_equal(model.decision_function(X), 0.0)


labelled3 = st.tuples(rows, st.integers(0, 2))


@st.composite
def failing_removals(draw):
    """Three classes on the grid, and removals of which some fail at a head, before or after it."""
    init = draw(st.lists(labelled3, min_size=6, max_size=18))
    for cls in range(3):  # every class at least twice, so that no removal below empties one
        init += [((cls - 1, cls - 1), cls)] * max(0, 2 - sum(lab == cls for _, lab in init))
    ops = draw(st.lists(
        st.tuples(st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True),
                  st.booleans(),                     # batch
                  st.integers(0, 4),                 # fail at this unlearn_head call (0: none)
                  st.booleans()),                    # after the head took its part
        min_size=1, max_size=8))
    kernel = draw(st.sampled_from(["linear", "rbf", "poly"]))
    C = draw(st.sampled_from([0.1, 1.0, 10.0]))
    return init, ops, kernel, C


@settings(PROPERTY_SETTINGS, max_examples=150)
@given(failing_removals())
def test_failed_removals_on_three_heads_change_nothing(scenario):
    """A removal that fails at any head is undone bit for bit, whether each head was copied or
    kept as the record of its reserve drop; the ones that complete are exact."""
    from eco.testing import fail_on_call

    init, ops, kernel, C = scenario
    X0 = np.array([r for r, _ in init], dtype=np.float64)
    y0 = np.array([lab for _, lab in init])
    model = CPSVM(C=C, kernel=kernel, gamma=0.5, coef0=1.0, degree=2).fit(X0, y0)
    ledger = Ledger(2)
    ledger.add(X0, y0)
    for positions, batch, fail_at, after in ops:
        active = list(model.ids_)
        chosen = sorted({active[k % len(active)] for k in positions})
        left = ledger.y([i for i in active if i not in set(chosen)])
        if min(np.bincount(left, minlength=3)) < 2:
            continue  # keep all three classes, so that a refit has the same heads
        before = model.state_digest()
        at = [active.index(i) for i in chosen]
        zero_heads = int(np.sum(np.all(np.atleast_2d(model.alpha_)[:, at] == 0, axis=1)))
        with fail_on_call(model, "unlearn_head", fail_at or 10**6,
                          RuntimeError("injected"), after=after) as calls:
            try:
                model.decrement(chosen, batch=batch)
                event("completed")
            except RuntimeError:
                assert model.state_digest() == before
                assert list(model.ids_) == active
                event("failed after a head" if after else "failed at a head")
        if calls:  # the transaction ran (not the reserve fast path)
            event(f"{zero_heads} of 3 heads with every removed row at alpha = 0")
        assert_certified(model)
    refit = refit_from_scratch(model, ledger)
    X_eval = ledger.X()
    assert_close(model.decision_function(X_eval), refit.decision_function(X_eval), 1e-9,
                 "updated model vs fit from scratch")
