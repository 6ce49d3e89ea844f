"""Benchmark workloads: MNIST features and a synthetic stand-in for deep features.

Moved out of the public :mod:`eco.datasets` (which keeps the IDX reader and
:func:`eco.datasets.load_mnist`): these are the data of the benchmarks, not
part of eco's API. Nothing here downloads anything; every generator is
deterministic for its seed.

- :func:`mnist_features`: the MNIST test set, pixels in [0, 1], PCA, one digit
  against the rest, with a synthetic fallback of the same shape when the
  files are absent;
- :func:`mnist_digits`: the same rows with their ten digits (multi-class);
- :func:`gaussian_mixture`: a seeded Gaussian mixture in 64 dimensions, the
  stand-in for the penultimate-layer features of a network, of any size;
- :func:`mnist_dir`: where the MNIST files are (``ECO_MNIST_DIR``, else
  ``../shared/data/mnist`` beside the repository).
"""

import numbers
from pathlib import Path

import numpy as np

from eco.datasets import default_mnist_dir, load_mnist
from eco.exceptions import InvalidInputError

#: The MNIST test set beside the repository (``<repo>/../shared/data/mnist``).
SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
#: The MNIST test set has 10,000 rows.
MNIST_ROWS = 10_000
# The synthetic stand-in for the MNIST test set: same number of rows and pixels.
_SYNTHETIC_ROWS = MNIST_ROWS
_SYNTHETIC_PIXELS = 784


def mnist_dir():
    """The MNIST directory used by the benchmarks, and where it came from.

    Returns
    -------
    path : pathlib.Path or None
        ``ECO_MNIST_DIR`` when it names a directory, else the shared
        ``../shared/data/mnist`` when it exists, else None (synthetic data).
    origin : str
    """
    env = default_mnist_dir()
    if env is not None:
        return env, "ECO_MNIST_DIR"
    if SHARED_MNIST.is_dir():
        return SHARED_MNIST, "../shared/data/mnist"
    return None, "no MNIST directory"


def _check_count(name, value, low, high=None):
    """Validate an integer parameter in [low, high]; return it as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise InvalidInputError(f"{name} must be {bound}, got {value}")
    return value


def _has_mnist_files(data_dir):
    """True when `data_dir` holds either file of the MNIST test set (plain or .gz).

    One file without the other is left to :func:`eco.datasets.load_mnist` to
    report (FileNotFoundError), never replaced by the synthetic set.
    """
    stems = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    return any((data_dir / (stem + ext)).is_file() for stem in stems for ext in ("", ".gz"))


def _synthetic_pool():
    """A fixed synthetic stand-in for the MNIST test set.

    10,000 rows of 784 "pixels" in [0, 1] with ten balanced classes, generated
    by scikit-learn's ``make_classification`` with a fixed random state, so it
    is the same on every call.
    """
    from sklearn.datasets import make_classification

    X, labels = make_classification(
        n_samples=_SYNTHETIC_ROWS,
        n_features=_SYNTHETIC_PIXELS,
        n_informative=40,
        n_redundant=20,
        n_repeated=0,
        n_classes=10,
        n_clusters_per_class=1,
        class_sep=3.0,
        flip_y=0.0,
        random_state=0,
    )
    low, high = X.min(axis=0), X.max(axis=0)
    X = (X - low) / (high - low)  # each feature to [0, 1], like pixels
    return X, labels.astype(np.int64)


def mnist_features(data_dir=None, *, n=5000, n_components=50, positive_digit=0, seed=0):
    """The benchmark workload: MNIST pixels in [0, 1], PCA, one digit versus the rest.

    Reads the MNIST test set (``t10k`` files, see :func:`load_mnist`) from
    `data_dir`, draws `n` of its rows at random, projects them on their first
    `n_components` principal components and labels them +1 (the digit is
    `positive_digit`) or -1 (any other digit).

    If `data_dir` is None, or does not exist, or holds neither of the two
    files, a synthetic set of the same shape (10,000 rows of 784 values in
    [0, 1], ten balanced classes, generated with a fixed random state) is used
    instead, and the returned `source` says so. Nothing is downloaded.

    Parameters
    ----------
    data_dir : str, os.PathLike or None, default=None
        The directory holding the MNIST IDX files, or None for the synthetic
        set. Pass :func:`default_mnist_dir` to honour ``ECO_MNIST_DIR``.
    n : int, default=5000
        Number of rows, 1 <= n <= 10,000 (the number of rows available).
    n_components : int, default=50
        Number of principal components, 1 <= n_components <= min(n, 784).
    positive_digit : int, default=0
        The digit (0 to 9) labelled +1.
    seed : int, default=0
        Seed of the row selection: the first `n` entries of
        ``numpy.random.default_rng(seed).permutation(10000)``. The same
        arguments always give identical arrays.

    Returns
    -------
    X : ndarray of shape (n, n_components), dtype float64
        The PCA projection (scikit-learn ``PCA`` with ``svd_solver="full"``)
        of the selected rows' pixels, fitted on those rows.
    y : ndarray of shape (n,), dtype int64
        +1 where the digit is `positive_digit`, -1 elsewhere.
    source : {"mnist", "synthetic"}
        Which data the rows come from.

    Raises
    ------
    FileNotFoundError
        If `data_dir` holds one of the two MNIST files but not the other.
    eco.exceptions.DataFormatError
        If the MNIST files are present but corrupt (they are never silently
        replaced by the synthetic set).
    eco.exceptions.InvalidInputError
        If a parameter is out of range.

    Examples
    --------
    >>> from workloads import mnist_features
    >>> X, y, source = mnist_features(None, n=500, n_components=20)
    >>> X.shape, sorted(set(y.tolist())), source
    ((500, 20), [-1, 1], 'synthetic')
    """
    from sklearn.decomposition import PCA

    n = _check_count("n", n, 1)
    n_components = _check_count("n_components", n_components, 1)
    positive_digit = _check_count("positive_digit", positive_digit, 0, 9)
    seed = _check_count("seed", seed, 0)

    source = "synthetic"
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if data_dir.is_dir() and _has_mnist_files(data_dir):
            source = "mnist"
    if source == "mnist":
        pixels, digits = load_mnist(data_dir, kind="t10k")
    else:
        pixels, digits = _synthetic_pool()

    total, n_pixels = pixels.shape
    n = _check_count("n", n, 1, total)
    n_components = _check_count("n_components", n_components, 1, min(n, n_pixels))
    rows = np.random.default_rng(seed).permutation(total)[:n]
    X = PCA(n_components=n_components, svd_solver="full", random_state=0).fit_transform(
        pixels[rows]
    )
    y = np.where(digits[rows] == positive_digit, 1, -1).astype(np.int64)
    return np.ascontiguousarray(X, dtype=np.float64), y, source


def mnist_digits(data_dir, n, seed=0):
    """The ten digits of the rows :func:`mnist_features` draws with the same arguments.

    Returns
    -------
    digits : ndarray of shape (n,), dtype int64
    """
    _, y, source = mnist_features(data_dir, n=n, seed=seed)
    if source == "mnist":
        _, labels = load_mnist(Path(data_dir).expanduser(), kind="t10k")
    else:
        _, labels = _synthetic_pool()
    # mnist_features takes the first n of this permutation (documented)
    digits = labels[np.random.default_rng(seed).permutation(len(labels))[:n]]
    assert np.array_equal(digits == 0, y == 1)  # the rows mnist_features drew
    return digits


def gaussian_mixture(n, *, n_features=64, n_components=20, separation=1.0, seed=0):
    """A seeded Gaussian mixture: the synthetic stand-in for deep features.

    `n_components` unit-variance Gaussian clusters in `n_features` dimensions,
    with centres drawn once (from `seed`) as ``separation * N(0, I)``, so that
    neighbouring clusters overlap (a few percent of the rows end as error
    vectors at n = 5,000: 727 margin, 77 error). The first half of the clusters is labelled
    +1, the rest -1. Row i depends only on (`seed`, i): the first n rows of a
    larger draw are the smaller draw, so every size is a prefix of the next.

    Parameters
    ----------
    n : int
        Number of rows, at least 2.
    n_features, n_components : int
    separation : float
        Scale of the cluster centres relative to the within-cluster spread.
    seed : int

    Returns
    -------
    X : ndarray of shape (n, n_features), dtype float64
    y : ndarray of shape (n,), dtype int64, values in {-1, +1}
    """
    n = _check_count("n", n, 2)
    rng = np.random.default_rng(seed)
    centres = separation * rng.standard_normal((n_components, n_features))
    # rows are generated in fixed blocks from per-block seeds: prefix-stable
    block = 4096
    X = np.empty((n, n_features))
    cluster = np.empty(n, dtype=np.int64)
    for start in range(0, n, block):
        stop = min(start + block, n)
        brng = np.random.default_rng([seed, start // block])
        full_c = brng.integers(0, n_components, block)
        full_x = brng.standard_normal((block, n_features))
        cluster[start:stop] = full_c[:stop - start]
        X[start:stop] = centres[full_c[:stop - start]] + full_x[:stop - start]
    y = np.where(cluster < n_components // 2, 1, -1).astype(np.int64)
    return X, y
