"""Running the experiment: every method on every request of every trial.

See :mod:`eco.nn.experiment.protocol` for what is run and measured.
"""

import dataclasses
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from eco.exceptions import InvalidInputError
from eco.nn.baseline import NaiveRetraining
from eco.nn.mia import membership_rate
from eco.nn.experiment.protocol import (
    DATASETS,
    DEFAULT_SIZES,
    DEFAULT_TARGETS,
    HEAD_GAMMA,
    METHODS,
    SCENARIOS,
    AcceptanceTargets,
    Trial,
    ccp_size,
    load_dataset,
    refit_frozen,
)
from eco.nn.experiment.report import write_outputs
from eco.nn.experiment.summary import check_targets, summarise

__all__ = ["run_experiment", "serve_request", "MAX_SEED"]

#: Largest seed of a trial: scikit-learn's ``random_state`` (the splits of
#: :class:`Trial`) takes integers in [0, 2**32 - 1].
MAX_SEED = 2 ** 32 - 1


def _accuracy(predicted, truth):
    return float(np.mean(np.asarray(predicted) == np.asarray(truth)))


def _metrics(outputs_of, predict, trial, forget_ids, members, seed):
    """Accuracy and MIA metrics of one model, given its per-class outputs and predictions."""
    rates = membership_rate(
        outputs_of(members),
        outputs_of(trial.attack_ids),
        {"forget": outputs_of(forget_ids), "test": outputs_of(trial.eval_ids)},
        random_state=seed,
    )
    return {
        "test_accuracy": _accuracy(predict(trial.test_ids), trial.y[trial.test_ids]),
        "forget_accuracy": _accuracy(predict(forget_ids), trial.y[forget_ids]),
        "mia_forget": rates["forget"],
        "mia_test": rates["test"],
        "mia_gap": abs(rates["forget"] - rates["test"]),
    }


def _head_metrics(head, trial, forget_ids, members, seed):
    """Metrics of a head over the fixed Phi, from the precomputed features."""
    def outputs_of(ids):
        return head.decision_function(trial.features[ids])

    def predict(ids):
        return head.predict(trial.features[ids])

    return _metrics(outputs_of, predict, trial, forget_ids, members, seed), outputs_of(trial.test_ids)


def _serve_heads(trial, forget_ids, members, seed):
    """original, head-NR, ECO_i and ECO on one request."""
    records = {"original": _head_metrics(trial.base.head_, trial, forget_ids, members, seed)[0]}
    start = time.perf_counter()
    reference = refit_frozen(trial.base.head_, trial.features[members], trial.y[members], members.tolist())
    reference_time = time.perf_counter() - start
    metrics, reference_decision = _head_metrics(reference, trial, forget_ids, members, seed)
    records["head-NR"] = {**metrics, "time_s": reference_time}
    decisions = {}
    for method, batch in (("ECO_i", False), ("ECO", True)):
        model = trial.eco_model()
        result = model.unlearn(forget_ids, batch=batch, audit=False)
        metrics, decisions[method] = _head_metrics(model.head_, trial, forget_ids, members, seed)
        receipt = result.receipt
        records[method] = {
            **metrics,
            "time_s": result.wall_time_s,
            "max_decision_diff": float(np.max(np.abs(decisions[method] - reference_decision))),
            "kkt_violation": float(model.head_.kkt_violation()),
            "path": result.path,
            "n_steps": getattr(receipt, "n_steps", None),
            "n_migrations": getattr(receipt, "n_migrations", None),
        }
    records["ECO"]["max_diff_from_ECO_i"] = float(np.max(np.abs(decisions["ECO"] - decisions["ECO_i"])))
    return records


def _serve_nr(nr, trial, forget_ids, members, seed):
    """NR: the network retrained from scratch on train minus D_f."""
    retrained = nr.without(forget_ids)

    def outputs_of(ids):
        return retrained.predict_proba(trial.X[ids])

    def predict(ids):
        return retrained.classes_[outputs_of(ids).argmax(axis=1)]

    return {**_metrics(outputs_of, predict, trial, forget_ids, members, seed), "time_s": retrained.history_.wall_time_s}


def serve_request(trial: Trial, nr: NaiveRetraining, forget_ids: Sequence[int], seed: int) -> Dict[str, Dict[str, Any]]:
    """Run every method on one request; return one record per method."""
    forget_ids = np.asarray(forget_ids, dtype=np.int64)
    forget_set = set(forget_ids.tolist())
    members = np.array([i for i in trial.ccp_ids if i not in forget_set])
    records = _serve_heads(trial, forget_ids, members, seed)
    records["NR"] = _serve_nr(nr, trial, forget_ids, members, seed)
    for method in ("ECO_i", "ECO", "head-NR"):
        records[method]["speedup"] = records["NR"]["time_s"] / max(records[method]["time_s"], 1e-12)
    return records


def _trial_record(trial, index):
    return {
        "trial": index,
        "seed": trial.seed,
        "n_phi": len(trial.phi_ids),
        "n_ccp": len(trial.ccp_ids),
        "n_test": len(trial.test_ids),
        "n_support_vectors": len(trial.support_ids),
        "phi_training_s": trial.phi_training_s,
        "head_fit_s": trial.head_fit_s,
        "head_gamma": trial.gamma,
        "head_test_accuracy": float(trial.base.head_.score(trial.features[trial.test_ids], trial.y[trial.test_ids])),
    }


def _run_trial(trial, index, plan, bar, out):
    """Every request of one trial; appends to ``out['measurements']`` and ``out['skipped']``."""
    nr = NaiveRetraining(trial.network, trial.config).fit(trial.X[trial.train_ids], trial.y[trial.train_ids],
                                                          ids=trial.train_ids.tolist())
    for scenario_index, scenario in enumerate(plan["scenarios"]):
        pool = trial.ccp_ids if scenario == "random" else trial.support_ids
        for size in plan["sizes"]:
            bar.set_postfix_str(f"trial {index + 1}, {scenario}, |D_f|={size}")
            if size > len(pool):
                out["skipped"].append({"trial": index, "scenario": scenario, "size": size, "pool": len(pool)})
                bar.update()
                continue
            rng = np.random.default_rng([plan["seed"], index, scenario_index, size])
            forget_ids = np.sort(rng.choice(pool, size=size, replace=False))
            records = serve_request(trial, nr, forget_ids, trial.seed)
            for method in METHODS:
                out["measurements"].append(
                    {"trial": index, "scenario": scenario, "size": size, "method": method, **records[method]})
            bar.update()


def _check_seeds(seed: Any, trials: int) -> None:
    """Refuse a base seed whose trials' seeds ``seed .. seed + trials - 1`` leave [0, :data:`MAX_SEED`].

    Checked before any work: otherwise the first trial past the range fails
    after the earlier ones ran, and a negative seed deep in the first split.

    Raises
    ------
    InvalidInputError
        If ``seed`` is not an integer or a trial's seed is out of range.
    """
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise InvalidInputError(f"seed must be an integer, got {seed!r}")
    if seed < 0 or seed + trials - 1 > MAX_SEED:
        raise InvalidInputError(
            f"the seeds of the trials, seed .. seed + trials - 1 = {seed} .. {seed + trials - 1}, "
            f"must lie in [0, {MAX_SEED}] (2**32 - 1)"
        )


def _plan(dataset, trials, sizes, quick, epochs, threads, worst_case, device, seed):
    """The settings of a run with every default resolved."""
    if dataset not in DATASETS:
        raise InvalidInputError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    setup = DATASETS[dataset]
    trials = (2 if quick else 10) if trials is None else int(trials)
    sizes = tuple(int(s) for s in ((5, 10) if quick else DEFAULT_SIZES)) if sizes is None else tuple(int(s) for s in sizes)
    if quick and epochs is None:
        epochs = setup.quick_epochs
    if trials < 1 or not sizes or min(sizes) < 1:
        raise InvalidInputError("trials and every size must be >= 1")
    _check_seeds(seed, trials)
    n_ccp = ccp_size(setup.n_train)  # what the split of Trial gives, not n_train // 2
    if max(sizes) >= n_ccp:
        # D_f = all of C_CP would leave head-NR, the exactness reference,
        # nothing to be refitted on
        raise InvalidInputError(
            f"request sizes must be smaller than |C_CP| = {n_ccp} (head-NR is refitted on C_CP minus D_f), "
            f"got {max(sizes)}"
        )
    recipe = setup.training.replace(device=device)
    if epochs is not None:
        recipe = recipe.replace(epochs=int(epochs))
    return {
        "dataset": dataset, "setup": setup, "trials": trials, "sizes": sizes, "recipe": recipe, "seed": seed,
        "threads": setup.threads if threads is None else int(threads), "device": device,
        "scenarios": SCENARIOS if worst_case else SCENARIOS[:1],
    }


def _settings(plan, data_dir, quick, targets):
    setup, recipe = plan["setup"], plan["recipe"]
    return {
        "dataset": plan["dataset"],
        "data_dir": None if data_dir is None else str(data_dir),
        "trials": plan["trials"],
        "sizes": list(plan["sizes"]),
        "scenarios": list(plan["scenarios"]),
        "seed": plan["seed"],
        "quick": quick,
        "threads": plan["threads"],
        "device": str(plan["device"]),
        "n_train": setup.n_train,
        "n_test": setup.n_test,
        "split": "train = Phi part (half, Phi's lineage, not deletable) + C_CP (half, deletable); "
        "test = attack half (non-members of the MIA) + evaluation half (MIA(D_test))",
        "training": {k: (str(v) if k == "device" else v) for k, v in dataclasses.asdict(recipe).items()},
        "head": {"class": "eco.CPSVM", "C": setup.head_C, "gamma": HEAD_GAMMA},
        "targets": dataclasses.asdict(targets),
    }


def _environment():
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }


def _run_trials(X, y, plan, progress):
    """Every trial of the plan, with torch's thread count set for the run and restored."""
    from tqdm.auto import tqdm

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(plan["threads"])
    collected: Dict[str, List[Any]] = {"trials": [], "measurements": [], "skipped": []}
    try:
        steps = plan["trials"] * len(plan["scenarios"]) * len(plan["sizes"])
        with tqdm(total=steps, desc=f"eco experiment ({plan['dataset']})", unit="request",
                  disable=not progress) as bar:
            for index in range(plan["trials"]):
                seed = plan["seed"] + index
                trial = Trial(X, y, plan["setup"], plan["recipe"].replace(seed=seed), seed, plan["dataset"],
                              plan["device"])
                bar.set_postfix_str(f"trial {index + 1}: training Phi")
                trial.prepare()
                collected["trials"].append(_trial_record(trial, index))
                _run_trial(trial, index, plan, bar, collected)
    finally:
        torch.set_num_threads(previous_threads)
    return collected


def run_experiment(
    dataset: str = "digits",
    *,
    data_dir: Optional[str] = None,
    trials: Optional[int] = None,
    sizes: Optional[Sequence[int]] = None,
    worst_case: bool = True,
    out: str = "results",
    seed: int = 0,
    quick: bool = False,
    epochs: Optional[int] = None,
    progress: bool = True,
    threads: Optional[int] = None,
    device: str = "cpu",
    targets: Optional[AcceptanceTargets] = None,
) -> Dict[str, Any]:
    """Run the experiment and write its results to ``out``.

    Parameters
    ----------
    dataset : {"digits", "mnist"}, default="digits"
        Which data; see :data:`DATASETS` for splits and recipes.
    data_dir : str or os.PathLike, optional
        Folder of the MNIST IDX files (mnist only, refused with another
        dataset; default ``ECO_MNIST_DIR``).
    trials : int, optional
        Independent trials (seeds ``seed .. seed + trials - 1``); default 10 (2 with ``quick``).
    sizes : sequence of int, optional
        Request sizes |D_f|; default (5, 10, 20, 30, 40, 50) ((5, 10) with ``quick``).
    worst_case : bool, default=True
        Also run requests drawn only from support vectors (extra rows in every table).
    out : str or os.PathLike, default="results"
        Output folder (created).
    seed : int, default=0
        Base seed; the trials' seeds ``seed .. seed + trials - 1`` must lie
        in [0, 2**32 - 1].
    quick : bool, default=False
        Smoke run: 2 trials, sizes 5 and 10, the dataset's ``quick_epochs``
        (explicit ``trials``, ``sizes`` and ``epochs`` win).
    epochs : int, optional
        Override the epochs of the recipe (Phi and NR alike).
    progress : bool, default=True
        Show tqdm progress bars.
    threads : int, optional
        ``torch.set_num_threads`` during the run (restored afterwards); default 1.
    device : str, default="cpu"
        Where the networks run ("auto" for CUDA when available).
    targets : AcceptanceTargets, optional
        The checks of the report; default ``DEFAULT_TARGETS[dataset]``.

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    import matplotlib  # noqa: F401  (needed for the plots at the end: fail now, not after the run)
    import tqdm  # noqa: F401

    plan = _plan(dataset, trials, sizes, quick, epochs, threads, worst_case, device, seed)
    if data_dir is not None and dataset != "mnist":
        # a folder given for another dataset is a mistake (--dataset mnist
        # forgotten?), not something to record in the settings and ignore
        raise InvalidInputError(f"data_dir is the folder of the MNIST files; the {dataset} dataset takes none")
    targets = DEFAULT_TARGETS[dataset] if targets is None else targets
    X, y = load_dataset(dataset, data_dir)
    setup = plan["setup"]
    if setup.n_train + setup.n_test > len(y):
        raise InvalidInputError(f"{dataset} has {len(y)} examples, fewer than {setup.n_train} + {setup.n_test}")
    Path(out).mkdir(parents=True, exist_ok=True)  # fail before minutes of work if the folder is unusable

    started = time.perf_counter()
    collected = _run_trials(X, y, plan, progress)
    summary = summarise(collected["measurements"])
    results = {
        "settings": _settings(plan, data_dir, quick, targets),
        "environment": _environment(),
        "total_wall_time_s": time.perf_counter() - started,
        **collected,
        "summary": summary.to_list(),
        "targets": check_targets(summary, targets),
    }
    write_outputs(results, out)
    return results
