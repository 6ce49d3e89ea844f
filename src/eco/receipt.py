"""Unlearning receipts: what a decrement did, in a form an auditor can keep."""

import json
from dataclasses import asdict, dataclass, field

__all__ = ["UnlearningReceipt", "PATH_RESERVE_DROP", "PATH_STEPS", "PATH_RESOLVE"]

#: The example had alpha = 0 in every head: it was dropped, no coefficient moved.
PATH_RESERVE_DROP = "reserve_drop"
#: The example was unlearned along the exact CP path (set migrations).
PATH_STEPS = "path"
#: The path could not finish (step bound, numerical breakdown, fault); the
#: head was re-solved exactly from scratch on the remaining examples.
PATH_RESOLVE = "resolve"


def _jsonable_id(value):
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


@dataclass(slots=True)
class UnlearningReceipt:
    """Record of one call to :meth:`eco.CPSVM.decrement`.

    Attributes
    ----------
    removed_ids : tuple
        The ids unlearned, in the order given.
    paths : dict
        For every removed id, how it was served: ``"reserve_drop"`` (alpha was
        0 in every head, nothing moved), ``"path"`` (exact CP path steps) or
        ``"resolve"`` (the path could not finish and the head was re-solved
        exactly from scratch on the remaining examples).
    batch : bool
        True when all ids moved along one multi-point path.
    n_migrations : int
        Set migrations (examples changing among margin, error and reserve
        sets) over all heads.
    n_steps : int
        Path steps over all heads.
    kkt_violation : float or None
        The KKT certificate after the update, recomputed from scratch
        (largest violation over all heads); None unless the call was made
        with ``audit=True`` (the default call does no work beyond the path:
        ``model.kkt_violation()`` or ``model.verify()`` audit on request).
    digest_before, digest_after : str or None
        BLAKE2b digests of the model state (active ids, coefficients, bias,
        sets of every head) before and after; None unless ``audit=True``.
    wall_time_s : float
        Wall time of the whole call, validation and audit included.
    resolved_heads : tuple of int
        Heads whose path could not finish and were re-solved from scratch.
    hyper_paths : dict
        Data-dependent hyper-parameters that moved with the rows, and how:
        ``{"gamma": "resolve_gamma"}`` (``gamma="scale"`` changed: every head
        re-solved exactly with the new kernel on the remaining rows, as
        ``fit`` solves; the removed ids then have that path too),
        ``{"class_weight": "bound_path"}`` (``class_weight="balanced"``
        changed: bounds moved along the exact path in C_i) or
        ``"bound_resolve"`` (that path could not finish, or ended above the
        certificate bound, in some head, which was re-solved exactly from
        scratch; every head on a backend without the bound path, as Ray's). Empty when nothing moved: always so for a numeric
        gamma, ``gamma="auto"`` and explicit class weights.
    """

    removed_ids: tuple
    paths: dict
    batch: bool
    n_migrations: int
    n_steps: int
    kkt_violation: float | None
    digest_before: str | None
    digest_after: str | None
    wall_time_s: float
    resolved_heads: tuple = field(default=())
    hyper_paths: dict = field(default_factory=dict)

    def to_dict(self):
        """The receipt as a dict of JSON types."""
        d = asdict(self)
        d["removed_ids"] = [_jsonable_id(i) for i in self.removed_ids]
        d["paths"] = [[_jsonable_id(k), v] for k, v in self.paths.items()]
        d["resolved_heads"] = list(self.resolved_heads)
        d["hyper_paths"] = dict(self.hyper_paths)
        return d

    def to_json(self, **kwargs):
        """The receipt as a JSON string (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)
