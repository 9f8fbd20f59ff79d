"""Why a latency measurement was noisy: CPU steal time and the CPU other processes used meanwhile.

:class:`CpuNoise` reads the machine's CPU counters (``/proc/stat``, the aggregate ``cpu`` line) and
this process's own CPU time (``psutil``, every thread) at the start and end of a measurement:

- ``cpu_steal_percent``: steal jiffies / all jiffies over the measurement, in % of the machine (a
  hypervisor running other guests on our virtual CPUs);
- ``other_processes_cores``: busy CPU time of the whole machine (user, nice, system, irq, softirq)
  minus this process's own CPU time, divided by the wall time: how many cores other processes kept
  busy (0.8 means one other process used 80% of a core, on average);
- ``own_cores``: this process's CPU time / wall time.

Where ``/proc/stat`` is missing (not Linux) the machine-wide values are NaN. :func:`noise_reason`
turns them and the latency's robust dispersion into a sentence for the tables and the decision.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

PROC_STAT = Path("/proc/stat")
# Robust dispersion (IQR / median of the task latencies) above which a run is flagged noisy.
DISPERSION_LIMIT = 0.10
# Steal and other-process load worth naming in the reason (below these they are background noise).
STEAL_NOTABLE_PERCENT = 2.0
OTHER_NOTABLE_CORES = 0.2


def read_proc_stat(path: Path = PROC_STAT) -> dict[str, float] | None:
    """The aggregate CPU counters of ``/proc/stat`` in seconds (None where unreadable)."""
    try:
        first = path.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not first or first[0] != "cpu":
        return None
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    values = [float(v) / tick for v in first[1:1 + len(names)]]
    values += [0.0] * (len(names) - len(values))
    return dict(zip(names, values))


def _own_cpu_s() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


class CpuNoise:
    """Context manager: machine steal and other processes' CPU over the enclosed measurement."""

    def __init__(self, proc_stat: Path = PROC_STAT):
        self.proc_stat = proc_stat
        self.result: dict[str, float] = {}

    def __enter__(self) -> "CpuNoise":
        self._stat0 = read_proc_stat(self.proc_stat)
        self._own0 = _own_cpu_s()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self._t0, 1e-9)
        own = max(_own_cpu_s() - self._own0, 0.0)
        stat1 = read_proc_stat(self.proc_stat)
        self.result = noise_between(self._stat0, stat1, own, wall)


def noise_between(stat0: dict | None, stat1: dict | None, own_cpu_s: float, wall_s: float) -> dict[str, float]:
    """Steal %, other processes' cores and own cores from two /proc/stat readings (seconds)."""
    nan = float("nan")
    out = {"cpu_steal_percent": nan, "other_processes_cores": nan, "own_cores": own_cpu_s / wall_s}
    if stat0 is None or stat1 is None:
        return out
    delta = {k: stat1[k] - stat0[k] for k in stat0}
    total = sum(delta.values())
    busy = sum(delta[k] for k in ("user", "nice", "system", "irq", "softirq"))
    if total > 0:
        out["cpu_steal_percent"] = 100.0 * delta["steal"] / total
    # Clock ticks are coarse (10 ms): never report negative load.
    out["other_processes_cores"] = max(busy - own_cpu_s, 0.0) / wall_s
    return out


def noise_reason(dispersion: float, steal_percent: float, other_cores: float,
                 limit: float = DISPERSION_LIMIT) -> tuple[bool, str]:
    """(noisy, reason): noisy when IQR/median exceeds ``limit``; the reason names what was seen.

    e.g. ``(True, "IQR/median 0.14 > 0.10: steal 31%, other processes 0.8 cores")``.
    """
    def known(v):
        return v is not None and v == v

    noisy = known(dispersion) and dispersion > limit
    seen = []
    if known(steal_percent) and steal_percent >= STEAL_NOTABLE_PERCENT:
        seen.append(f"steal {steal_percent:.0f}%")
    if known(other_cores) and other_cores >= OTHER_NOTABLE_CORES:
        seen.append(f"other processes {other_cores:.1f} cores")
    # Enough digits that a value just over the limit never reads as the limit ('0.104 > 0.10', not '0.10 > 0.10').
    digits = 2
    while known(dispersion) and digits < 6 and noisy and f"{dispersion:.{digits}f}" == f"{limit:.{digits}f}":
        digits += 1
    head = f"IQR/median {dispersion:.{digits}f}" if known(dispersion) else "IQR/median unknown"
    if noisy:
        cause = ", ".join(seen) if seen else "no steal or other load seen (the engine itself varied: clocks, memory)"
        return True, f"{head} > {limit:.2f}: {cause}"
    return False, f"{head}" + (f"; {', '.join(seen)}" if seen else "")
