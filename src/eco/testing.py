"""Tools to test exactness and atomicity: frozen refits, the exactness assertion, faults.

Exactness is eco's product: after any sequence of ``fit``, ``increment`` and
``decrement`` a model must equal the one fitted from scratch on the examples
still active, with the hyper-parameters it froze at ``fit``. This module
gives that reference once, for tests, benchmarks and experiments alike:

- :func:`frozen_params` and :func:`refit_frozen`: the same estimator refitted
  from scratch with the hyper-parameters as resolved;
- :func:`assert_exact`: decision values against the refit and against an
  independent solver (:mod:`eco.reference`), and the KKT certificate from
  scratch, with the tolerances defined here;
- fault injection (:func:`fail_on_call`, :func:`path_fault`): make a head-set
  operation raise, or a CP path fail, at a chosen call, without hooks in the
  estimator's code; :func:`engine_alloc_fault` makes the k-th memory
  allocation of the compiled engine fail (:func:`engine_allocations` counts
  them);
- :func:`released_buffers`: keep the buffers the engine releases (zeroed)
  so that a test can check they hold nothing;
- :func:`model_lock`: a model's readers-writer lock, to hold it in a test
  (``with model_lock(m).reading(): ...``) and check what waits for it.
"""

import threading
from contextlib import contextmanager

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import _cp_core
from ._concurrency import model_lock
from ._validation import check_tolerance
from .audit import verify_model

__all__ = [
    "KKT_TOL", "DECISION_TOL", "REFERENCE_TOL",
    "frozen_params", "active_data", "refit_frozen", "assert_exact",
    "fail_on_call", "path_fault", "InjectedFault", "model_lock",
    "engine_alloc_fault", "engine_allocations", "released_buffers",
    "local_ray_cluster",
]

#: Bound on the KKT certificate recomputed from scratch (the fit acceptance bound).
KKT_TOL = 1e-8
#: Bound on ``|f_model - f_refit| / max(1, |f|)`` against :func:`refit_frozen`.
DECISION_TOL = 1e-9
#: Bound on the decision difference with :func:`eco.reference.reference_solve`
#: (libsvm polished in float64), as :meth:`eco.CPSVM.verify` measures it.
REFERENCE_TOL = 1e-9


class InjectedFault(RuntimeError):
    """The default exception raised by :func:`fail_on_call`."""


def frozen_params(model):
    """``model.get_params()`` with ``gamma`` and ``class_weight`` as the model resolved them.

    ``gamma="scale"`` and ``class_weight="balanced"`` depend on the rows given
    at ``fit``; a refit on other rows must use the values the model froze.
    """
    check_is_fitted(model)
    params = dict(model.get_params())
    params["gamma"] = float(model.gamma_)
    if params.get("class_weight") is not None:
        weights = np.asarray(model.class_weight_, dtype=float)
        params["class_weight"] = {c.item() if hasattr(c, "item") else c: float(w)
                                  for c, w in zip(model.classes_, weights)}
    return params


def active_data(model):
    """The model's own copy of its active examples.

    Returns
    -------
    rows : ndarray
        Features of the active examples, or for ``kernel="precomputed"`` their
        square kernel block.
    y : ndarray
        Their labels (values of ``classes_``).
    bounds : ndarray
        Their box bounds ``C * class_weight[y] * sample_weight``.
    """
    check_is_fitted(model)
    heads = model.head_set_
    active = heads.active_slots()
    if model.kernel == "precomputed":
        rows = heads.kernel_block(active)[:, active]
    else:
        rows = heads.features_of(active)
    return rows, model.classes_[heads.slot_labels[active]], np.asarray(heads.slot_C)[active]


def refit_frozen(model, X=None, y=None, sample_weight=None, **fit_kwargs):
    """The same estimator fitted from scratch on the active examples, hyper-parameters frozen.

    Parameters
    ----------
    model : eco.CPSVM
        A fitted model.
    X, y, sample_weight : array-like, optional
        The active rows as the caller kept them; the refit then uses
        :func:`frozen_params` and these weights. When omitted the model's own
        copy is used (:func:`active_data`), with ``C=1``, no class weights and
        the per-example bounds as sample weights: the same problem with
        exactly the same bounds (no product rounded twice).
    **fit_kwargs
        Passed to ``fit`` (``method``, for example).

    Returns
    -------
    eco.CPSVM
        With ``ids_`` equal to ``model.ids_``.
    """
    params = frozen_params(model)
    ids = list(model.ids_)
    if X is None:
        X, y, sample_weight = active_data(model)
        params.update(C=1.0, class_weight=None)
    return type(model)(**params).fit(X, y, sample_weight=sample_weight, ids=ids, **fit_kwargs)


def _relative_gap(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


def assert_exact(model, X_eval=None, *, kkt_tol=KKT_TOL, decision_tol=DECISION_TOL,
                 reference_tol=REFERENCE_TOL):
    """Assert that `model` equals a fit from scratch on its active examples.

    Checks (AssertionError naming the failed one): the KKT certificate
    recomputed from scratch is below `kkt_tol`; :meth:`eco.CPSVM.verify` with
    the independent reference solver agrees within `reference_tol`; decision
    values equal those of :func:`refit_frozen` within `decision_tol`
    (relative to ``max(1, |f|)``) on `X_eval` (default: the active rows; not
    used for ``kernel="precomputed"``, where the active block is compared).
    """
    for value, name in ((kkt_tol, "kkt_tol"), (decision_tol, "decision_tol"),
                        (reference_tol, "reference_tol")):
        check_tolerance(value, name)
    viol = model.kkt_violation()
    assert viol < kkt_tol, f"KKT violation {viol:.3e} >= {kkt_tol:.0e}"
    report = verify_model(model, reference=True, tol=kkt_tol, tol_ref=reference_tol)
    assert report.max_decision_diff <= reference_tol, (
        f"decision vs reference solve differs by {report.max_decision_diff:.3e}")
    if model.n_active_ == 0:
        return
    refit = refit_frozen(model)
    assert np.array_equal(np.asarray(refit.ids_), np.asarray(model.ids_))
    heads = model.head_set_
    if model.kernel == "precomputed":
        got = model.decision_function(heads.kernel_block(heads.active_slots()))
        want = refit.decision_function(active_data(model)[0])
    else:
        X_eval = active_data(model)[0] if X_eval is None else X_eval
        got, want = model.decision_function(X_eval), refit.decision_function(X_eval)
    gap = _relative_gap(got, want)
    assert gap <= decision_tol, f"decision vs frozen refit differs by {gap:.3e}"


@contextmanager
def fail_on_call(model, method, k, exc=None, *, after=False):
    """Make a head-set operation of `model` raise at its `k`-th call (1-based) in the block.

    Parameters
    ----------
    model : eco.CPSVM
    method : str
        A public method of the head set (``"unlearn_head"``, ``"learn_head"``,
        ``"solve"``, ...).
    k : int
    exc : BaseException instance or class, default InjectedFault
    after : bool, default=False
        Raise after the `k`-th call has completed (the head was updated)
        rather than instead of it.

    Yields
    ------
    list
        The arguments of every call made so far (thread-safe).
    """
    heads = model.head_set_
    original = getattr(heads, method)
    calls = []
    lock = threading.Lock()
    exc = InjectedFault(f"injected fault at call {k} of {method}") if exc is None else exc

    def wrapper(*args, **kwargs):
        with lock:
            calls.append(args)
            fire = len(calls) == k
        if fire and not after:
            raise exc
        result = original(*args, **kwargs)
        if fire:
            raise exc
        return result

    setattr(heads, method, wrapper)
    try:
        yield calls
    finally:
        delattr(heads, method)


@contextmanager
def path_fault(model, head, at_step):
    """Make every CP path of `head` fail at step `at_step` in the block.

    The engine then reports a failed path, and the head set takes its exact
    fallback (a solve from scratch), as it would on a numerical breakdown.
    """
    engine = model.head_set_.engine(head)
    engine.fail_at_step = at_step
    try:
        yield
    finally:
        engine.fail_at_step = -1


class _AllocFault:
    """What :func:`engine_alloc_fault` and :func:`engine_allocations` report."""

    def __init__(self):
        self.count = 0
        self.fired = False

    def _read(self):
        self.count, self.fired = _cp_core.alloc_fault_state()


_ALLOC_HOOK = threading.Lock()


@contextmanager
def engine_alloc_fault(k):
    """Make the `k`-th memory allocation of the compiled engine in the block fail (once).

    Every allocation of :mod:`eco._cp_core` (C buffers: kernel rows, the
    inverse margin matrix, packed margin rows, work buffers; and the numpy
    arrays of the kernel store and the engines) goes through one wrapper; the
    `k`-th one (1-based) made in the block returns NULL (or raises
    MemoryError for a numpy array), as when memory runs out. Later ones
    succeed. Process-wide: use it around calls made from one thread.

    Yields
    ------
    object
        After the block, ``.fired`` says whether the fault was reached and
        ``.count`` how many allocations were counted (at most `k`).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    report = _AllocFault()
    with _ALLOC_HOOK:
        _cp_core.set_alloc_fault(k)
        try:
            yield report
        finally:
            report._read()
            _cp_core.set_alloc_fault(0)


@contextmanager
def engine_allocations():
    """Count the memory allocations of the compiled engine in the block (none fails).

    Yields an object whose ``.count`` is set after the block.
    """
    with engine_alloc_fault(1 << 62) as report:
        yield report


@contextmanager
def released_buffers():
    """Keep every buffer the engine releases in the block, zeroed, instead of freeing it.

    The engine zeroes a buffer before it releases it (kernel rows, packed
    margin rows, the inverse margin matrix, features, work buffers); here the
    released buffers are held until the end of the block, so that a test can
    check that they hold nothing. Process-wide.

    Yields
    ------
    callable
        ``report()`` returns ``(buffers, bytes, dirty)``: the buffers
        released so far, their bytes, and how many of them hold a nonzero byte.
    """
    with _ALLOC_HOOK:
        _cp_core.set_quarantine(True)
        try:
            yield _cp_core.quarantine_report
        finally:
            _cp_core.set_quarantine(False)


@contextmanager
def local_ray_cluster(num_cpus=2):
    """A local Ray cluster for the block, whose workers import this very eco.

    Starts one (no dashboard) unless Ray is already initialised, in which case
    the running cluster is used and left running. The workers get this eco's
    source folder on ``PYTHONPATH``, so that a checkout tested in place (not
    installed) is what the actors run.

    Parameters
    ----------
    num_cpus : int, default=2
    """
    import os
    from pathlib import Path

    import ray

    started = not ray.is_initialized()
    if started:
        src = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield
    finally:
        if started:
            ray.shutdown()
