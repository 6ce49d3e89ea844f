"""The paper's Tables 2 and 3 rebuilt: NR, ECO_i, ECO and head-NR compared.

Modules, one job each:

protocol
    Datasets, splits, methods, metrics, the aggregation rule, the acceptance
    targets (parameters) and one trial's data, Phi and base model.
run
    Every method on every request of every trial (:func:`run_experiment`).
summary
    Per-trial measurements aggregated, keyed by (scenario, size, method);
    the targets checked.
report
    ``results.json``, the Markdown tables and ``summary.md``.
plots
    ``time.png``, ``accuracy.png``, ``mia.png``.
"""

from eco.nn.experiment.protocol import (
    AGGREGATION,
    DATASETS,
    DEFAULT_TARGETS,
    METHODS,
    METRICS,
    AcceptanceTargets,
    DatasetSetup,
    frozen_head_parameters,
    load_dataset,
    refit_frozen,
)
from eco.nn.experiment.report import markdown_table, targets_markdown, write_outputs
from eco.nn.experiment.run import run_experiment, serve_request
from eco.nn.experiment.summary import Summary, check_targets, summarise

__all__ = [
    "AGGREGATION",
    "DATASETS",
    "DEFAULT_TARGETS",
    "METHODS",
    "METRICS",
    "AcceptanceTargets",
    "DatasetSetup",
    "frozen_head_parameters",
    "load_dataset",
    "refit_frozen",
    "markdown_table",
    "targets_markdown",
    "write_outputs",
    "run_experiment",
    "serve_request",
    "Summary",
    "check_targets",
    "summarise",
]
