"""The protocol of the experiment: datasets, splits, methods, metrics, targets.

Per trial ``t`` (seed ``seed + t``):

1. Split the data into train and test, stratified (digits: 1,437 / 360 of
   the 1,797 images; mnist: 8,000 / 2,000 of the 10,000 test-set images).
2. Split train in two stratified halves. The *Phi part* plays the role of
   data not subject to deletion (public or consented data): the CNN is
   trained on it and its ``features`` become Phi. The other half is C_CP, the
   deletable data the CP head is trained on. Phi's lineage (the Phi part's
   ids) is stated to the model, and it is disjoint from C_CP, so requests
   drawn from C_CP are served by the head alone (lines 1-6 of the algorithm).
3. The test set is split in two halves: the attack of the membership
   inference trains on the first (non-members), ``MIA(D_test)`` is measured
   on the second.
4. For each request size ``k`` and each scenario, D_f is drawn: "random" from
   all of C_CP, "worst-case" only from the support vectors (margin or error
   vectors of any head) of the fitted head. Each method then serves D_f:

   - NR: :class:`eco.nn.NaiveRetraining` fitted on train, then retrained from
     scratch (same seed, recipe and epochs) on train minus D_f; predicts with
     its own softmax. Time: the retraining.
   - ECO_i: ``ECO.unlearn(D_f, batch=False)``: one CP decrement per example.
   - ECO: ``ECO.unlearn(D_f, batch=True)``: one multi-point CP decrement.
   - head-NR: a new head fitted from scratch on the features of C_CP minus
     D_f, Phi fixed, with the same parameters (:func:`refit_frozen`, which
     are the head's own: its gamma is numeric, see below): the exactness
     reference.
   - original: the ECO model before serving D_f (no time).

   Times of ECO_i and ECO are those of ``unlearn`` with ``audit=False`` (the
   update alone); the head's KKT violation is measured afterwards.

The head is ``CPSVM(C=head_C, gamma=HEAD_GAMMA rule)``: its RBF gamma is
``"scale"`` resolved once per trial on Phi's own training features
(``1 / (n_features * var(features[phi_ids]))``, :func:`eco.nn.scale_gamma`),
data that is not subject to deletion. The head therefore never depends on
C_CP through a hyper-parameter, unlearning stays on the fast exact CP path
(milliseconds), and head-NR is the same ``CPSVM`` refitted from scratch on
C_CP minus D_f with the same parameters. (With ``gamma="scale"`` on C_CP,
every request would re-solve the head: exact, but the cost of a refit.)

Aggregation (one rule for tables, plots and targets): every metric is
measured once per trial; a figure is the mean over trials of the per-trial
values, with their sample standard deviation (ddof=1) as spread. A ratio
(speed-up) is computed per trial, then averaged: the mean of ratios.
"""

import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
from sklearn.model_selection import train_test_split

from eco import CPSVM
from eco.exceptions import DataFormatError, InvalidInputError
from eco.nn.features import extract_features
from eco.nn.model import ECO, scale_gamma
from eco.nn.networks import feature_extractor, make_network
from eco.nn.training import TrainingConfig, train_network
from eco.testing import frozen_params

__all__ = [
    "METHODS",
    "UNLEARNING_METHODS",
    "SCENARIOS",
    "DEFAULT_SIZES",
    "METRICS",
    "BEST_RULES",
    "AGGREGATION",
    "HEAD_GAMMA",
    "DatasetSetup",
    "DATASETS",
    "CCP_FRACTION",
    "ccp_size",
    "MNIST_IMAGE_SHAPE",
    "AcceptanceTargets",
    "DEFAULT_TARGETS",
    "load_dataset",
    "frozen_head_parameters",
    "refit_frozen",
    "Trial",
]

#: The methods, in table order. "original" is the model before unlearning.
METHODS = ("NR", "ECO_i", "ECO", "head-NR", "original")
UNLEARNING_METHODS = ("NR", "ECO_i", "ECO", "head-NR")
SCENARIOS = ("random", "worst-case")
DEFAULT_SIZES = (5, 10, 20, 30, 40, 50)

#: The aggregation rule, quoted by every table, plot and the targets.
AGGREGATION = (
    "mean ± standard deviation over trials of the per-trial values (ratios such as the "
    "speed-up are computed per trial, then averaged)"
)

#: How the head's gamma is chosen, quoted by the settings and the report.
HEAD_GAMMA = (
    "the head's RBF gamma is \"scale\" resolved on Phi's own training features (the Phi part, not subject "
    "to deletion): gamma = 1 / (n_features * var(features[phi_ids])), a number per trial, so the head never "
    "depends on C_CP through a hyper-parameter, unlearning stays on the fast exact CP path, and head-NR is "
    "the same CPSVM refitted from scratch on C_CP minus D_f with the same parameters"
)

#: metric key -> (title, file stem, how the best is chosen, number format)
METRICS = {
    "test_accuracy": ("Test accuracy (%)", "test_accuracy", "max", "percent"),
    "forget_accuracy": ("Accuracy on D_f (%)", "forget_accuracy", "gap_accuracy", "percent"),
    "time_s": ("Wall time of serving D_f (s)", "time", "min", "seconds"),
    "speedup": ("Speed-up over NR (NR time / method time)", "speedup", "max", "speedup"),
    "mia_forget": ("MIA(D_f)", "mia_forget", "gap_mia", "fraction"),
    "mia_test": ("MIA(D_test)", "mia_test", "gap_mia", "fraction"),
    "mia_gap": ("|MIA(D_f) - MIA(D_test)|", "mia_gap", "min", "fraction"),
    "max_decision_diff": ("Largest |decision value - head-NR's| on the test set", "decision_diff", "min", "scientific"),
}

BEST_RULES = {
    "max": "bold: the highest mean",
    "min": "bold: the lowest mean",
    "gap_accuracy": "bold: the smallest |accuracy on D_f - test accuracy| (an unlearned example should look like an unseen one)",
    "gap_mia": "bold: the smallest |MIA(D_f) - MIA(D_test)| (an unlearned example should look like an unseen one)",
}


@dataclasses.dataclass(frozen=True)
class DatasetSetup:
    """How one dataset is split, and the recipe of its network and head.

    Attributes
    ----------
    n_train, n_test : int
        Sizes of the train/test split.
    training : TrainingConfig
        The recipe of Phi's network and of NR (seed set per trial).
    quick_epochs : int
        Epochs of ``quick=True`` runs.
    head_C : float
        C of the CP head.
    threads : int
        Default ``torch.set_num_threads`` of the run.
    """

    n_train: int
    n_test: int
    training: TrainingConfig
    quick_epochs: int
    head_C: float
    threads: int


# One torch thread for both datasets: the networks are small, so a second
# intra-op thread gains little, and on a shared or busy CPU torch's spinning
# worker threads oversubscribe the cores (training was measured 10-40x slower
# with 2 threads than with 1 on a loaded 2-core machine).
DATASETS = {
    "digits": DatasetSetup(1437, 360, TrainingConfig(epochs=12, lr=2e-2, batch_size=128, optimizer="adam"), 3, 10.0, 1),
    "mnist": DatasetSetup(8000, 2000, TrainingConfig(epochs=8, lr=3e-3, batch_size=64, optimizer="adam"), 1, 10.0, 1),
}


#: The share of the training set that is C_CP (the rest trains Phi); the
#: ``test_size`` of the second split of :class:`Trial`.
CCP_FRACTION = 0.5


def ccp_size(n_train: int) -> int:
    """The number of rows of C_CP that :class:`Trial` draws from ``n_train`` training rows.

    scikit-learn's ``train_test_split`` with a float ``test_size`` puts
    ``ceil(test_size * n)`` rows on the test side, which is C_CP here: 719
    of digits' 1,437 training rows (Phi's part has 718).
    """
    return math.ceil(CCP_FRACTION * n_train)


#: The shape of an MNIST image: the MNIST network's input.
MNIST_IMAGE_SHAPE = (28, 28)


@dataclasses.dataclass(frozen=True)
class AcceptanceTargets:
    """The checks the report makes on the random requests (all per the aggregation rule).

    Attributes
    ----------
    min_speedup : float
        ECO's speed-up over NR at ``at_size`` must be at least this.
    at_size : int
        The request size of the speed-up target (the largest size run is
        used, with a note, when this one was not run).
    max_accuracy_drop_points : float
        ECO's test accuracy may be at most this many points below NR's, at every size.
    max_mia_gap : float
        ``|mean(MIA(D_f) - MIA(D_test))|`` at most this, the signed gap
        pooled over every forgotten example (over trials and sizes, weighted
        by |D_f|), checked for ECO and, by the same rule, for NR. Signed and
        pooled because an exactly unlearned model's gap is noise of mean 0:
        MIA(D_f) of 5 examples moves in steps of 0.2, and averaging
        absolute per-trial gaps would measure that noise, not leakage.
        The same figure of the original model (which still holds D_f) is
        reported beside it as the attack's power, with the sampling noise of
        a pooled fraction, 0.5 / sqrt(forgotten examples): when the original
        model's gap is within two noise levels of 0, the attack cannot tell
        members here and the target shows nothing either way.
    max_decision_diff : float
        Exactness: the largest |decision value - head-NR's| on the test set
        of ECO and ECO_i, over every trial and size, at most this.
    """

    min_speedup: float
    at_size: int = 50
    max_accuracy_drop_points: float = 1.0
    max_mia_gap: float = 0.05
    max_decision_diff: float = 1e-6


DEFAULT_TARGETS = {"digits": AcceptanceTargets(min_speedup=100.0), "mnist": AcceptanceTargets(min_speedup=300.0)}


def load_dataset(name: str, data_dir: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Load a dataset of the experiment (never downloads).

    Parameters
    ----------
    name : {"digits", "mnist"}
    data_dir : str or os.PathLike, optional
        For mnist: the folder of the IDX files; default ``ECO_MNIST_DIR``.

    Returns
    -------
    X : numpy.ndarray of shape (n, n_pixels), float64 in [0, 1]
    y : numpy.ndarray of shape (n,), int

    Raises
    ------
    DataFormatError
        MNIST files that are valid IDX but do not hold 28x28 images (the
        input of the MNIST network), naming the images' file.
    """
    from eco import datasets

    if name == "digits":
        return datasets.load_digits()
    if name == "mnist":
        X, y = datasets.load_mnist(data_dir)
        _check_mnist_images(X, data_dir)
        return X, y
    raise InvalidInputError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")


def _check_mnist_images(X, data_dir):
    """Refuse images of another shape now, not as a shape error deep inside the first trial."""
    from eco import datasets

    pixels = math.prod(MNIST_IMAGE_SHAPE)
    if X.ndim == 2 and X.shape[1] == pixels:
        return
    folder = Path(data_dir if data_dir is not None else datasets.default_mnist_dir() or "").expanduser()
    images_path = datasets._mnist_files(folder, "t10k")[0]  # the file load_mnist read (.gz or not)
    rows, cols = MNIST_IMAGE_SHAPE
    raise DataFormatError(
        f"{images_path}: expected MNIST images of {rows}x{cols} = {pixels} pixels (the MNIST network's "
        f"input), got {X.shape[1] if X.ndim == 2 else X.shape} pixels per image"
    )


def frozen_head_parameters(head: Any) -> Dict[str, Any]:
    """Parameters that refit ``head`` from scratch with its resolved hyper-parameters.

    The values the head resolved (``gamma_``, ``class_weight_``) replace
    ``"scale"``/``"auto"``/``"balanced"``: :func:`eco.testing.frozen_params`.
    """
    return frozen_params(head)


def refit_frozen(head: Any, X: np.ndarray, y: np.ndarray, ids: Any) -> CPSVM:
    """The same estimator fitted from scratch on ``X, y`` with ``head``'s resolved hyper-parameters."""
    return CPSVM(**frozen_head_parameters(head)).fit(X, y, ids=list(ids))


class Trial:
    """The data split, Phi and the fitted base model of one trial."""

    def __init__(self, X, y, setup: DatasetSetup, config: TrainingConfig, seed: int, network_name: str, device):
        self.X, self.y = X, y
        self.config, self.seed, self.device = config, seed, device
        self.head_C, self.network_name = setup.head_C, network_name
        train_ids, test_ids = train_test_split(
            np.arange(len(y)), train_size=setup.n_train, test_size=setup.n_test, stratify=y, random_state=seed
        )
        phi_ids, ccp_ids = train_test_split(train_ids, test_size=CCP_FRACTION, stratify=y[train_ids],
                                            random_state=seed)
        attack_ids, eval_ids = train_test_split(test_ids, test_size=0.5, stratify=y[test_ids], random_state=seed)
        self.train_ids, self.test_ids = np.sort(train_ids), np.sort(test_ids)
        self.phi_ids, self.ccp_ids = np.sort(phi_ids), np.sort(ccp_ids)
        self.attack_ids, self.eval_ids = np.sort(attack_ids), np.sort(eval_ids)

    def network(self):
        """A fresh network of this trial (same seed, same initial weights every call)."""
        return make_network(self.network_name, n_classes=int(self.y.max()) + 1, seed=self.seed)

    def train_phi(self, phi_ids):
        net = self.network()
        history = train_network(net, self.X[phi_ids], self.y[phi_ids], self.config)
        return feature_extractor(net), history

    def prepare(self):
        """Train Phi, extract every row's features once, fit the base model."""
        self.phi, history = self.train_phi(self.phi_ids)
        self.phi_training_s = history.wall_time_s
        self.features = extract_features(self.phi, self.X, device=self.device)
        # resolved on data not subject to deletion: see HEAD_GAMMA
        self.gamma = scale_gamma(self.features[self.phi_ids])
        start = time.perf_counter()
        self.base = self.eco_model()
        self.head_fit_s = time.perf_counter() - start
        self.support_ids = np.sort(np.asarray(self.base.head_.support_ids_, dtype=np.int64))

    def phi_trainer(self, remaining_ids):
        # Never called here (requests come from C_CP, disjoint from the
        # lineage), but it is what line 7 would run: Phi from scratch.
        return self.train_phi(np.asarray(remaining_ids, dtype=np.int64))[0]

    def eco_model(self) -> ECO:
        """A fresh ECO model on C_CP (fitting is deterministic, so every copy is the same)."""
        model = ECO(self.phi, CPSVM(C=self.head_C, gamma=self.gamma), phi_trainer=self.phi_trainer, device=self.device)
        return model.fit(self.X[self.ccp_ids], self.y[self.ccp_ids], ids=self.ccp_ids,
                         feature_ids=self.phi_ids, features=self.features[self.ccp_ids])
