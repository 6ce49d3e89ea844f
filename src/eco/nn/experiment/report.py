"""The written report: ``results.json``, one Markdown table per metric, ``summary.md``."""

import json
from pathlib import Path
from typing import Any, Dict, Sequence, Set

from eco.nn.experiment.protocol import AGGREGATION, BEST_RULES, METHODS, METRICS
from eco.nn.experiment.summary import Summary

__all__ = ["markdown_table", "targets_markdown", "write_outputs"]


def _format(value, kind):
    mean, std = value["mean"], value["std"]
    if kind == "percent":
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    if kind == "fraction":
        return f"{mean:.3f} ± {std:.3f}"
    if kind == "speedup":
        return f"{mean:,.0f} ± {std:,.0f}"
    if kind == "seconds":
        return f"{mean:.3g} ± {std:.2g}"
    return f"{mean:.1e} ± {std:.1e}"


def _score(summary, scenario, size, method, metric, rule):
    """A number where higher is better, for the rule of the metric."""
    value = summary.get(scenario, size, method, metric)
    if value is None:
        return None
    if rule == "gap_accuracy":
        return -abs(value["mean"] - summary.get(scenario, size, method, "test_accuracy")["mean"])
    if rule == "gap_mia":
        return -summary.get(scenario, size, method, "mia_gap")["mean"]
    return -value["mean"] if rule == "min" else value["mean"]


def _best_methods(summary, scenario, size, metric, rule, methods) -> Set[str]:
    scores = {m: _score(summary, scenario, size, m, metric, rule) for m in methods if m != "original"}
    scores = {m: v for m, v in scores.items() if v is not None}
    if not scores:
        return set()
    best = max(scores.values())
    # Exact methods tie to rounding; tolerate that so all of them are bold.
    tolerance = 1e-9 * max(1.0, abs(best))
    return {method for method, v in scores.items() if v >= best - tolerance}


def markdown_table(summary: Summary, metric: str, scenarios: Sequence[str], sizes: Sequence[int]) -> str:
    """One metric as a Markdown table: methods by request sizes, one block per scenario."""
    title, _, rule, kind = METRICS[metric]
    lines = [f"### {title}", "", f"{AGGREGATION[0].upper()}{AGGREGATION[1:]}; {BEST_RULES[rule]}.", ""]
    for scenario in scenarios:
        methods = [m for m in METHODS if any(summary.get(scenario, s, m, metric) for s in sizes)]
        if not methods:
            continue
        lines += [f"| {scenario} | " + " | ".join(f"\\|D_f\\| = {size}" for size in sizes) + " |",
                  "|---" * (len(sizes) + 1) + "|"]
        best = {size: _best_methods(summary, scenario, size, metric, rule, methods) for size in sizes}
        for method in methods:
            cells = []
            for size in sizes:
                value = summary.get(scenario, size, method, metric)
                text = "–" if value is None else _format(value, kind)
                cells.append(f"**{text}**" if value is not None and method in best[size] else text)
            name = "original (before unlearning)" if method == "original" else method
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _met(flag):
    return "met" if flag else "NOT met"


def targets_markdown(targets: Dict[str, Any]) -> str:
    """The acceptance targets, checked, as Markdown lines."""
    if not targets:
        return ""
    speed, accuracy = targets["speedup_at_size"], targets["eco_minus_nr_test_accuracy_points"]
    lines = ["### Targets (random requests)", "", f"Every figure: {AGGREGATION}.", ""]
    if speed["speedup"] is not None:
        lines.append(
            f"- ECO serving |D_f| = {speed['size']}: {speed['speedup']:,.0f}x faster than NR (mean of per-trial "
            f"ratios; mean times {speed['nr_time_s']:.3g} s vs {speed['eco_time_s']:.3g} s); required >= "
            f"{speed['required']:,.0f}x: {_met(speed['met'])}. {speed['note']}".rstrip()
        )
    lines.append(
        f"- ECO test accuracy minus NR's, worst over sizes: {accuracy['worst']:+.2f} points; "
        f"required >= {accuracy['required']:+.2f}: {_met(accuracy['met'])}."
    )
    for method, gap in targets["mia_gap"].items():
        lines.append(
            f"- {method}: |MIA(D_f) - MIA(D_test)| of the signed gap pooled over every forgotten example "
            f"(trials and sizes, weighted by |D_f|): {gap['pooled']:.3f} (signed {gap['pooled_signed']:+.3f}); "
            f"required <= {gap['required']:.3f}: {_met(gap['met'])}."
        )
    lines.append(
        "  (Same rule for ECO and NR. The signed gap is pooled because MIA(D_f) of a few examples is "
        "dominated by sampling noise, steps of 0.2 at |D_f| = 5, which absolute per-trial gaps would add up "
        "rather than cancel; the tables show the per-trial |gap|.)"
    )
    control = targets.get("mia_control_original")
    if control is not None:
        # two noise levels: a pooled gap within them is what a model that never saw D_f also shows
        powerful = control["pooled"] > 2 * control["noise"]
        verdict = ("the attack detects membership of D_f in the model that holds it" if powerful else
                   "no more than sampling noise: this attack cannot tell the head's members from non-members here, "
                   "so the MIA target cannot separate an unlearned model from one that still holds D_f; "
                   "exactness rests on the decision values below")
        lines.append(f"- Attack power: the original model (still trained on D_f), same rule: {control['pooled']:.3f} "
                     f"(signed {control['pooled_signed']:+.3f}; sampling noise about {control['noise']:.3f} over "
                     f"{control['n_examples']} forgotten examples): {verdict}.")
    exact = targets.get("exactness")
    if exact is not None and exact["max_decision_diff"] is not None:
        lines.append(f"- Exactness: largest |decision value - head-NR's| of ECO and ECO_i over every trial and size: "
                     f"{exact['max_decision_diff']:.1e}; required <= {exact['required']:.0e}: {_met(exact['met'])}.")
    return "\n".join(lines) + "\n"


def write_outputs(results: Dict[str, Any], out: Any) -> Path:
    """Write ``results.json``, the Markdown tables, ``summary.md`` and the plots."""
    from eco.nn.experiment.plots import write_plots

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    summary = Summary.from_list(results["summary"])
    settings = results["settings"]
    scenarios, sizes = settings["scenarios"], settings["sizes"]
    header = (
        f"# ECO experiment: {settings['dataset']}, {settings['trials']} trials\n\n"
        f"{settings['split']}. Total wall time {results['total_wall_time_s']:.1f} s "
        f"({settings['threads']} torch thread(s), device {settings['device']}).\n"
    )
    head = settings.get("head") or {}
    if "gamma" in head:  # results written before the head's gamma was stated lack it
        header += f"\nHead: eco.CPSVM(C={head['C']:g}); {head['gamma']}.\n"
    sections = [header, targets_markdown(results["targets"])]
    for metric, (_, stem, _, _) in METRICS.items():
        table = markdown_table(summary, metric, scenarios, sizes)
        (folder / f"{stem}.md").write_text(table + "\n")
        sections.append(table)
    (folder / "summary.md").write_text("\n".join(sections) + "\n")
    write_plots(summary, settings, folder)
    return folder
