"""Aggregating the measurements, and checking the acceptance targets.

One rule everywhere (:data:`~eco.nn.experiment.protocol.AGGREGATION`): a
figure is the mean over trials of the per-trial values, with the sample
standard deviation (ddof=1; 0 for one trial). The smallest and largest
per-trial values are kept too: the plots clip their error bars to them.
"""

from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from eco.nn.experiment.protocol import METRICS, AcceptanceTargets

__all__ = ["Summary", "summarise", "check_targets"]

Key = Tuple[str, int, str]


class Summary:
    """Aggregates keyed by ``(scenario, size, method)``.

    ``summary.get(scenario, size, method, metric)`` is ``{"mean", "std",
    "min", "max", "n"}`` or None when the metric was not measured there.
    """

    def __init__(self, entries: Dict[Key, Dict[str, Any]]):
        self.entries = entries

    def get(self, scenario: str, size: int, method: str, metric: str) -> Optional[Dict[str, float]]:
        return self.entries.get((scenario, int(size), method), {}).get(metric)

    def sizes(self, scenario: str) -> List[int]:
        return sorted({size for (s, size, _) in self.entries if s == scenario})

    def to_list(self) -> List[Dict[str, Any]]:
        """The JSON form: one dict per key."""
        return [{"scenario": s, "size": size, "method": m, **entry} for (s, size, m), entry in self.entries.items()]

    @classmethod
    def from_list(cls, rows: Iterable[Dict[str, Any]]) -> "Summary":
        entries = {}
        for row in rows:
            entry = {k: v for k, v in row.items() if k not in ("scenario", "size", "method")}
            entries[(row["scenario"], int(row["size"]), row["method"])] = entry
        return cls(entries)


def _aggregate(values: List[float]) -> Dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "n": len(values),
    }


def summarise(measurements: Iterable[Dict[str, Any]]) -> Summary:
    """Aggregate the per-trial measurements by the one rule."""
    groups: Dict[Key, List[Dict[str, Any]]] = {}
    for record in measurements:
        groups.setdefault((record["scenario"], int(record["size"]), record["method"]), []).append(record)
    entries = {}
    for key, records in groups.items():
        entry: Dict[str, Any] = {"n_trials": len(records)}
        for metric in METRICS:
            values = [r[metric] for r in records if r.get(metric) is not None]
            if values:
                entry[metric] = _aggregate(values)
        entries[key] = entry
    return Summary(entries)


def _mean(summary, size, method, metric):
    value = summary.get("random", size, method, metric)
    return None if value is None else value["mean"]


def _mia_target(summary, sizes, method, required):
    """The MIA target's rule: the signed gap MIA(D_f) - MIA(D_test), pooled, in absolute value.

    Exact unlearning leaves no membership signal, so the signed gap has mean
    0 and what remains is sampling noise: MIA(D_f) of 5 examples moves in
    steps of 0.2, and the absolute per-trial gap averages that noise instead
    of cancelling it (about 0.15 at |D_f| = 5 for a model that never saw
    D_f). The signed gap pooled over every forgotten example (trials and
    sizes, weighted by |D_f|) estimates the leakage itself, with a noise of
    a few hundredths over 10 trials.
    """
    signed = {s: _mean(summary, s, method, "mia_forget") - _mean(summary, s, method, "mia_test") for s in sizes}
    pooled = float(np.average([signed[s] for s in sizes], weights=np.array(sizes, dtype=float)))
    per_trial_abs = {s: _mean(summary, s, method, "mia_gap") for s in sizes}
    # MIA(D_f) pooled over n examples is a fraction: its sampling noise is at most 0.5 / sqrt(n)
    n_examples = sum(s * summary.get("random", s, method, "mia_forget")["n"] for s in sizes)
    return {"per_size_signed": signed, "per_size_mean_abs": per_trial_abs, "pooled_signed": pooled,
            "pooled": abs(pooled), "n_examples": int(n_examples), "noise": 0.5 / np.sqrt(n_examples),
            "required": required, "met": abs(pooled) <= required}


def check_targets(summary: Summary, targets: AcceptanceTargets) -> Dict[str, Any]:
    """The acceptance targets, checked on the random requests."""
    sizes = summary.sizes("random")
    if not sizes:
        return {}
    size = targets.at_size if targets.at_size in sizes else max(sizes)
    speedup = _mean(summary, size, "ECO", "speedup")
    gaps = {s: 100 * (_mean(summary, s, "ECO", "test_accuracy") - _mean(summary, s, "NR", "test_accuracy"))
            for s in sizes}
    mia = {method: _mia_target(summary, sizes, method, targets.max_mia_gap) for method in ("ECO", "NR")}
    # The attack's power, by the same rule: the original model still holds D_f.
    has_original = all(summary.get("random", s, "original", "mia_forget") is not None for s in sizes)
    control = _mia_target(summary, sizes, "original", targets.max_mia_gap) if has_original else None
    diffs = [summary.get("random", s, m, "max_decision_diff") for s in sizes for m in ("ECO", "ECO_i")]
    worst_diff = max((d["max"] for d in diffs if d is not None), default=None)
    return {
        "speedup_at_size": {
            "size": size,
            "nr_time_s": _mean(summary, size, "NR", "time_s"),
            "eco_time_s": _mean(summary, size, "ECO", "time_s"),
            "speedup": speedup,
            "required": targets.min_speedup,
            "met": speedup is not None and speedup >= targets.min_speedup,
            "note": "" if size == targets.at_size else f"(The target is defined at |D_f| = {targets.at_size}.)",
        },
        "eco_minus_nr_test_accuracy_points": {
            "per_size": gaps,
            "worst": min(gaps.values()),
            "required": -targets.max_accuracy_drop_points,
            "met": min(gaps.values()) >= -targets.max_accuracy_drop_points,
        },
        "mia_gap": mia,
        "mia_control_original": control,
        "exactness": {
            "max_decision_diff": worst_diff,
            "required": targets.max_decision_diff,
            "met": worst_diff is not None and worst_diff <= targets.max_decision_diff,
        },
    }
