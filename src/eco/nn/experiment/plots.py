"""The PNG plots of the experiment: time, accuracy and MIA against |D_f|.

Points are the means over trials (the aggregation rule of the tables); the
bars are mean ± standard deviation clipped to the smallest and largest
per-trial values. So a bar never runs below zero on the log time axis, past
100% accuracy or past an MIA of 1.0, and it is asymmetric where the trials are.
"""

from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from eco.nn.experiment.protocol import METHODS, UNLEARNING_METHODS
from eco.nn.experiment.summary import Summary

__all__ = ["write_plots", "clipped_error_bars"]

_STYLES = {"random": "-", "worst-case": "--"}
_COLORS = {"NR": "tab:red", "ECO_i": "tab:orange", "ECO": "tab:blue", "head-NR": "tab:green", "original": "tab:gray"}
_BARS = "points: mean over trials; bars: mean ± std clipped to the per-trial range"


def clipped_error_bars(values: Sequence[Dict[str, float]]) -> Tuple[np.ndarray, np.ndarray]:
    """Means and the (lower, upper) bar lengths of aggregates, clipped to [min, max].

    Parameters
    ----------
    values : sequence of dict
        Aggregates with ``mean``, ``std``, ``min`` and ``max``.

    Returns
    -------
    means : numpy.ndarray of shape (n,)
    yerr : numpy.ndarray of shape (2, n)
        Non-negative lengths below and above each mean, as ``errorbar`` takes them.
    """
    means = np.array([v["mean"] for v in values], dtype=float)
    low = np.maximum(means - [v["std"] for v in values], [v["min"] for v in values])
    high = np.minimum(means + [v["std"] for v in values], [v["max"] for v in values])
    return means, np.vstack([np.maximum(means - low, 0.0), np.maximum(high - means, 0.0)])


def _draw(axis, summary, scenarios, sizes, metric, methods, scale=1.0):
    for scenario in scenarios:
        for method in methods:
            points = [(s, summary.get(scenario, s, method, metric)) for s in sizes]
            points = [(s, v) for s, v in points if v is not None]
            if not points:
                continue
            means, yerr = clipped_error_bars([v for _, v in points])
            axis.errorbar([s for s, _ in points], means * scale, yerr=yerr * scale, linestyle=_STYLES[scenario],
                          marker="o", color=_COLORS[method], capsize=3, label=f"{method} ({scenario})")
    axis.set_xlabel("|D_f|")
    axis.grid(alpha=0.3)


def _save(figure, axis, path, title):
    handles, labels = axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.13, 1, 1))
    figure.savefig(path, dpi=120)


def _pair(summary, settings, folder, name, panels, title):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 5.5))
    axes = figure.subplots(1, 2)
    for axis, (metric, label, scale, top) in zip(axes, panels):
        _draw(axis, summary, settings["scenarios"], settings["sizes"], metric, METHODS, scale)
        axis.set_ylabel(label)
        axis.set_ylim(top=min(axis.get_ylim()[1], top * 1.02))  # room for the cap, not past the scale
    _save(figure, axes[0], folder / name, title)


def write_plots(summary: Summary, settings: Dict[str, Any], folder: Path) -> None:
    """Write ``time.png``, ``accuracy.png`` and ``mia.png`` into ``folder``."""
    # Figure objects draw with the Agg canvas on savefig and never touch
    # pyplot's global backend, so this works headless and inside notebooks.
    from matplotlib.figure import Figure

    where = f"{settings['dataset']}, {settings['trials']} trial{'s' if settings['trials'] != 1 else ''}"
    note = "ECO_i, ECO and head-NR coincide (exact unlearning); dashed: worst-case requests"
    figure = Figure(figsize=(8, 5.5))
    axis = figure.subplots()
    _draw(axis, summary, settings["scenarios"], settings["sizes"], "time_s", UNLEARNING_METHODS)
    axis.set_yscale("log")
    axis.set_ylabel("wall time of serving D_f (s)")
    _save(figure, axis, folder / "time.png", f"Time of serving D_f ({where}); dashed: worst-case requests\n{_BARS}")
    _pair(summary, settings, folder, "accuracy.png",
          [("test_accuracy", "test accuracy (%)", 100, 100), ("forget_accuracy", "accuracy on D_f (%)", 100, 100)],
          f"Accuracy ({where}); {note}\n{_BARS}")
    _pair(summary, settings, folder, "mia.png",
          [("mia_forget", "MIA(D_f)", 1, 1.0), ("mia_test", "MIA(D_test)", 1, 1.0)],
          f"Membership inference ({where}); {note}\n{_BARS}")
