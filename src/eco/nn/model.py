"""The ECO model: a PyTorch feature extractor Phi under an exact CP SVM head.

``f(x) = head(Phi(x))``. The head is trained on C_CP, the examples that may be
deleted, and an unlearning request is served by the algorithm of
``shared/design/eco.md`` (the paper's, in our reading):

    1  if D_f meets C_CP:
    2      if D_f meets M or I (margin or error vectors of any binary head):
    3          unlearn D_f from the heads by CP decrement
    4          C_CP <- C_CP minus D_f
    5      else:
    6          C_CP <- C_CP minus D_f        (reserve vectors: no head changes)
    7      refresh Phi if and only if Phi was trained on any example of D_f
    8  else:
    9      nothing changes

Line 7 is applied whenever D_f meets Phi's lineage, also for an example that
Phi was trained on but the head was not: otherwise such a request would be
ignored and the model would still carry the example in Phi's weights.

Line 6 holds for a head whose hyper-parameters are numbers. A head that
resolves one from its rows (``CPSVM(gamma="scale")``, the default head) must
move it with C_CP to stay exact, so every request re-solves every head (the
cost of a head refit) and is reported as ``"decrement"``; a numeric gamma,
for example :func:`scale_gamma` of Phi's features on Phi's own training
data, keeps lines 3 and 6 on the fast CP path.

What the model promises and what it asks of the caller
-------------------------------------------------------
- Lineage is stated, never assumed: :meth:`ECO.fit` and :meth:`ECO.increment`
  need ``feature_ids``, the ids Phi was trained on (``()`` states that Phi saw
  none of the deletable data). Exactness of the whole model rests on it.
- The user's Phi is never changed: it runs in eval mode without gradients and
  every submodule's mode and its device are given back as they were
  (:func:`eco.nn.features.untouched`); eco never trains it.
- Phi must not change behind the model's back: a fingerprint of its
  parameters and buffers is taken at ``fit`` and checked before every use;
  a change raises :class:`~eco.exceptions.FeatureExtractorChangedError`.
- The head is an eco estimator with ids (``eco.CPSVM`` or one with the same
  public API: ``fit(X, y, ids=)``, ``increment``, ``decrement``,
  ``decision_function``, ``predict``, ``score``, ``ids_``, ``support_ids_``,
  ``classes_``, ``get_params``, ``save``); anything else is refused at
  construction.
"""

import dataclasses
import io
import json
import math
import numbers
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from sklearn.exceptions import NotFittedError

from eco._validation import check_tolerance, id_kind
from eco.exceptions import (
    DuplicateIdError,
    FeatureExtractorChangedError,
    InvalidInputError,
    ModelFileError,
    UnknownIdError,
    UnlearningError,
)
from eco.nn import storage
from eco.persistence import storable_id_kind
from eco.nn.data import collect
from eco.nn.features import extract_features, module_fingerprint, resolve_device
from eco.nn.locking import ReadWriteLock

__all__ = ["ECO", "UnlearningResult", "PATHS", "HEAD_METHODS", "scale_gamma"]

#: The ways a request can be served, see :class:`UnlearningResult`.
PATHS = ("none", "reserve_only", "decrement", "retrain_phi")

_MANIFEST = storage.MANIFEST
_EXTRACTOR_FILE = storage.EXTRACTOR_FILE
_HEAD_FILE = storage.HEAD_FILE
_INPUTS_FILE = storage.INPUTS_FILE
_LABELS_FILE = storage.LABELS_FILE
_FORMAT = storage.FORMAT
_FORMAT_VERSION = storage.FORMAT_VERSION
# Publishing a staged save renames folders: one at a time in the process, so
# two saves to the same path (from any models) cannot interleave their renames.
_PUBLISH_LOCK = threading.Lock()

#: The public methods a head must have (the contract of :class:`ECO`).
HEAD_METHODS = ("fit", "increment", "decrement", "decision_function", "predict", "score", "get_params", "save")


class _Unstated:
    """The default of ``feature_ids``: the caller said nothing about Phi's lineage."""

    def __repr__(self) -> str:
        return "<unstated>"


_UNSTATED: Any = _Unstated()

_LINEAGE_MESSAGE = (
    "feature_ids must be stated: the ids of the examples Phi was trained on. Unlearning is exact "
    "for the whole model only if requests that touch them retrain Phi, so eco cannot assume an "
    "answer; pass feature_ids=() if Phi was trained only on data not subject to deletion "
    "(public or consented data, a pretrained backbone)"
)


@dataclasses.dataclass(frozen=True)
class UnlearningResult:
    """What :meth:`ECO.unlearn` did.

    Attributes
    ----------
    requested_ids : tuple
        The ids of the request, in order, without repetitions.
    removed_ids : tuple
        The ids that were removed from C_CP or from Phi's lineage.
    ignored_ids : tuple
        The ids that are neither in C_CP nor in Phi's lineage; nothing was
        done for them. Not empty only with ``errors="ignore"``: by default
        such ids raise :class:`~eco.exceptions.UnknownIdError`.
    path : {"none", "reserve_only", "decrement", "retrain_phi"}
        ``"none"``: nothing to remove. ``"reserve_only"``: every removed id
        was a reserve vector of every head and no hyper-parameter of the
        head moved, so no head moved. ``"decrement"``: the heads changed,
        because at least one removed id was a margin or error vector (CP
        decrement) or because a hyper-parameter the head resolves from its
        rows moved with them (``gamma="scale"``: every head re-solved
        exactly, the receipt's ``hyper_paths`` says
        ``{"gamma": "resolve_gamma"}``). ``"retrain_phi"``: the
        request touched Phi's lineage, so Phi was retrained without it, the
        features re-extracted and the head refitted (costs like retraining).
    batch : bool
        True when the head served the request as one batch (ECO), False when
        one example at a time (ECO_i).
    exact : bool
        True when the result equals the model trained from scratch without
        the removed ids: every path is exact by construction, and for the
        decrement paths the head's KKT violation after the update is checked
        against :attr:`ECO.kkt_tolerance`.
    wall_time_s : float
        Wall-clock seconds of the whole call.
    receipt : object or None
        The head's receipt of ``decrement`` (None for ``"none"`` and
        ``"retrain_phi"``).
    """

    requested_ids: tuple
    removed_ids: tuple
    ignored_ids: tuple
    path: str
    batch: bool
    exact: bool
    wall_time_s: float
    receipt: object = None

    def to_dict(self) -> Dict[str, Any]:
        """Return the result as a JSON-serialisable dict."""
        receipt = self.receipt
        if receipt is not None and hasattr(receipt, "to_dict"):
            receipt = receipt.to_dict()
        return {
            "requested_ids": list(self.requested_ids),
            "removed_ids": list(self.removed_ids),
            "ignored_ids": list(self.ignored_ids),
            "path": self.path,
            "batch": self.batch,
            "exact": self.exact,
            "wall_time_s": self.wall_time_s,
            "receipt": receipt,
        }


def _normalize_id(identifier, what):
    if isinstance(identifier, np.generic):
        identifier = identifier.item()
    if isinstance(identifier, float) and math.isnan(identifier):
        raise InvalidInputError(f"{what} contain NaN, which cannot identify an example")
    try:
        hash(identifier)
    except TypeError:
        raise InvalidInputError(
            f"{what} must be hashable, got an element of type {type(identifier).__name__}"
        ) from None
    return identifier


def _normalize_ids(ids, what):
    """Turn one id or a 1-D collection of ids into a list of plain Python ids."""
    if ids is None:
        raise InvalidInputError(f"{what} must be given, got None")
    if isinstance(ids, (str, bytes, numbers.Number, np.generic)):
        ids = [ids]
    elif isinstance(ids, torch.Tensor):
        if ids.dim() > 1:
            raise InvalidInputError(f"{what} must be 1-D, got a tensor of shape {tuple(ids.shape)}")
        ids = ids.reshape(-1).tolist()
    elif isinstance(ids, np.ndarray):
        if ids.ndim > 1:
            raise InvalidInputError(f"{what} must be 1-D, got an array of shape {ids.shape}")
        ids = ids.reshape(-1).tolist()
    else:
        try:
            ids = list(ids)
        except TypeError:
            ids = [ids]  # a single hashable id of some other type
    return [_normalize_id(identifier, what) for identifier in ids]


def _id_key(identifier):
    """What an id is matched by: its value and its kind, as the head matches ids.

    :func:`eco._validation.id_kind`: 3.0 names no id 3, True names no id 1,
    so a request for 3.0 is not served by removing 3 (the head would refuse
    it as unknown, and ECO must decide exactly what the head decides).
    """
    return (id_kind(identifier), identifier)


def _unique_in_order(ids):
    """Ids without repetitions (same value and kind), first occurrence kept."""
    unique = {}
    for identifier in ids:
        unique.setdefault(_id_key(identifier), identifier)
    return list(unique.values())


def _check_values_differ(ids, what):
    """Refuse two ids equal in value but of different kinds (1 and True, 3 and 3.0).

    The core's rule (``CPSVM.increment``): ids match by value and kind, and
    ids of different kinds must differ by value. Otherwise a lineage id 3.0
    beside the C_CP id 3 would be a different example, and a request for 3
    would not retrain the Phi that was trained on "3.0".
    """
    seen = {}
    for identifier in ids:
        known = seen.setdefault(identifier, identifier)
        if id_kind(known) != id_kind(identifier):
            raise InvalidInputError(
                f"{what}: id {identifier!r} equals the id {known!r} of another kind; ids match by value "
                "and kind (3.0 does not name 3, True does not name 1), so ids must differ by value"
            )


def _check_storable_ids(ids, what):
    """Refuse ids that :meth:`ECO.load` could not read back (before anything is written).

    The manifest and the head's file hold the ids the eco format holds: int
    (within int64) and str (:func:`eco.persistence.storable_id_kind`).
    """
    for identifier in ids:
        storable_id_kind(identifier, f"{what}: id")


def _fresh_head(head):
    """An unfitted head with the same parameters (the contract requires get_params)."""
    from sklearn.base import clone

    return clone(head)


def scale_gamma(features: Any) -> float:
    """The RBF gamma that ``gamma="scale"`` resolves on ``features``, as a number.

    ``1 / (n_features * features.var())`` (1.0 for constant features), as
    scikit-learn and :class:`eco.CPSVM` compute it. Resolve it on data that
    is not subject to deletion, typically Phi's features on Phi's own
    training data, and give it to the head: ``CPSVM(gamma=scale_gamma(F))``.
    The head then keeps the fast exact CP paths on unlearning, where
    ``gamma="scale"`` would be resolved on C_CP and move with every request
    (each request then re-solves every head).

    Parameters
    ----------
    features : array-like or torch.Tensor of shape (n_samples, n_features)
        Finite features, at least one row.

    Returns
    -------
    float

    Raises
    ------
    InvalidInputError
        Not a non-empty 2-D array of finite numbers.
    """
    from eco._kernels import resolve_gamma

    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    try:
        features = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"features must be numbers: {error}") from None
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise InvalidInputError(f"features must be a non-empty (n_samples, n_features) array, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise InvalidInputError("features contain NaN or infinite values")
    return float(resolve_gamma("scale", features, "rbf"))


def _default_head():
    from eco import CPSVM  # imported here: the core must not import eco.nn, and vice versa at import time

    return CPSVM()


def _check_head(head):
    """Enforce the head contract (see the module docstring) at construction."""
    import inspect

    missing = [name for name in HEAD_METHODS if not callable(getattr(head, name, None))]
    takes_ids = False
    if callable(getattr(head, "fit", None)):
        try:
            takes_ids = "ids" in inspect.signature(head.fit).parameters
        except (TypeError, ValueError):
            takes_ids = False
    if missing or not takes_ids:
        lacks = ", ".join(missing + ([] if takes_ids else ["fit(..., ids=)"]))
        raise InvalidInputError(
            f"the head must be an eco estimator with ids, such as eco.CPSVM; "
            f"{type(head).__name__} lacks {lacks}. ECO unlearns exactly by CP decrements of the "
            "head, which a scikit-learn estimator or Pipeline does not offer"
        )


def _parse_ids(ids, n_rows, what="ids"):
    """One unique id per row; the default is the row positions 0 .. n-1."""
    if ids is None:
        return list(range(n_rows))
    id_list = _normalize_ids(ids, what)
    if len(id_list) != n_rows:
        raise InvalidInputError(f"got {len(id_list)} {what} for {n_rows} rows of X")
    # The core's rule for new ids (eco._validation.check_new_ids): they must
    # differ by value, so 1 and True, or 3 and 3.0, are the same id twice.
    if len(set(id_list)) != len(id_list):
        seen, repeated = set(), []
        for identifier in id_list:
            if identifier in seen:
                repeated.append(identifier)
            seen.add(identifier)
        raise DuplicateIdError(
            f"{what} must be unique and differ by value (1 and True, 3 and 3.0 count as the same id); "
            f"repeated: {repeated[:10]}"
        )
    return id_list


def _stated_lineage(feature_ids):
    if feature_ids is _UNSTATED or feature_ids is None:
        raise InvalidInputError(_LINEAGE_MESSAGE)
    lineage = tuple(_unique_in_order(_normalize_ids(feature_ids, "feature_ids")))
    _check_values_differ(lineage, "feature_ids")
    return lineage


def _wipe(array):
    """Overwrite a row the model owned before dropping it (erasure, not just release)."""
    if isinstance(array, np.ndarray) and array.flags.writeable and array.flags.owndata:
        array.fill(0)


class ECO:
    """Exact unlearning for a deep classifier: a PyTorch Phi under a CP SVM head.

    Parameters
    ----------
    feature_extractor : torch.nn.Module
        Phi, mapping a batch of inputs to ``(N, n_features)`` features (see
        :mod:`eco.nn.features` for the accepted output shapes).
    head : eco estimator, optional
        The head, default ``eco.CPSVM()``: an eco estimator with ids (see the
        module docstring for the contract; a scikit-learn ``SVC`` or a
        ``Pipeline`` is refused with :class:`~eco.exceptions.InvalidInputError`).
        It is cloned at :meth:`fit`; the fitted head is :attr:`head_`.
        Mind the head's gamma: the default ``gamma="scale"`` is resolved on
        C_CP, the deletable rows, so exactness moves it with every request
        and each unlearn re-solves every head from scratch (exact, but the
        cost of a head refit, not milliseconds). A numeric gamma keeps the
        fast exact CP path; :func:`scale_gamma` of Phi's features on its own
        training data (not subject to deletion) gives the same scale without
        depending on C_CP: ``CPSVM(C=10.0, gamma=scale_gamma(phi_features))``.
    phi_trainer : callable, optional
        ``phi_trainer(remaining_feature_ids) -> torch.nn.Module``: trains a new
        Phi from scratch on the given ids of its lineage. Needed only to serve
        requests that touch Phi's lineage (``feature_ids`` of :meth:`fit`).
    device : str or torch.device, default="auto"
        Where Phi runs; ``"auto"`` is CUDA when available, else the CPU.
    batch_size : int, default=256
        Rows per forward pass of Phi.
    kkt_tolerance : float, default=1e-6
        Largest KKT violation of the head after a decrement for which
        :attr:`UnlearningResult.exact` is reported True: a finite number
        >= 0 (anything else raises :class:`~eco.exceptions.InvalidInputError`).

    Attributes
    ----------
    feature_extractor : torch.nn.Module
        The current Phi: the one given, or the one ``phi_trainer`` returned
        when a request touched Phi's lineage.
    head_ : estimator
        The fitted head.
    feature_ids_ : tuple
        Phi's lineage: the ids Phi was trained on.
    classes_ : numpy.ndarray
        Class labels (from the head).
    ids_ : numpy.ndarray
        Ids of C_CP, the examples the head is trained on (from the head).
    n_features_ : int
        Dimension of Phi's features.
    phi_fingerprint_ : str
        SHA-256 of Phi's parameters and buffers, taken at :meth:`fit` and
        checked before every use of Phi.

    Notes
    -----
    The fingerprint check hashes Phi's parameters and buffers on every call
    that uses Phi (measured 0.11 ms for the digits CNN, 17,696 parameters,
    and 1.0 ms for the MNIST CNN, 205,632, on one CPU thread): negligible
    for small networks, proportional to the weights' bytes for large ones.

    To serve a request that touches Phi's lineage the model keeps the raw
    inputs and labels of C_CP (it must re-extract their features with the
    retrained Phi). It keeps them only when the lineage is not empty. When an
    example is removed (or a new ``fit`` replaces the rows), the buffer of its
    input is overwritten with zeros and dropped with its label and id; the
    lineage loses its id, and :meth:`save` writes only the remaining rows.
    What the head keeps of a removed row is the head's own business (see its
    documentation).

    Threads: one model may be shared by several threads. Mutations
    (:meth:`fit`, :meth:`increment`, :meth:`unlearn`) serialize on the model;
    reads (:meth:`transform`, :meth:`decision_function`, :meth:`predict`,
    :meth:`score`, :meth:`save`) run concurrently with each other and see the
    state before or after an update, never in between (a readers-writer lock,
    writers first). Phi's forward passes serialize among themselves (running
    Phi flips its modules' modes), the head's part of a read does not. The
    model's lock is taken before the head's, never the other way round.

    Files: :meth:`load` treats a folder as untrusted (see
    :mod:`eco.nn.storage`): plain file names only, regular files only (no
    symlinks, FIFOs or devices), every read bounded before it starts, every
    key of the manifest checked; any problem raises
    :class:`~eco.exceptions.ModelFileError`.

    Examples
    --------
    >>> from eco import CPSVM
    >>> from eco.nn import ECO, make_network, feature_extractor, train_network, extract_features, scale_gamma
    >>> net = make_network("digits", seed=0)                # doctest: +SKIP
    >>> train_network(net, X_public, y_public)              # doctest: +SKIP
    >>> phi = feature_extractor(net)                        # doctest: +SKIP
    >>> gamma = scale_gamma(extract_features(phi, X_public))  # doctest: +SKIP
    >>> model = ECO(phi, CPSVM(C=10.0, gamma=gamma)).fit(X, y, feature_ids=())  # doctest: +SKIP
    >>> result = model.unlearn([3, 14, 15])                 # doctest: +SKIP
    >>> result.path, result.exact                           # doctest: +SKIP
    ('decrement', True)
    """

    def __init__(
        self,
        feature_extractor: torch.nn.Module,
        head: Any = None,
        *,
        phi_trainer: Optional[Callable[[List[Any]], torch.nn.Module]] = None,
        device: Union[str, torch.device] = "auto",
        batch_size: int = 256,
        kkt_tolerance: float = 1e-6,
    ) -> None:
        if not isinstance(feature_extractor, torch.nn.Module):
            raise InvalidInputError(
                f"feature_extractor must be a torch.nn.Module, got {type(feature_extractor).__name__}"
            )
        if phi_trainer is not None and not callable(phi_trainer):
            raise InvalidInputError("phi_trainer must be callable (remaining_feature_ids) -> module")
        if not (isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1):
            raise InvalidInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        # NaN would make every decrement inexact; the same rule as the
        # manifest's check at load (a finite number >= 0)
        kkt_tolerance = check_tolerance(kkt_tolerance, "kkt_tolerance")
        head = head if head is not None else _default_head()
        _check_head(head)
        self.feature_extractor = feature_extractor
        self.head = head
        self.phi_trainer = phi_trainer
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.kkt_tolerance = kkt_tolerance
        self._make_locks()

    def _make_locks(self):
        # The model's lock (reads shared, mutations exclusive) and Phi's lock:
        # running Phi flips its modules' modes and device, so forward passes
        # serialize even between concurrent reads. Order: model, Phi, head.
        self._lock = ReadWriteLock()
        self._phi_lock = threading.RLock()

    def __getstate__(self) -> Dict[str, Any]:
        with self._lock.read():
            state = dict(self.__dict__)
        del state["_lock"], state["_phi_lock"]
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._make_locks()

    # ------------------------------------------------------------------ state

    def _check_fitted(self):
        if not hasattr(self, "head_"):
            raise NotFittedError(
                "This ECO model is not fitted yet. Call 'fit' with training data first."
            )

    def _check_phi(self):
        """Refuse to use a Phi whose weights or buffers changed since fit."""
        with self._phi_lock:
            fingerprint = module_fingerprint(self.feature_extractor)
        if fingerprint != self.phi_fingerprint_:
            raise FeatureExtractorChangedError(
                "the feature extractor's parameters or buffers changed since fit (fine-tuning, an "
                "optimizer step, BatchNorm statistics updated by a forward pass in training mode?); "
                "the head was trained on the old features, so its decisions and its exactness no "
                "longer hold. Restore Phi's weights or fit a new ECO model"
            )

    @property
    def classes_(self) -> np.ndarray:
        with self._lock.read():
            self._check_fitted()
            return self.head_.classes_

    @property
    def ids_(self) -> np.ndarray:
        with self._lock.read():
            self._check_fitted()
            return np.asarray(self.head_.ids_)

    def _active_ids(self):
        return _normalize_ids(np.asarray(self.head_.ids_), "ids of the head")

    # -------------------------------------------------------------- training

    def transform(self, X: Any) -> np.ndarray:
        """Return Phi(X) as a float64 matrix.

        Parameters
        ----------
        X : torch.Tensor, array-like, Dataset or DataLoader
            Inputs (see :mod:`eco.nn.data`; a loader must not shuffle).

        Returns
        -------
        numpy.ndarray of shape (n_inputs, n_features)

        Raises
        ------
        FeatureExtractorChangedError
            On a fitted model, if Phi changed since fit.
        """
        with self._lock.read():
            return self._transform(X)

    def _transform(self, X):
        if hasattr(self, "head_"):
            self._check_phi()
        return self._extract(self.feature_extractor, X)

    def _extract(self, module, X):
        with self._phi_lock:
            return extract_features(module, X, batch_size=self.batch_size, device=self.device)

    def _examples(self, X, y, ids, features):
        """Inputs, labels, ids and features of new rows, validated, nothing stored."""
        inputs, labels = collect(X, y, need_labels=True, batch_size=self.batch_size)
        n_samples = inputs.shape[0]
        id_list = _parse_ids(ids, n_samples)
        if features is None:
            # Extract with Phi as it is now: fit takes a new fingerprint and
            # increment checked the old one before calling this.
            features = self._extract(self.feature_extractor, inputs)
        else:
            features = np.asarray(features, dtype=np.float64)
            if features.ndim != 2 or features.shape[0] != n_samples:
                raise InvalidInputError(
                    f"features must have shape ({n_samples}, n_features), got {features.shape}"
                )
        return inputs, labels, id_list, features

    def fit(self, X: Any, y: Any = None, ids: Optional[Sequence[Any]] = None,
            feature_ids: Any = _UNSTATED, *, features: Optional[np.ndarray] = None) -> "ECO":
        """Extract the features of ``X`` and fit the head on them.

        Parameters
        ----------
        X : array-like, torch.Tensor, Dataset or DataLoader
            Inputs of C_CP (see :mod:`eco.nn.data`). A dataset or loader may
            yield ``(x, y)`` items, then ``y`` is not given; a loader must
            read its dataset in order (no shuffling).
        y : array-like of shape (n_samples,), optional
            Class labels, unless the data carries them.
        ids : sequence of hashable, optional
            One id per row, default the row positions ``0 .. n_samples-1``.
            Ids match by value and kind, as the head matches them (3.0 does
            not name the id 3, True not the id 1), so they must differ by
            value. :meth:`save` stores only int (within int64) and str ids.
        feature_ids : sequence of hashable, required
            Phi's lineage, the ids of the examples Phi was trained on; ``()``
            states that Phi saw none of the deletable data. It cannot be left
            out: eco cannot know how Phi was trained, and the exactness of
            the whole model rests on this statement. Ids here may also be in
            ``ids``, of the same kind; an id equal to one of ``ids`` (or to
            another of ``feature_ids``) by value but of another kind is
            refused.
        features : array-like of shape (n_samples, n_features), optional
            Phi(X) computed beforehand, to skip the extraction (for example
            to fit several models on the same data). It must be what
            :meth:`transform` returns for ``X``; it is not checked.

        Returns
        -------
        self

        Raises
        ------
        InvalidInputError
            Bad shapes, non-finite inputs or features, malformed ids, an
            unstated lineage, ids equal by value but of different kinds in
            ``feature_ids`` or between it and ``ids``, a shuffling loader.
        DuplicateIdError
            The same id twice in ``ids`` (equal values: 1 and True too).
        """
        with self._lock.write():
            return self._fit(X, y, ids, feature_ids, features)

    def _fit(self, X, y, ids, feature_ids, features):
        lineage = _stated_lineage(feature_ids)
        with self._phi_lock:
            fingerprint = module_fingerprint(self.feature_extractor)
        inputs, labels, id_list, features = self._examples(X, y, ids, features)
        _check_values_differ(list(id_list) + list(lineage), "ids and feature_ids")
        head = _fresh_head(self.head)
        head.fit(features, labels, ids=list(id_list))

        # Nothing above changed the model; commit everything at once.
        self.head_ = head
        self.feature_ids_ = lineage
        self.n_features_ = features.shape[1]
        self.phi_fingerprint_ = fingerprint
        self._drop_inputs(list(getattr(self, "_inputs", None) or ()))
        self._inputs, self._labels = None, None
        self._store_inputs(id_list, inputs, labels)
        return self

    def _drop_inputs(self, identifiers):
        """Forget the kept inputs and labels of ``identifiers``, overwriting the inputs."""
        inputs, labels = getattr(self, "_inputs", None), getattr(self, "_labels", None)
        if inputs is None:
            return
        for identifier in identifiers:
            _wipe(inputs.pop(identifier, None))
            labels.pop(identifier, None)

    def _store_inputs(self, id_list, inputs, labels):
        # Raw inputs are needed only to re-extract features after Phi is
        # retrained (line 7); without a lineage there is no reason to hold them.
        if self.feature_ids_:
            if self._inputs is None:
                self._inputs, self._labels = {}, {}
            for row, identifier in enumerate(id_list):
                self._inputs[identifier] = inputs[row].copy()
                self._labels[identifier] = labels[row]

    def increment(self, X: Any, y: Any = None, ids: Optional[Sequence[Any]] = None,
                  feature_ids: Any = _UNSTATED, *, features: Optional[np.ndarray] = None) -> Any:
        """Learn new rows exactly (a CP increment of the head), Phi fixed.

        Parameters
        ----------
        X, y : see :meth:`fit`
            The new rows.
        ids : sequence of hashable, required
            One new id per row (row positions are not unique across calls,
            so there is no default here).
        feature_ids : sequence of hashable, required
            Which of the new ``ids`` Phi was trained on (``()``: none). They
            join Phi's lineage; an id already in the lineage must be listed.
        features : array-like, optional
            Phi(X) computed beforehand, as in :meth:`fit`.

        Returns
        -------
        object
            The head's receipt of ``increment``.

        Raises
        ------
        InvalidInputError
            Missing ids, an unstated lineage, ``feature_ids`` that are not new
            ids, a new id equal by value to an id of the lineage of another
            kind, a lineage that grows from empty (C_CP's inputs were not kept).
        DuplicateIdError
            A new id already in C_CP or repeated.
        FeatureExtractorChangedError
            Phi changed since fit.
        """
        with self._lock.write():
            return self._increment(X, y, ids, feature_ids, features)

    def _increment(self, X, y, ids, feature_ids, features):
        self._check_fitted()
        if ids is None:
            raise InvalidInputError("increment needs ids: one new id per row (row positions repeat across calls)")
        stated = _stated_lineage(feature_ids)
        self._check_phi()
        inputs, labels, id_list, features = self._examples(X, y, ids, features)
        # ids match by value and kind (_id_key), and may not equal an id of
        # Phi's lineage by value only (C_CP's ids: the head's increment checks)
        new = {_id_key(i) for i in id_list}
        strangers = [i for i in stated if _id_key(i) not in new]
        if strangers:
            raise InvalidInputError(f"feature_ids of increment must be among its ids; not: {strangers[:10]}")
        _check_values_differ(list(self.feature_ids_) + list(id_list), "ids and Phi's lineage")
        old_lineage = {_id_key(i) for i in self.feature_ids_}
        stated_keys = {_id_key(i) for i in stated}
        unstated = [i for i in id_list if _id_key(i) in old_lineage and _id_key(i) not in stated_keys]
        if unstated:
            raise InvalidInputError(f"ids {unstated[:10]} are in Phi's lineage stated at fit; list them in feature_ids")
        if stated and not self.feature_ids_:
            raise InvalidInputError(
                "Phi's lineage was empty, so the model did not keep C_CP's inputs that retraining Phi "
                "would need; fit a new model with the full lineage instead"
            )
        receipt = self.head_.increment(features, labels, ids=list(id_list))
        self.feature_ids_ = self.feature_ids_ + tuple(i for i in stated if _id_key(i) not in old_lineage)
        self._store_inputs(id_list, inputs, labels)
        return receipt

    # ------------------------------------------------------------- unlearning

    def unlearn(self, ids: Any, batch: bool = True, *, audit: bool = True, errors: str = "raise") -> UnlearningResult:
        """Serve an unlearning request D_f (the algorithm of the module docstring).

        Parameters
        ----------
        ids : hashable or sequence of hashable
            The ids of D_f. Repeated ids count once. Ids match by value and
            kind, as the head's ``decrement`` matches them: 3.0 does not name
            the id 3, nor True the id 1 (such ids are unknown).
        batch : bool, default=True
            True serves D_f as one batch (ECO), False one example at a time
            (ECO_i). Both end in the same head.
        audit : bool, default=True
            Let the head recompute its KKT certificate after the update (the
            receipt's ``kkt_violation``, which decides ``exact``). False skips
            that work, for timing the update alone; ``exact`` then rests on
            the construction of the algorithm.
        errors : {"raise", "ignore"}, default="raise"
            Ids neither in C_CP nor in Phi's lineage raise
            :class:`~eco.exceptions.UnknownIdError` (as ``CPSVM.decrement``
            does); with "ignore" they are skipped and reported in
            ``ignored_ids``.

        Returns
        -------
        UnlearningResult

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the model is not fitted.
        InvalidInputError
            A malformed request (NaN or non-hashable ids, a 2-D array).
        UnknownIdError
            Unknown ids, with ``errors="raise"``.
        FeatureExtractorChangedError
            Phi changed since fit.
        UnlearningError
            The request touches Phi's lineage but no ``phi_trainer`` was
            given, or it would remove every example of C_CP.

        Notes
        -----
        On any error the model is left exactly as it was.
        """
        start = time.perf_counter()
        with self._lock.write():
            return self._unlearn(ids, batch, audit, errors, start)

    def _unlearn(self, ids, batch, audit, errors, start):
        self._check_fitted()
        if not isinstance(batch, (bool, np.bool_)):
            raise InvalidInputError(f"batch must be True or False, got {batch!r}")
        if errors not in ("raise", "ignore"):
            raise InvalidInputError(f"errors must be 'raise' or 'ignore', got {errors!r}")
        requested = _unique_in_order(_normalize_ids(ids, "ids"))
        self._check_phi()
        active = self._active_ids()
        # By value and kind, as the head's decrement matches ids: a request
        # for 3.0 or True does not name the id 3 or 1, so it is unknown here
        # too (ignored with errors="ignore"), never passed on to the head.
        active_keys = {_id_key(i) for i in active}
        lineage_keys = {_id_key(i) for i in self.feature_ids_}
        in_ccp = [i for i in requested if _id_key(i) in active_keys]
        in_lineage = [i for i in requested if _id_key(i) in lineage_keys]
        ignored = [i for i in requested if _id_key(i) not in active_keys and _id_key(i) not in lineage_keys]
        removed = [i for i in requested if _id_key(i) in active_keys or _id_key(i) in lineage_keys]
        if ignored and errors == "raise":
            raise UnknownIdError(
                f"{len(ignored)} ids are neither in C_CP nor in Phi's lineage: {ignored[:10]}; "
                "nothing was removed (pass errors='ignore' to skip unknown ids)"
            )
        receipt = None
        if in_lineage:
            path, exact = "retrain_phi", True
            self._retrain_phi(active, in_ccp, in_lineage)
        elif in_ccp:
            path, exact, receipt = self._decrement(in_ccp, bool(batch), bool(audit))
        else:
            path, exact = "none", True
        return UnlearningResult(
            requested_ids=tuple(requested),
            removed_ids=tuple(removed),
            ignored_ids=tuple(ignored),
            path=path,
            batch=bool(batch),
            exact=exact,
            wall_time_s=time.perf_counter() - start,
            receipt=receipt,
        )

    def _decrement(self, in_ccp, batch, audit):
        """Lines 2-6: CP decrement of the head (reserve vectors drop without path steps)."""
        support = set(_normalize_ids(np.asarray(self.head_.support_ids_), "support ids"))
        touches_support = any(i in support for i in in_ccp)
        # Both branches of the algorithm are one call; the receipt shows which.
        receipt = self.head_.decrement(list(in_ccp), batch=batch, audit=audit)
        # A hyper-parameter resolved from the rows (gamma="scale") moves even
        # when only reserve vectors leave: then every head was re-solved.
        moved = bool(getattr(receipt, "hyper_paths", None))
        path = "decrement" if touches_support or moved else "reserve_only"
        self._drop_inputs(in_ccp)
        violation = getattr(receipt, "kkt_violation", None)
        exact = violation is None or bool(np.isfinite(violation) and violation <= self.kkt_tolerance)
        return path, exact, receipt

    def _retrain_phi(self, active, in_ccp, in_lineage):
        """Line 7: retrain Phi without D_f, re-extract C_CP's features, refit the head."""
        if self.phi_trainer is None:
            raise UnlearningError(
                f"the request touches Phi's lineage ({len(in_lineage)} of the ids Phi was trained "
                "on) but this model has no phi_trainer to retrain Phi; pass "
                "phi_trainer=callable(remaining_feature_ids) -> module to ECO"
            )
        forget = set(in_ccp)
        remaining_ccp = [identifier for identifier in active if identifier not in forget]
        if not remaining_ccp:
            raise UnlearningError("the request would remove every example of C_CP; nothing to refit the head on")
        kept = self._inputs or {}
        lost = [identifier for identifier in remaining_ccp if identifier not in kept]
        if lost:
            raise UnlearningError(
                f"the inputs of C_CP ids {lost[:10]} are not in the model (rows added to the head "
                "directly rather than through ECO.increment?); cannot re-extract their features"
            )
        forget_lineage = set(in_lineage)
        remaining_lineage = tuple(i for i in self.feature_ids_ if i not in forget_lineage)

        new_phi = self.phi_trainer(list(remaining_lineage))
        if not isinstance(new_phi, torch.nn.Module):
            raise UnlearningError(
                f"phi_trainer must return a torch.nn.Module, got {type(new_phi).__name__}"
            )
        inputs = np.stack([kept[identifier] for identifier in remaining_ccp])
        labels = np.asarray([self._labels[identifier] for identifier in remaining_ccp])
        features = self._extract(new_phi, inputs)
        del inputs  # a stacked copy of the remaining rows only
        head = _fresh_head(self.head)
        head.fit(features, labels, ids=list(remaining_ccp))

        # Commit only after everything succeeded.
        self.feature_extractor = new_phi
        self.phi_fingerprint_ = module_fingerprint(new_phi)
        self.head_ = head
        self.feature_ids_ = remaining_lineage
        self.n_features_ = features.shape[1]
        self._drop_inputs(forget)
        if not self.feature_ids_:
            self._drop_inputs(list(self._inputs))
            self._inputs, self._labels = None, None

    # ------------------------------------------------------------- prediction

    def decision_function(self, X: Any) -> np.ndarray:
        """Decision values of the head on Phi(X).

        Returns
        -------
        numpy.ndarray of shape (n_inputs,) or (n_inputs, n_classes)
        """
        with self._lock.read():
            self._check_fitted()
            return self.head_.decision_function(self._transform(X))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels of X (a loader must not shuffle)."""
        with self._lock.read():
            self._check_fitted()
            return self.head_.predict(self._transform(X))

    def score(self, X: Any, y: Any = None) -> float:
        """Accuracy on (X, y); the labels may come from the data's ``(x, y)`` items.

        With labels carried by the data the pairs stay together, so a
        shuffling loader is accepted here; with ``y`` given apart the rows
        must be in order.
        """
        with self._lock.read():
            self._check_fitted()
            inputs, labels = collect(X, y, need_labels=True, ordered=y is not None, batch_size=self.batch_size)
            return float(self.head_.score(self._transform(inputs), labels))

    # ------------------------------------------------------------ persistence

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Save the model into the folder ``path``.

        The folder holds ``feature_extractor.pt`` (Phi's ``state_dict``,
        loadable with ``torch.load(weights_only=True)``), ``head.eco`` (the
        head saved by its own ``save``), the inputs and labels of C_CP when
        Phi has a lineage (``.npy``, no pickle), and ``manifest.json`` with
        the lineage, the settings and a SHA-256 digest of every file. Nothing
        is pickled.

        The files are first written to a new folder beside ``path``, which
        then takes its place, so a failed save leaves an earlier model at
        ``path`` intact. An existing ``path`` is replaced only if it is empty
        or holds a model saved by this method.

        Parameters
        ----------
        path : str or os.PathLike
            The folder.

        Raises
        ------
        ModelFileError
            ``path`` exists and is not an empty folder or an ECO model folder.
        InvalidInputError
            Ids or labels of a type that cannot be saved without pickle:
            ids of C_CP or of Phi's lineage other than int (within int64) or
            str. Nothing is written then.
        """
        folder = Path(path)
        with self._lock.read():  # one consistent state, written while other reads go on
            self._check_fitted()
            # Ids the manifest cannot hold are refused before anything is
            # written: load would refuse the folder, and it would have
            # replaced a good model at ``path``.
            _check_storable_ids(self.feature_ids_, "Phi's lineage (feature_ids)")
            _check_storable_ids(self._inputs or (), "the ids of C_CP")
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
            try:
                self._write(staging)
            except BaseException:
                shutil.rmtree(staging)
                raise
        try:
            with _PUBLISH_LOCK:
                self._publish(staging, folder)
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    @staticmethod
    def _publish(staging, folder):
        """Put the staged folder at ``folder``, replacing only an ECO model or an empty folder."""
        if folder.exists() and not (folder.is_dir() and storage.is_replaceable(folder)):
            raise ModelFileError(f"{folder} exists and is not an ECO model folder; not overwriting it")
        if folder.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(retired / folder.name)
            staging.rename(folder)
            shutil.rmtree(retired)
        else:
            staging.rename(folder)

    def _write(self, folder):
        # compact copies: a view would save its whole storage, and load bounds
        # the file by what the state_dict's tensors need
        with self._phi_lock:
            state = {name: tensor.detach().cpu().clone() for name, tensor in self.feature_extractor.state_dict().items()}
        torch.save(state, folder / _EXTRACTOR_FILE)
        self.head_.save(folder / _HEAD_FILE)
        if not (folder / _HEAD_FILE).is_file():
            raise ModelFileError(f"the head's save did not write {_HEAD_FILE}")
        files = [_EXTRACTOR_FILE, _HEAD_FILE]
        ids = None
        if self._inputs is not None:
            ids = list(self._inputs)
            labels = np.asarray([self._labels[identifier] for identifier in ids])
            if labels.dtype == object:
                raise InvalidInputError("labels of dtype object cannot be saved without pickle")
            inputs = np.stack([self._inputs[identifier] for identifier in ids])
            np.save(folder / _INPUTS_FILE, inputs, allow_pickle=False)
            np.save(folder / _LABELS_FILE, labels, allow_pickle=False)
            files += [_INPUTS_FILE, _LABELS_FILE]
        manifest = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "feature_extractor_class": type(self.feature_extractor).__name__,
            "head_file": _HEAD_FILE,
            "batch_size": self.batch_size,
            "kkt_tolerance": self.kkt_tolerance,
            "n_features": int(self.n_features_),
            "feature_ids": list(self.feature_ids_),
            "phi_fingerprint": self.phi_fingerprint_,
            "ccp_input_ids": ids,
            "sha256": {name: storage.sha256_file(folder / name) for name in files},
        }
        try:
            text = json.dumps(manifest, indent=1)
        except TypeError as error:
            raise InvalidInputError(f"ids must be JSON types (int, str, float, bool) to be saved: {error}") from None
        (folder / _MANIFEST).write_text(text)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], feature_extractor: torch.nn.Module, *,
             phi_trainer: Optional[Callable[[List[Any]], torch.nn.Module]] = None,
             device: Union[str, torch.device] = "auto") -> "ECO":
        """Load a model saved by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The folder.
        feature_extractor : torch.nn.Module
            A module of the same architecture as the saved Phi; its weights
            are replaced by the saved ones, once everything else was read
            and checked. If the load fails, the module keeps its own.
        phi_trainer : callable, optional
            See :class:`ECO` (a callable cannot be saved).
        device : str or torch.device, default="auto"
            Where Phi runs.

        Returns
        -------
        ECO

        Raises
        ------
        ModelFileError
            A missing, altered or incompatible file.
        """
        import eco

        if not isinstance(feature_extractor, torch.nn.Module):
            raise InvalidInputError(
                f"feature_extractor must be a torch.nn.Module, got {type(feature_extractor).__name__}"
            )
        folder = Path(path)
        manifest = storage.read_manifest(folder)  # every key checked, the head's digest too
        data = storage.read_extractor_bytes(folder, manifest, feature_extractor)
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as error:  # unpickling errors
            raise ModelFileError(f"cannot load Phi's weights into {type(feature_extractor).__name__}: {error}") from None
        try:
            head = eco.load(folder / manifest["head_file"])
        except ModelFileError:
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError, NotImplementedError, RecursionError) as error:
            # the head's loader should name the problem itself; whatever it
            # raises for a bad file is reported as what it is
            raise ModelFileError(f"cannot load the head: {type(error).__name__}: {error}") from None
        try:
            _check_head(head)
        except InvalidInputError as error:
            raise ModelFileError(f"the saved head is not usable: {error}") from None

        model = cls(
            feature_extractor,
            head=_fresh_head(head),
            phi_trainer=phi_trainer,
            device=device,
            batch_size=manifest["batch_size"],
            kkt_tolerance=manifest.get("kkt_tolerance", 1e-6),
        )
        model.head_ = head
        model.feature_ids_ = tuple(manifest["feature_ids"])
        model.n_features_ = manifest["n_features"]
        model._inputs, model._labels = _read_kept_inputs(folder, manifest, model._active_ids())
        _check_loaded(model, folder)
        # Everything that can be checked without Phi's weights passed; the
        # caller's module is changed last and given back as it was if the
        # weights do not fit it or do not give the saved Phi (all or nothing).
        model.phi_fingerprint_ = _load_weights(feature_extractor, state, manifest.get("phi_fingerprint"))
        return model

    def __repr__(self) -> str:
        fitted = f"n_active={len(self.ids_)}, lineage={len(self.feature_ids_)}" if hasattr(self, "head_") else "unfitted"
        return f"ECO({type(self.feature_extractor).__name__}, head={self.head!r}, {fitted})"


def _load_weights(module, state, expected_fingerprint):
    """Load ``state`` into ``module``; on any failure restore its tensors, then raise.

    ``load_state_dict`` copies every matching tensor before it reports a
    mismatch, and the fingerprint can only be taken after the copy, so the
    module's own tensors are kept aside (a copy of its weights) until both
    checks passed. Returns the fingerprint of the loaded weights.
    """
    name = type(module).__name__
    backup = {key: tensor.detach().clone() for key, tensor in module.state_dict().items()}
    try:
        try:
            module.load_state_dict(state)
        except Exception as error:  # missing or unexpected keys, shape mismatches
            raise ModelFileError(f"cannot load Phi's weights into {name}: {error}") from None
        fingerprint = module_fingerprint(module)
        if expected_fingerprint is not None and expected_fingerprint != fingerprint:
            raise ModelFileError(
                f"the weights loaded into {name} do not give the saved Phi "
                "(fingerprint mismatch: another dtype or architecture?)"
            )
    except BaseException:
        module.load_state_dict(backup)
        raise
    return fingerprint


def _read_kept_inputs(folder, manifest, active):
    """C_CP's kept inputs and labels, as dicts by id (None without a lineage)."""
    ids = manifest.get("ccp_input_ids")
    if ids is None:
        return None, None
    strangers = set(ids) - set(active)
    if strangers:
        raise ModelFileError(
            f"{folder}: the saved inputs hold {len(strangers)} ids that the head does not have "
            f"({sorted(map(str, strangers))[:5]}): rows that should not be in the model"
        )
    inputs = storage.read_npy(folder, _INPUTS_FILE, manifest, len(ids), storage._INPUT_KINDS)
    labels = storage.read_npy(folder, _LABELS_FILE, manifest, len(ids), storage._LABEL_KINDS, ndim=1)
    if inputs.size and not np.isfinite(inputs).all():
        raise ModelFileError(f"{folder}: the saved inputs hold NaN or infinite values")
    return (
        {identifier: inputs[row].copy() for row, identifier in enumerate(ids)},
        {identifier: labels[row] for row, identifier in enumerate(ids)},
    )


def _check_loaded(model, folder):
    """Cross-checks between the manifest and the head it came with."""
    n_head = getattr(model.head_, "n_features_in_", model.n_features_)
    if n_head != model.n_features_:
        raise ModelFileError(
            f"{folder}: the manifest declares {model.n_features_} features, the head was fitted on {n_head}"
        )
    if model.feature_ids_ and model._inputs is None:
        raise ModelFileError(
            f"{folder}: Phi has a lineage but the model holds no inputs of C_CP to re-extract after retraining it"
        )
