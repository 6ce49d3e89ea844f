"""eco: exact machine unlearning with Cauwenberghs-Poggio SVM heads.

The main entry point is :class:`eco.CPSVM`, an SVM classifier whose
``decrement(ids)`` removes examples exactly: the model afterwards equals the
one trained from scratch without them.
"""

from .exceptions import (
    DataFormatError,
    DuplicateIdError,
    EcoError,
    EngineError,
    InvalidInputError,
    ModelFileError,
    UnknownIdError,
    UnlearningError,
    UnseenLabelError,
)
from ._version import __version__
from .persistence import save_model
from .receipt import UnlearningReceipt
from .svm import CPSVM
from ._loading import load, load_model

__all__ = [
    "CPSVM",
    "UnlearningReceipt",
    "load",
    "load_model",
    "save_model",
    "EcoError",
    "EngineError",
    "InvalidInputError",
    "UnknownIdError",
    "DuplicateIdError",
    "UnseenLabelError",
    "ModelFileError",
    "DataFormatError",
    "UnlearningError",
    "__version__",
]
