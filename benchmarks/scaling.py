"""The scaling sweep: eco against SVC from n = 5,000 to 100,000, with a log-log plot.

Usage (from the repository root)::

    python benchmarks/scaling.py                     # the default sweep (n <= 20,000)
    ECO_BENCH_MAX_N=100000 python benchmarks/scaling.py   # up to 100,000 rows
    python benchmarks/scaling.py --out DIR --datasets mixture

Each point (data set, n) runs in its own subprocess, so that its peak
resident memory (``resource.getrusage``'s ``ru_maxrss``, which sees C
allocations that ``tracemalloc`` misses) is its own, and a second
subprocess measures the peak of eco alone (fit, one error example, a batch of
50). Everything is checked before it is timed (see :mod:`scaling_point`).
Writes ``scaling.json`` (every time), ``scaling.md`` (medians, ratios of
medians, slopes) and ``scaling.png`` (log-log) in ``--out``
(default ``benchmarks/results``).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine_load  # noqa: E402

#: Curves of the plot and of the slope table, by their key in a point's times.
CURVES = ("CPSVM.fit", "SVC.fit", "decrement reserve", "decrement margin", "decrement error",
          "decrement batch of 50", "decrement margin screening=False",
          "decrement error screening=False", "decrement batch of 50 screening=False",
          "decrement margin one thread", "decrement error one thread",
          "decrement reserve (warm stream)", "decrement margin (warm stream)",
          "decrement error (warm stream)",
          "SVC refit without a margin", "SVC refit without an error",
          "numpy margin", "numpy error", "matvec K_S.T @ v")


def _rounds(n):
    """Rounds per timing: fewer at the large sizes, where one call takes seconds."""
    if n >= 50_000:
        return {"fit": 1, "unlearn": 3, "reserve": 9, "refit": 1, "numpy": 2}
    return {"fit": 3, "unlearn": 7, "reserve": 21, "refit": 3, "numpy": 5}


def _article(kind):
    return "an" if kind == "error" else "a"


def measure_point(dataset, n):
    """Check and time every call at one point; returns a dict of lists of seconds."""
    from threadpoolctl import threadpool_limits

    import scaling_point as sp

    threads = os.environ.get("ECO_BENCH_BLAS_THREADS", "1")
    limits = None if threads.strip().lower() in ("", "none") else int(threads)
    with threadpool_limits(limits=limits, user_api="blas"):
        return _measure(sp, dataset, n)


def _measure(sp, dataset, n):
    r = _rounds(n)
    t_start = time.perf_counter()
    load = machine_load.MachineLoad()
    p = sp.Point(dataset, n)
    p.check_fit()
    times, info = {}, {"source": p.source, "gamma": p.gamma,
                       "n_margin": len(p.model.margin_), "n_error": len(p.model.error_),
                       "n_reserve": len(p.model.reserve_)}
    times["CPSVM.fit"] = sp.time_calls(p.fit, rounds=r["fit"])
    times["CPSVM.fit one thread"] = _one_thread(lambda: sp.time_calls(p.fit, rounds=r["fit"]))
    times["SVC.fit"] = sp.time_calls(p.svc_fit, rounds=r["fit"])
    fresh = lambda: (p.fresh(),)  # noqa: E731
    for kind in sp.KINDS + ("batch",):
        ids = p.batch() if kind == "batch" else p.example(kind)
        done = p.check_removal(ids, kind)
        label = "batch of 50" if kind == "batch" else kind
        request = ids if kind == "batch" else ids[0]
        rounds = r["reserve"] if kind == "reserve" else r["unlearn"]

        def default_call(model):
            model.decrement(request)

        times[f"decrement {label}"] = sp.time_calls(default_call, fresh, rounds)
        if kind != "reserve":
            # the unscreened path, every row at every step (same events; the
            # switch is outside the timing)
            times[f"decrement {label} screening=False"] = sp.time_calls(
                default_call, lambda: (p.fresh().set_params(screening=False),), rounds)
            # without the helper thread of the row products (same bits)
            times[f"decrement {label} one thread"] = _one_thread(
                lambda: sp.time_calls(default_call, fresh, rounds))
        if kind != "batch":
            # one warm model, a request after another (see Point.stream)
            times[f"decrement {label} (warm stream)"], migr = p.stream(kind, rounds)
            info[f"{label} (warm stream) migrations"] = migr
        info[f"{label} migrations"] = done["receipt"].n_migrations
        info[f"{label} steps"] = done["receipt"].n_steps
        info[f"{label}: ids on the path"] = sum(
            v == "path" for v in done["receipt"].paths.values())
        Xr, yr = p.remaining(ids)
        refit = "SVC refit without 50" if kind == "batch" else \
            f"SVC refit without {_article(kind)} {kind}"
        times[refit] = sp.time_calls(lambda: p.svc_fit(Xr, yr), rounds=r["refit"])
        if kind in ("margin", "error") and n <= sp.numpy_max_n():
            state = p.numpy_state(ids)
            times[f"numpy {kind}"] = sp.time_calls(
                lambda s: s.unlearn(ids[0]), lambda: (_copy_state(state),), r["numpy"])
    if n <= sp.numpy_max_n():
        K_S, v = p.margin_rows()
        times["matvec K_S.T @ v"] = sp.time_calls(lambda: v @ K_S, rounds=50)
    info["wall_s"] = time.perf_counter() - t_start
    info["machine load"] = load.result()
    return {"dataset": dataset, "n": n, "times": times, "info": info,
            "peak_rss_mb_whole_run": _peak_mb()}


def _one_thread(measure):
    """`measure()` with eco's helper thread off (docs/cp-engine.md section 12)."""
    from eco import _cp_core

    old = _cp_core.set_parallel_min_work(float("inf"))
    try:
        return measure()
    finally:
        _cp_core.set_parallel_min_work(old)


def _copy_state(state):
    import copy

    return copy.deepcopy(state)


def _peak_mb():
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_memory(dataset, n):
    """Peak memory of eco alone: data, fit, one error example, a batch of 50."""
    import scaling_point as sp

    X, y, _ = sp.load_data(dataset, n)
    data_mb = _peak_mb()
    from eco import CPSVM

    model = CPSVM(C=sp.C, kernel="rbf", gamma=1.0 / (X.shape[1] * X.var())).fit(X, y)
    fit_mb = _peak_mb()
    model.decrement(int(np.asarray(model.error_)[0]))
    rest = np.setdiff1d(np.arange(n), [int(np.asarray(model.error_)[0])])
    model.decrement([int(i) for i in np.random.default_rng(1).choice(rest, sp.BATCH, False)])
    return {"peak_rss_mb_data": data_mb, "peak_rss_mb_fit": fit_mb, "peak_rss_mb_eco": _peak_mb()}


def _child(mode, dataset, n):
    """Run one point in a subprocess; its JSON result."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    try:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), f"--{mode}", dataset,
                        str(n), "--json", out], check=True)
        return json.loads(Path(out).read_text())
    finally:
        os.unlink(out)


# ------------------------------------------------------------------ report


def slope(ns, ts):
    """Least-squares slope of log t against log n (None with fewer than two points)."""
    if len(ns) < 2:
        return None
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


RATIOS = (  # (label, numerator, denominator)
    ("CPSVM.fit / SVC.fit", "CPSVM.fit", "SVC.fit"),
    ("refit / reserve", "SVC refit without a reserve", "decrement reserve"),
    ("refit / margin", "SVC refit without a margin", "decrement margin"),
    ("refit / error", "SVC refit without an error", "decrement error"),
    ("refit / batch of 50", "SVC refit without 50", "decrement batch of 50"),
    ("refit / reserve (warm stream)", "SVC refit without a reserve",
     "decrement reserve (warm stream)"),
    ("refit / margin (warm stream)", "SVC refit without a margin",
     "decrement margin (warm stream)"),
    ("refit / error (warm stream)", "SVC refit without an error",
     "decrement error (warm stream)"),
    ("refit / margin (screening=False)", "SVC refit without a margin",
     "decrement margin screening=False"),
    ("refit / error (screening=False)", "SVC refit without an error",
     "decrement error screening=False"),
    ("refit / batch of 50 (screening=False)", "SVC refit without 50",
     "decrement batch of 50 screening=False"),
    ("numpy / eco margin", "numpy margin", "decrement margin"),
    ("numpy / eco error", "numpy error", "decrement error"),
    ("one thread / default, fit", "CPSVM.fit one thread", "CPSVM.fit"),
    ("one thread / default, margin", "decrement margin one thread", "decrement margin"),
    ("one thread / default, error", "decrement error one thread", "decrement error"),
    ("one thread / default, batch of 50", "decrement batch of 50 one thread",
     "decrement batch of 50"),
)


def summarise(points):
    """Medians, ratios of medians, per-migration costs and slopes."""
    for pt in points:
        med = {k: float(np.median(v)) for k, v in pt["times"].items()}
        pt["medians"] = med
        pt["ratios"] = {lab: med[a] / med[b] for lab, a, b in RATIOS if a in med and b in med}
        mv = med.get("matvec K_S.T @ v")
        for kind in ("margin", "error"):
            m = pt["info"].get(f"{kind} migrations")
            if mv and m:
                pt["ratios"][f"{kind}: per migration / matvec"] = \
                    med[f"decrement {kind}"] / m / mv
                stream = pt["times"].get(f"decrement {kind} (warm stream)")
                migr = pt["info"].get(f"{kind} (warm stream) migrations")
                if stream and migr and sum(migr):
                    pt["ratios"][f"{kind}: per migration / matvec (warm stream)"] = \
                        sum(stream) / sum(migr) / mv
                if f"decrement {kind} screening=False" in med:
                    pt["ratios"][f"{kind}: per migration / matvec (screening=False)"] = \
                        med[f"decrement {kind} screening=False"] / m / mv
    slopes = {}
    for d in sorted({pt["dataset"] for pt in points}):
        pts = sorted((pt for pt in points if pt["dataset"] == d), key=lambda q: q["n"])
        slopes[d] = {}
        for c in CURVES + ("peak_rss_mb_eco",):
            xs = [(pt["n"], pt["medians"].get(c, pt.get("memory", {}).get(c))) for pt in pts]
            xs = [(a, b) for a, b in xs if b]
            slopes[d][c] = slope([a for a, _ in xs], [b for _, b in xs])
    return slopes


def _fmt(t):
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def write_markdown(points, slopes, path, command):
    lines = ["# eco scaling benchmark", "", f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"BLAS threads {os.environ.get('ECO_BENCH_BLAS_THREADS', '1')}; "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             machine_load.summary(points), ""]
    for d in sorted(slopes):
        pts = sorted((pt for pt in points if pt["dataset"] == d), key=lambda q: q["n"])
        lines += [f"## {d}: {pts[0]['info']['source']}", "",
                  "Medians (the default call unless marked screening=False, or one thread:"
                  " eco's helper thread of the row products off):", "",
                  "| measurement | " + " | ".join(f"n={pt['n']}" for pt in pts) + " | slope |",
                  "|---" * (len(pts) + 2) + "|"]
        keys = list(dict.fromkeys(k for pt in pts for k in pt["medians"]))
        for k in keys:
            cells = [(_fmt(pt["medians"][k]) if k in pt["medians"] else "") for pt in pts]
            s = slopes[d].get(k)
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {'' if s is None else f'{s:.2f}'} |")
        for k in ("peak_rss_mb_data", "peak_rss_mb_fit", "peak_rss_mb_eco"):
            cells = [f"{pt.get('memory', {}).get(k, float('nan')):.0f} MB" for pt in pts]
            s = slopes[d].get(k)
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {'' if s is None else f'{s:.2f}'} |")
        for k in ("n_margin", "n_error", "margin migrations", "error migrations",
                  "batch of 50 migrations", "batch of 50: ids on the path"):
            lines.append(f"| {k} | " + " | ".join(str(pt["info"].get(k, "")) for pt in pts) + " | |")
        for k, label in (("steal", "CPU stolen by the host"),
                         ("others", "CPU used by other processes")):
            cells = [machine_load.share(pt["info"].get("machine load", {}).get(k)) for pt in pts]
            lines.append(f"| {label} | " + " | ".join(cells) + " | |")
        lines += ["", "Ratios of medians (same run):", "",
                  "| ratio | " + " | ".join(f"n={pt['n']}" for pt in pts) + " |",
                  "|---" * (len(pts) + 1) + "|"]
        rkeys = list(dict.fromkeys(k for pt in pts for k in pt["ratios"]))
        for k in rkeys:
            lines.append(f"| {k} | " + " | ".join(
                f"{pt['ratios'][k]:.3g}" if k in pt["ratios"] else "" for pt in pts) + " |")
        lines.append("")
    Path(path).write_text("\n".join(lines) + "\n")


def write_plot(points, slopes, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted(slopes)
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 5.5), squeeze=False)
    colours = plt.get_cmap("tab20").colors
    for ax, d in zip(axes[0], datasets):
        pts = sorted((pt for pt in points if pt["dataset"] == d), key=lambda q: q["n"])
        for k, c in enumerate(CURVES):
            xs = [(pt["n"], pt["medians"][c]) for pt in pts if c in pt["medians"]]
            if not xs:
                continue
            s = slopes[d].get(c)
            style = "--" if c.startswith(("SVC", "numpy", "matvec")) else "-"
            ax.loglog(*zip(*xs), style, marker="o", color=colours[k % len(colours)],
                      label=f"{c} (slope {s:.2f})" if s else c)
        ax.set_xlabel("n (rows)")
        ax.set_ylabel("median time (s)")
        ax.set_title(f"{d}: {pts[0]['info']['source']}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--datasets", default="mixture,mnist")
    ap.add_argument("--point", nargs=2, metavar=("DATASET", "N"))
    ap.add_argument("--memory", nargs=2, metavar=("DATASET", "N"))
    ap.add_argument("--json")
    ap.add_argument("--from-json", nargs="+", metavar="FILE",
                    help="no measurement: merge the points of earlier scaling.json files "
                         "(later files win) and write the table and plot again")
    args = ap.parse_args(argv)
    if args.point or args.memory:
        d, n = args.point or args.memory
        res = measure_point(d, int(n)) if args.point else measure_memory(d, int(n))
        Path(args.json).write_text(json.dumps(res))
        return
    import scaling_point as sp

    wanted = args.datasets.split(",")
    points = []
    if args.from_json:
        merged, commands = {}, []
        for f in args.from_json:
            data = json.loads(Path(f).read_text())
            commands.append(data["command"])
            for pt in data["points"]:
                merged[(pt["dataset"], pt["n"])] = pt
        _write(list(merged.values()), Path(args.out), " ; ".join(commands))
        return
    failed = []
    for d, n in sp.sweep_points():
        if d not in wanted:
            continue
        print(f"[scaling] {d} n={n} ...", flush=True)
        try:
            pt = _child("point", d, n)
            pt["memory"] = _child("memory", d, n)
        except subprocess.CalledProcessError as exc:
            # a failed check (or a crash) drops the point, loudly, and the sweep goes on
            print(f"[scaling] {d} n={n} FAILED ({exc}); see the traceback above", flush=True)
            failed.append(f"{d} n={n}")
            continue
        print(f"[scaling] {d} n={n} done in {pt['info']['wall_s']:.0f} s", flush=True)
        points.append(pt)
    _write(points, Path(args.out), " ".join([f"ECO_BENCH_MAX_N={sp.max_n()}", "python",
                                             *sys.argv]))
    if failed:
        sys.exit(f"[scaling] failed points: {', '.join(failed)}")


def _write(points, out, command):
    """scaling.json, scaling.md and scaling.png in `out`; print the table."""
    slopes = summarise(points)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps({"command": command, "points": points,
                                                  "slopes": slopes}, indent=1))
    write_markdown(points, slopes, out / "scaling.md", command)
    write_plot(points, slopes, out / "scaling.png")
    print((out / "scaling.md").read_text())


if __name__ == "__main__":
    main()
