"""The issue's Ray benchmark at full size, one backend per process.

A 100-class synthetic stand-in for deep features (Gaussian blobs around 100
random centres, 64 dims, seed 13; the workload of ``test_bench_ray.py``),
rbf with gamma = 1/64, C = 1. One run fits one backend, then times
``decrement`` of 1 id and of 50 ids (``audit=False``; the same ids for every
backend, drawn from a seeded permutation) and prints one JSON object: the fit
time, every request's wall time, the state digests after the fit and after
the requests (equal across backends), the peak resident memory of this
process and, for Ray, of every actor, Ray's round trip to every actor with no
work (``ping``) and, per request, the work of the slowest actor in each phase
(``RayHeadSet.work_s``: the snapshot and the path, then the erasure), whose
difference with the wall time is Ray's overhead per request, and the part of
that overhead the slowest actor spent taking the deltas of its heads
(``RayHeadSet.delta_s``) and committing (``RayHeadSet.commit_s``). The bytes the driver holds to restart actors
(``checkpoint_files``) are reported too.

One backend per process, one after the other, so that the two models never
share the machine's memory::

    nice -n 10 python benchmarks/ray_scale.py threads 20000 > threads.json
    nice -n 10 python benchmarks/ray_scale.py ray 20000 > ray.json

(``PYTHONPATH=src`` from a source checkout.) Ray runs on a local cluster of
two CPUs with two actors of 50 heads, at the priority of this process
(``RAY_worker_niceness=0``: Ray's default would lower them by 15), with
replies of up to 1 MB sent inline (``RAY_max_direct_call_object_size``;
Ray's default, 100 kB, sends a 50-id delta through the object store);
threads with ``n_jobs=2``.
"""

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

import eco
from eco import CPSVM

CLASSES, DIMS, SEED, ROUNDS = 100, 64, 13, 7


def problem(rows, classes=CLASSES):
    """The blobs of ``test_bench_ray.py``: rows, labels."""
    rng = np.random.default_rng(SEED)
    centres = rng.normal(size=(classes, DIMS))
    y = np.arange(rows) % classes
    return centres[y] + 0.9 * rng.normal(size=(rows, DIMS)), y


def _rss_peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(backend, rows, classes=CLASSES):
    """Fit and time the requests on `backend`; returns the results as a dict."""
    X, y = problem(rows, classes)
    out = {"backend": backend, "rows": rows, "classes": classes, "load_avg": os.getloadavg()}
    t0 = time.perf_counter()
    model = CPSVM(C=1.0, gamma=1.0 / DIMS, n_jobs=2, backend=backend).fit(X, y)
    out["fit_s"] = time.perf_counter() - t0
    out["digest_fit"] = model.state_digest()
    heads = model.head_set_
    order = np.random.default_rng(SEED).permutation(rows).tolist()
    for k in (1, 50):
        walls, work, delta, commit = [], [], [], []
        for _ in range(ROUNDS):
            ids, order = order[:k], order[k:]
            w0 = getattr(heads, "work_s", 0.0)
            d0 = getattr(heads, "delta_s", 0.0)
            c0 = getattr(heads, "commit_s", 0.0)
            t0 = time.perf_counter()
            model.decrement(ids, audit=False)
            walls.append(time.perf_counter() - t0)
            work.append(getattr(heads, "work_s", 0.0) - w0)
            delta.append(getattr(heads, "delta_s", 0.0) - d0)
            commit.append(getattr(heads, "commit_s", 0.0) - c0)
        out[f"decrement_{k}_s"] = walls
        if backend == "ray":
            out[f"decrement_{k}_slowest_actor_work_s"] = work
            out[f"decrement_{k}_overhead_s"] = [a - b for a, b in zip(walls, work)]
            # of which: the actors taking the deltas of their heads, and
            # committing (the snapshot dropped, the delta applied; slowest actor)
            out[f"decrement_{k}_delta_s"] = delta
            out[f"decrement_{k}_commit_s"] = commit
    out["digest_end"] = model.state_digest()
    out["rss_peak_bytes"] = _rss_peak()
    if backend == "ray":
        pings = []
        for _ in range(53):
            t0 = time.perf_counter()
            heads.ping()
            pings.append(time.perf_counter() - t0)
        out["ping_s"] = pings[3:]
        out["actor_rss_bytes"] = heads.memory()
        out["actor_rss_peak_bytes"] = heads.memory(peak=True)
        out["n_actors"] = len(heads.actors)
        out["checkpoint_bytes"] = sum(len(b) for b in heads.checkpoint_files())
    out["load_avg_end"] = os.getloadavg()
    return out


def main(argv):
    backend, rows = argv[1], int(argv[2])
    classes = int(argv[3]) if len(argv) > 3 else CLASSES
    if backend == "ray":
        # the actors at this process's priority, as the threads backend's
        # threads are: Ray's default lowers its workers by 15, and on a shared
        # machine they then wait behind every other job at each round trip
        os.environ.setdefault("RAY_worker_niceness", "0")
        # replies up to 1 MB inline: a 50-id request's delta is about 200 kB
        # per actor at 6,000 rows, and above Ray's default of 100 kB it goes
        # through the object store (about 1 ms more here)
        os.environ.setdefault("RAY_max_direct_call_object_size", str(1 << 20))
        import ray
        src = str(Path(eco.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        print(json.dumps(run(backend, rows, classes)), flush=True)
    finally:
        if backend == "ray":
            ray.shutdown()


if __name__ == "__main__":
    main(sys.argv)
