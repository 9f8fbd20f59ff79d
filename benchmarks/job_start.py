"""Start-up cost of a job's Python process: the import of each stage module, two checkouts side by side.

Each round imports every module in a fresh interpreter once per checkout, alternating which checkout goes
first, and prints per module the median over rounds of each and the ratio after / before paired by round
(with its range), so a load change hits both alike. The import is what every Snakemake job of that stage
pays before its work starts (the shims import one stage module each).

    python benchmarks/job_start.py BEFORE_CHECKOUT AFTER_CHECKOUT [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

MODULES = ["workflow_scripts.stages.latency", "workflow_scripts.stages.evaluate", "workflow_scripts.stages.engine",
           "workflow_scripts.stages.runoff", "workflow_scripts.stages.export", "workflow_scripts.summary.summarize"]


def import_s(checkout: str, module: str) -> float:
    """Wall time (s) of ``python -c 'import module'`` with ``checkout`` first on the path."""
    env = {**os.environ, "PYTHONPATH": checkout}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], env=env, check=True, cwd=checkout)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    for module in MODULES:
        before, after = [], []
        for r in range(args.rounds):
            pair = [(args.before, before), (args.after, after)]
            for checkout, out in (pair if r % 2 == 0 else pair[::-1]):
                out.append(import_s(checkout, module))
        ratio = np.asarray(after) / np.asarray(before)
        print(f"{module:40s} before {np.median(before):.3f} s  after {np.median(after):.3f} s  "
              f"after/before {np.median(ratio):.3f} (rounds {ratio.min():.3f}-{ratio.max():.3f}, n={len(ratio)})")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
