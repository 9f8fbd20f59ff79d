"""Cost of one resource-monitor sample, with the child-process list refreshed every sample (the
old behaviour) and cached (refreshed every second), measured interleaved in one run.

    python benchmarks/monitor_cost.py --samples 300
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_scripts.measure.monitor import ResourceMonitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="samples per variant")
    parser.add_argument("--children", type=int, default=2, help="sleeping child processes to watch")
    args = parser.parse_args()
    kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(args.children)]
    try:
        monitors = {"refresh every sample": ResourceMonitor(children_refresh_s=0.0),
                    "cached (1 s refresh)": ResourceMonitor(children_refresh_s=1.0)}
        for monitor in monitors.values():
            monitor.process.cpu_percent(None)
            monitor._t0 = time.perf_counter()
        costs: dict[str, list[float]] = {name: [] for name in monitors}
        for _ in range(args.samples):
            for name, monitor in monitors.items():  # interleaved: both see the same machine load
                started = time.perf_counter()
                monitor._sample()
                costs[name].append((time.perf_counter() - started) * 1e3)
        for name, values in costs.items():
            print(f"{name:22s} median {statistics.median(values):.3f} ms, p90 "
                  f"{sorted(values)[int(0.9 * len(values))]:.3f} ms per sample ({len(values)} samples, "
                  f"{args.children} children)")
        old, new = (statistics.median(v) for v in costs.values())
        print(f"cached / refresh-every-sample: {new / old:.3f}")
    finally:
        for kid in kids:
            kid.kill()


if __name__ == "__main__":
    main()
