"""Planning cost: `snakemake -n` of the full study, and of a matrix with about 10x the jobs (the
calibration study switched on), each run several times alternately in one session.

    python benchmarks/planning_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def dry_run(workdir: Path, config: dict) -> tuple[float, int]:
    config_file = workdir / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                             str(workdir), "--configfile", str(config_file), "--cores", "2", "-n", "--quiet", "rules"],
                            capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    total = re.search(r"^total\s+(\d+)", result.stdout + result.stderr, re.M)
    return elapsed, int(total.group(1)) if total else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    study["backends"] = ["onnxruntime"]
    big = {**study, "calibration_study": {"enabled": True, "methods": ["entropy", "minmax", "percentile"],
                                          "num_images": [64, 256, 1024], "per_channel": [True, False],
                                          "symmetric_activations": [False, True]}}
    times: dict[str, list[float]] = {"study": [], "10x": []}
    jobs: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for name, config in (("study", study), ("10x", big)):
                elapsed, count = dry_run(Path(tmp), config)
                times[name].append(elapsed)
                jobs[name] = count
    for name in times:
        print(f"{name:6s} {jobs[name]:5d} jobs: median {statistics.median(times[name]):.2f} s "
              f"({', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"jobs ratio {jobs['10x'] / jobs['study']:.1f}x, time ratio "
          f"{statistics.median(times['10x']) / statistics.median(times['study']):.2f}x")


if __name__ == "__main__":
    main()
