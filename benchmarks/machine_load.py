"""What else the machine did while a benchmark ran: is a run "quiet"?

On a virtual machine two things slow a measurement down without showing in
its own numbers: other processes of this machine, and the hypervisor giving
this machine's CPUs to other guests ("steal" time, which ``top`` inside the
guest does not show). Both are read from ``/proc/stat`` (Linux) before and
after a measurement, so that a run can say of itself whether it was quiet
instead of the reader having to take it on trust. Elsewhere nothing is
recorded and the run says so.
"""

import os
import resource
import time
from pathlib import Path

#: A measurement is quiet when the host took less than this share of the
#: machine's CPU time (steal) ...
QUIET_STEAL = 0.02
#: ... and other processes used less than this share of its CPUs.
QUIET_OTHERS = 0.05


def cpu_ticks():
    """(total, steal, busy) CPU ticks of the whole machine since boot, or None.

    From the first line of ``/proc/stat``: ``busy`` is every tick that was
    neither idle, waiting for I/O nor stolen (this process's included);
    guest time is already part of ``user`` there.
    """
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if len(first) < 9 or first[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal
    ticks = [int(x) for x in first[1:9]]
    total = sum(ticks)
    steal = ticks[7]
    return total, steal, total - ticks[3] - ticks[4] - steal


def _own_cpu_s():
    """CPU seconds this process (all its threads) has used so far."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _load_avg():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


class MachineLoad:
    """The machine's load from construction to :meth:`result`.

    Examples
    --------
    >>> load = MachineLoad()
    >>> ...                                   # the measurement
    >>> load.result()["quiet"]                # doctest: +SKIP
    True
    """

    def __init__(self):
        self._t0 = time.perf_counter()
        self._ticks0 = cpu_ticks()
        self._own0 = _own_cpu_s()
        self._load0 = _load_avg()

    def result(self):
        """Dict: ``steal`` (share of the machine's CPU time taken by the host),
        ``others`` (share of its CPUs used by other processes), the 1-minute
        load average at the start and at the end, and ``quiet`` (both shares
        below :data:`QUIET_STEAL` and :data:`QUIET_OTHERS`). The shares are
        None where ``/proc/stat`` cannot be read; ``quiet`` is then False.
        """
        ticks1, wall = cpu_ticks(), time.perf_counter() - self._t0
        out = {"steal": None, "others": None,
               "load_avg_start": self._load0, "load_avg_end": _load_avg()}
        if self._ticks0 is not None and ticks1 is not None and ticks1[0] > self._ticks0[0]:
            total = ticks1[0] - self._ticks0[0]
            out["steal"] = (ticks1[1] - self._ticks0[1]) / total
            # the ticks count whole 1/HZ slices and the process's own time is
            # exact: the difference can dip below 0 by a tick
            others_s = (ticks1[2] - self._ticks0[2]) / os.sysconf("SC_CLK_TCK") \
                - (_own_cpu_s() - self._own0)
            out["others"] = max(0.0, others_s) / (wall * (os.cpu_count() or 1))
        out["quiet"] = (out["steal"] is not None and out["steal"] < QUIET_STEAL
                        and out["others"] < QUIET_OTHERS)
        return out


def share(x):
    """A share as a percentage for a table ("" for None)."""
    return "" if x is None else f"{100 * x:.1f}%"


def _shares(steal, others):
    # the two shares and the thresholds, as every report words them
    return (f"{share(steal)} of the CPU time stolen by the host and {share(others)} used by "
            f"other processes; quiet below {share(QUIET_STEAL)} and {share(QUIET_OTHERS)}")


def summary(points):
    """One sentence on a sweep's points (each with ``info["machine load"]``): quiet or not."""
    loads = [pt["info"].get("machine load") for pt in points]
    if not loads or any(ld is None or ld.get("steal") is None for ld in loads):
        return "Machine load: not recorded for every point (no /proc/stat, or an older run)."
    noisy = [f"{pt['dataset']} n={pt['n']}" for pt, ld in zip(points, loads) if not ld["quiet"]]
    verdict = "quiet" if not noisy else f"not quiet at {', '.join(noisy)}"
    worst = _shares(max(ld["steal"] for ld in loads), max(ld["others"] for ld in loads))
    return f"Machine load during the points: {verdict} (at most {worst})."


def sentence(load):
    """One sentence on one :meth:`MachineLoad.result`."""
    if load["steal"] is None:
        return "machine load: not recorded (no /proc/stat)"
    return (f"machine load: {'quiet' if load['quiet'] else 'NOT quiet'} "
            f"({_shares(load['steal'], load['others'])})")
