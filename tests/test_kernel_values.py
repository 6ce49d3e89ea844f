"""Kernel values of the training rows: the same bits on every CPU, close to the true values.

The compiled rows (``KernelStore``) sum the products of the features in
their order, one rounded product and one rounded sum per term, and take the
rbf exponential with eco's own branch-free exp; the vector code picked for
the CPU at load time must give exactly these bits. These tests rebuild the
rows in NumPy with the same operations (NumPy's multiply and add are single
IEEE operations) and require bit equality, then measure the exp against
NumPy's.
"""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from eco import _cp_core

SHIFT = 6755399441055744.0  # 1.5 * 2**52
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
TAYLOR = [1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
          1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0,
          0.5, 1.0, 1.0]


def eco_exp_numpy(x):
    """The operations of eco's exp (``eco_exp`` in ``_cp_core.pyx``), in NumPy."""
    x = np.minimum(np.maximum(np.asarray(x, dtype=np.float64), -750.0), 710.0)
    u = x * 1.44269504088896338700 + SHIFT
    kf = u - SHIFT
    k = u.view(np.int64) - np.int64(0x4338000000000000)
    r = (x - kf * LN2_HI) - kf * LN2_LO
    p = np.full_like(x, 1.0 / 6227020800.0)
    for c in TAYLOR:
        p = c + r * p
    k1 = k >> 1
    k2 = k - k1
    s1 = ((k1 + 1023) << 52).view(np.float64)
    s2 = ((k2 + 1023) << 52).view(np.float64)
    return (p * s1) * s2


def dots_in_feature_order(A, B):
    """A @ B.T with every entry summed over the features in order, from 0.0."""
    out = np.zeros((A.shape[0], B.shape[0]))
    for k in range(A.shape[1]):
        out = out + A[:, k:k + 1] * B[:, k][None, :]
    return out


def rbf_rows_in_numpy(X, slots, gamma):
    """The rbf rows of `slots` with the compiled code's operations, in NumPy."""
    sq = np.zeros(len(X))
    for k in range(X.shape[1]):
        sq = sq + X[:, k] * X[:, k]
    d2 = np.maximum(sq[slots][:, None] + sq[None, :] - 2.0 * dots_in_feature_order(X[slots], X),
                    0.0)
    return eco_exp_numpy(-gamma * d2)


def store_rows(X, slots, kernel, **params):
    store = _cp_core.KernelStore(X.shape[1], kernel, **params)
    half = len(X) // 2  # two appends: the rows also cover columns added later
    store.append(np.ascontiguousarray(X[:half]))
    store.append(np.ascontiguousarray(X[half:]))
    store.ensure_rows(np.asarray(slots, dtype=np.intp))
    return np.array([store.get_row(int(s)) for s in slots])


def _data(n, d, scale, seed):
    return np.random.default_rng(seed).standard_normal((n, d)) * scale


# feature counts around the blocks of four features the rows are summed in
@pytest.mark.parametrize("d", [0, 1, 3, 4, 5, 8, 13, 64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 40.0])
def test_linear_rows_are_the_feature_ordered_sums(d, scale):
    X = _data(1300, d, scale, seed=d)
    slots = [0, 1, 2, 649, 650, 1299, 7, 8, 9, 10, 11]  # more than one block of 8 rows
    rows = store_rows(X, slots, "linear")
    expected = dots_in_feature_order(X[slots], X)
    np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize("d", [1, 5, 64])
@pytest.mark.parametrize("gamma", [1e-4, 0.37, 50.0])
def test_rbf_rows_are_eco_exp_of_the_ordered_distances(d, gamma):
    X = _data(1100, d, 1.0, seed=10 + d)
    slots = [0, 5, 549, 550, 1099]
    rows = store_rows(X, slots, "rbf", gamma=gamma)
    np.testing.assert_array_equal(rows, rbf_rows_in_numpy(X, slots, gamma))


def test_rbf_rows_of_digits_are_rebuilt_bit_for_bit():
    X = load_digits().data[:900] / 16.0
    gamma = 1.0 / (X.shape[1] * X.var())
    slots = list(range(0, 900, 37))
    rows = store_rows(X, slots, "rbf", gamma=gamma)
    np.testing.assert_array_equal(rows, rbf_rows_in_numpy(X, slots, gamma))


def _ulps_from_exp(got, args):
    """|got - exp(args)| in units in the last place of the double nearest exp(args).

    exp is taken in long double where that is wider than double (x86-64:
    64 bits of mantissa), so the reference's own error is negligible.
    """
    wide = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
    want = np.exp(args.astype(np.longdouble)) if wide else np.exp(args)
    unit = np.spacing(want.astype(np.float64)).astype(want.dtype)
    return np.abs(got.astype(want.dtype) - want) / unit, wide


def exp_via_store(x):
    """exp as the compiled rbf rows compute it, at arguments close to `x` (all <= 0).

    One feature, gamma = 1: the row of the point 0 holds
    exp(-max(0 + t^2 - 2 (0 t), 0)) = exp(-t^2) at the point t. With
    t = sqrt(-x) the argument -t^2 is x up to the rounding of the square;
    returns the arguments the row used and its values.
    """
    t = np.sqrt(-np.asarray(x, dtype=np.float64))
    store = _cp_core.KernelStore(1, "rbf", gamma=1.0)
    store.append(np.ascontiguousarray(np.concatenate([[0.0], t])[:, None]))
    return -(t * t), store.get_row(0)[1:]


def test_eco_exp_is_within_two_units_in_the_last_place():
    # the range of an rbf kernel value, and small arguments (values near 1)
    rng = np.random.default_rng(3)
    x = np.concatenate([-rng.uniform(0.0, 708.0, 400_000), -rng.uniform(0.0, 1e-6, 20_000),
                        -np.logspace(-300, 2.85, 5_000), [0.0, -1e-300]])
    args, got = exp_via_store(x)
    np.testing.assert_array_equal(got, eco_exp_numpy(args))
    # measured on 2.2 million arguments: at most 1.12 units from exp taken in
    # long double (1.0 from NumPy's exp, itself within about a unit)
    ulps, wide = _ulps_from_exp(got, args)
    assert ulps.max() <= (2.0 if wide else 3.0)
    assert got[-2] == 1.0 and got[-1] == 1.0  # exp(0) is exactly 1


def test_eco_exp_subnormal_and_underflow():
    args, got = exp_via_store([-708.0, -720.0, -740.0, -744.4, -745.2, -760.0, -1e4])
    np.testing.assert_array_equal(got, eco_exp_numpy(args))
    # a subnormal result is rounded once, as a product: within a step or two
    # (a unit in the last place of a subnormal is the smallest subnormal)
    ulps, wide = _ulps_from_exp(got, args)
    assert ulps.max() <= (2.0 if wide else 3.0)
    assert got[-1] == 0.0 and got[-2] == 0.0 and got[-3] == 0.0
