"""Exceptions raised by eco.

Every error a user can trigger with bad input derives from :class:`EcoError`
and from the built-in exception a scikit-learn user would expect
(``ValueError`` for bad values, ``KeyError`` for unknown ids), so both
``except eco.exceptions.UnknownIdError`` and ``except KeyError`` work.
A call that raises one of these leaves the model exactly as it was.
"""

__all__ = [
    "EngineError",
    "EcoError",
    "InvalidInputError",
    "InvalidTypeError",
    "UnknownIdError",
    "DuplicateIdError",
    "UnseenLabelError",
    "ModelFileError",
    "DataFormatError",
    "UnlearningError",
    "FeatureExtractorChangedError",
    "ReferenceLimitError",
]


class EcoError(Exception):
    """Base class of every error raised by eco."""


class InvalidInputError(EcoError, ValueError):
    """Input with the wrong shape, dtype, non-finite values or bad parameters."""


class InvalidTypeError(InvalidInputError, TypeError):
    """Input of a type eco cannot use (sparse matrices, objects that are not numbers).

    Also a ``TypeError``, as scikit-learn and NumPy raise for such input.
    """


class UnknownIdError(EcoError, KeyError):
    """An id that the model never saw, or one that has already been removed."""

    def __str__(self):  # KeyError quotes its argument; show the message as is
        return str(self.args[0]) if self.args else ""


class DuplicateIdError(EcoError, ValueError):
    """The same id given twice in one call, or an id that is already active."""


class UnseenLabelError(EcoError, ValueError):
    """A label in ``increment`` that is not one of the classes seen in ``fit``."""


class ModelFileError(EcoError, ValueError):
    """A saved model that is truncated, tampered with, of another version, or not eco's."""


class DataFormatError(EcoError, ValueError):
    """A data file (for example an IDX file) that is corrupt or not of the expected format."""


class UnlearningError(EcoError, RuntimeError):
    """An update that could not be completed; the model is left as it was before the call."""


class EngineError(UnlearningError):
    """The compiled engine could not complete an operation.

    Raised by the def entry points of :mod:`eco._cp_core` instead of returning
    a status code, so that no caller can ignore one. The head set turns a
    failed path into an exact solve from scratch; the exception reaches users
    only when that is impossible too.

    Attributes
    ----------
    status : int
        One of the ``STATUS_*`` codes of :mod:`eco._cp_core` (never STATUS_OK).
    message : str
    """

    def __init__(self, status, message):
        super().__init__(f"{message} (engine status {int(status)})")
        self.status = int(status)
        self.message = message

    def __reduce__(self):
        return type(self), (self.status, self.message)


class ReferenceLimitError(EcoError, RuntimeError):
    """The independent reference solve (:mod:`eco.reference`) hit its iteration or time bound.

    No reference is then available: a solver stopped early is never presented
    as one. Raised by :func:`eco.reference.reference_solve` and by
    ``verify(reference=True)``.

    Attributes
    ----------
    n_iter : int
        Iterations libsvm ran in its last attempt.
    elapsed : float
        Seconds spent in the solve.
    """

    def __init__(self, message, n_iter=0, elapsed=0.0):
        super().__init__(message)
        self.n_iter = int(n_iter)
        self.elapsed = float(elapsed)

    def __reduce__(self):
        return type(self), (self.args[0], self.n_iter, self.elapsed)


class FeatureExtractorChangedError(EcoError, RuntimeError):
    """The feature extractor of an ECO model changed since ``fit`` (weights or buffers)."""
