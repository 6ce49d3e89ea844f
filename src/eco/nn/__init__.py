"""ECO for PyTorch: a feature extractor Phi under an exact CP SVM head.

This subpackage is the only part of eco that imports torch (install it with
``pip install eco[torch]``).

Modules
-------
networks
    Small CNNs for the 8x8 digits and 28x28 MNIST, split into Phi and a
    final linear layer; :func:`feature_extractor` returns Phi.
training
    The deterministic training recipe shared by Phi and the NR baseline.
data
    What every entry point accepts: arrays, tensors, Datasets, DataLoaders
    (read in order; a shuffling loader is refused where order matters).
features
    The one batched inference loop (features and NR's softmax), which gives
    the user's module back untouched, and Phi's fingerprint.
model
    :class:`ECO`, the :class:`UnlearningResult` of a request, and
    :func:`scale_gamma` (a numeric head gamma resolved on data not subject
    to deletion, which keeps unlearning on the fast exact path).
baseline
    :class:`NaiveRetraining` (NR).
mia
    Membership inference attack.
experiment
    The paper's Tables 2 and 3 rebuilt (also ``eco experiment``): a
    subpackage of protocol, run, summary, report and plots.
"""

try:
    import torch  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "eco.nn needs PyTorch; install it with `pip install eco[torch]` (or `pip install torch`)"
    ) from error

from eco.nn.baseline import NaiveRetraining, predict_proba
from eco.nn.features import extract_features, module_fingerprint, resolve_device
from eco.nn.mia import MembershipInferenceAttack, label_free_outputs, membership_rate
from eco.nn.model import ECO, HEAD_METHODS, UnlearningResult, scale_gamma
from eco.nn.networks import DigitsCNN, MnistCNN, feature_extractor, make_network
from eco.nn.training import TrainingConfig, TrainingHistory, train_network

__all__ = [
    "ECO",
    "UnlearningResult",
    "HEAD_METHODS",
    "scale_gamma",
    "module_fingerprint",
    "NaiveRetraining",
    "predict_proba",
    "extract_features",
    "resolve_device",
    "MembershipInferenceAttack",
    "label_free_outputs",
    "membership_rate",
    "DigitsCNN",
    "MnistCNN",
    "feature_extractor",
    "make_network",
    "TrainingConfig",
    "TrainingHistory",
    "train_network",
]
