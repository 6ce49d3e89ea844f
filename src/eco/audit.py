"""Auditing a model: is it the SVM trained from scratch on its active examples?

:func:`verify_model` (also :meth:`eco.CPSVM.verify`) is what an auditor runs
after an unlearning request. It always recomputes the KKT certificate from
scratch (gradients from alpha, b and the kernel, not from the incremental
state). With ``reference=True`` it also solves every head from scratch on the
active examples with an independent solver (:func:`eco.reference.reference_solve`:
libsvm, then a float64 polish; kernels from scikit-learn, not from eco's
engine), with the frozen hyper-parameters and every example's own box bound,
and compares the decision values on the active examples.
"""

import json
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._validation import check_tolerance
from .exceptions import ReferenceLimitError
from .reference import check_limits, reference_kernel, reference_solve

__all__ = ["VerificationReport", "verify_model"]

#: Default bound on the KKT certificate.
DEFAULT_TOL = 1e-8
#: Default bound on the decision difference with the reference solve.
DEFAULT_TOL_REF = 1e-7


@dataclass(frozen=True)
class VerificationReport:
    """Outcome of :func:`verify_model`.

    Attributes
    ----------
    kkt_violation : float
        Largest KKT violation over all heads, recomputed from scratch.
    n_active : int
        Number of active examples.
    n_heads : int
        Number of binary heads (1 for two classes).
    digest : str
        :meth:`eco.CPSVM.state_digest` of the model audited.
    max_decision_diff : float or None
        With ``reference=True``: largest absolute difference, over the active
        examples and the heads, between the model's decision values and those
        of the independent solve from scratch; else None.
    reference_kkt_violation : float or None
        Largest KKT violation of the reference solutions (their own check).
    reference_polished : bool or None
        False when the float64 polish of some reference solve failed, in which
        case the reference is libsvm's solution, accurate to about 1e-6 only.
    tol, tol_ref : float
        The bounds ``ok`` was judged against.
    ok : bool
        ``kkt_violation <= tol`` and, with a reference, ``max_decision_diff <= tol_ref``.
    """

    kkt_violation: float
    n_active: int
    n_heads: int
    digest: str
    max_decision_diff: float | None
    reference_kkt_violation: float | None
    reference_polished: bool | None
    tol: float
    tol_ref: float
    ok: bool

    def to_dict(self):
        """The report as a dict of JSON types."""
        return asdict(self)

    def to_json(self, **kwargs):
        """The report as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)


def verify_model(model, reference=False, *, tol=DEFAULT_TOL, tol_ref=DEFAULT_TOL_REF,
                 reference_max_iter=None, reference_time_limit=None):
    """Audit a fitted :class:`eco.CPSVM`.

    Parameters
    ----------
    model : eco.CPSVM
        A fitted model; it is not modified.
    reference : bool, default=False
        Also solve every head from scratch on the active examples with
        :func:`eco.reference.reference_solve` and compare decision values.
        Costs a full training (libsvm at tolerance 1e-12) per head.
    tol : float, default=1e-8
        Bound on the KKT certificate.
    tol_ref : float, default=1e-7
        Bound on the decision difference with the reference.
    reference_max_iter : int, optional
        Bound on libsvm's iterations per head (default
        :func:`eco.reference.iteration_bound` of the number of active examples).
    reference_time_limit : float, optional
        Seconds all the reference solves together may take (default: no
        limit besides the iterations).

    Returns
    -------
    VerificationReport

    Raises
    ------
    eco.exceptions.ReferenceLimitError
        With ``reference=True``: a reference solve hit its iteration or time
        bound; no reference is available (nothing is reported as one).
    """
    check_is_fitted(model)
    tol, tol_ref = check_tolerance(tol, "tol"), check_tolerance(tol_ref, "tol_ref")
    check_limits(reference_max_iter, reference_time_limit)
    kkt = float(model.kkt_violation())
    heads = model.head_set_
    active = heads.active_slots()
    n_heads = heads.n_heads
    diff = ref_kkt = polished = None
    if reference:
        diff, ref_kkt, polished = _compare_with_reference(
            model, active, reference_max_iter, reference_time_limit)
    ok = math.isfinite(kkt) and kkt <= tol
    if reference:
        ok = ok and math.isfinite(diff) and diff <= tol_ref
    return VerificationReport(
        kkt_violation=kkt,
        n_active=int(len(active)),
        n_heads=n_heads,
        digest=model.state_digest(),
        max_decision_diff=diff,
        reference_kkt_violation=ref_kkt,
        reference_polished=polished,
        tol=float(tol),
        tol_ref=float(tol_ref),
        ok=bool(ok),
    )


def _compare_with_reference(model, active, max_iter=None, time_limit=None):
    """Largest decision difference with per-head reference solves, their KKT, polished."""
    if len(active) == 0:
        return 0.0, 0.0, True
    heads = model.head_set_
    if model.kernel == "precomputed":
        # kernel rows of the active examples against every example given:
        # the model's decision input; the square block is the training kernel
        rows = heads.kernel_block(active)
        K = rows[:, active]
        f_model = model.decision_function(rows)
    else:
        Xa = heads.features_of(active)
        K = reference_kernel(Xa, Xa, model.kernel, model.gamma_, model.degree, model.coef0)
        f_model = model.decision_function(Xa)
    f_model = f_model.reshape(len(active), -1)
    C = np.asarray(heads.slot_C, dtype=np.float64)[active]
    worst = 0.0
    ref_kkt = 0.0
    polished = True
    deadline = None if time_limit is None else time.monotonic() + time_limit
    for h in range(heads.n_heads):
        y = heads.head_labels(h)[active]
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise ReferenceLimitError(f"the reference solves did not finish within their time "
                                      f"limit of {time_limit:g} s ({h} of {heads.n_heads} "
                                      "heads solved)", 0, time_limit)
        sol = reference_solve(K, y, C, max_iter=max_iter, time_limit=left)
        f_ref = sol.decision(K, y)
        worst = max(worst, float(np.max(np.abs(f_model[:, h] - f_ref))))
        ref_kkt = max(ref_kkt, float(sol.kkt_violation))
        polished = polished and bool(sol.polished)
    return worst, ref_kkt, polished
