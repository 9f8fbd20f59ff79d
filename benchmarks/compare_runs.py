"""Two finished runs of the same config, compared: are the artifacts the same apart from what is measured?

Issue 22's check that a change of layout changed no result: run the quickstart before and after into
two results folders, then

    python benchmarks/compare_runs.py /tmp/before_results /tmp/after_results

It prints, per kind of file, how many are byte-identical (a .keras archive: the same weights and config;
its save time differs), and for every Parquet table whether its
columns are the same and whether its values are, leaving out the columns that hold measurements
(times, latencies, resources, energy, noise, and what is derived from them: ranks, ties, choices) or
the run's identity (timestamps, git commit, scheduler ids). The columns left out are printed, so a
reader can judge the rule. Exit status 1 when anything else differs.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

# Columns whose values depend on the clock or the run: measurements, what is derived from them, identity.
MEASURED = re.compile(
    r"(^|_)(ms|s|mhz|w|j|mj)$|_s_|_ms_|latency|throughput|rss|cpu_percent|memory_percent|steal|other_processes|"
    r"noise|high_variation|timestamp|unix_time|iterations?$|tasks|samples|^git_|duration|elapsed|^valid$|"
    r"invalid|^position$|^load_s$|wall|clock|iqr|_cv$|scheduler|^chosen$|^rank$|^tie|pareto|^rejection$|"
    r"^notes$|^ours_|measured|^run$|energy|power|^feasible$|^p50|^p99|^why_not$|^budgets$|^fp32_valid$|"
    r"^cells$|^like_for_like$|^rounds$|^own_cores$")
# Time series of one measurement (resource samples, per-task latencies, runoff rounds): their row counts
# follow the clock, so only their columns are compared.
SERIES = re.compile(r"(_resources|_samples|latency_runoff|compression_resources)\.parquet$")
BINARY = {".onnx", ".tflite", ".xml", ".bin", ".npz", ".cache", ".engine"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def keras_same(a: Path, b: Path) -> bool:
    """Two .keras archives hold the same weights and the same config (apart from the Python object ids Keras
    writes as shared_object_id, and the save time in metadata.json)."""
    import zipfile

    za, zb = zipfile.ZipFile(a), zipfile.ZipFile(b)
    ids = re.compile(rb'"shared_object_id": \d+')
    return (za.read("model.weights.h5") == zb.read("model.weights.h5")
            and ids.sub(b"", za.read("config.json")) == ids.sub(b"", zb.read("config.json")))


def files(root: Path) -> dict[str, Path]:
    skip = {".snakemake", "logs", "benchmarks"}
    return {str(p.relative_to(root)): p for p in root.rglob("*")
            if p.is_file() and not (set(p.relative_to(root).parts) & skip)}


def compare_table(a: Path, b: Path, excluded: Counter, ignore: frozenset = frozenset()) -> str | None:
    """Why the two tables differ (None: same columns, same values outside the measured columns)."""
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    if list(left.columns) != list(right.columns):
        only_a = sorted(set(left.columns) - set(right.columns))
        only_b = sorted(set(right.columns) - set(left.columns))
        return f"columns differ (only before: {only_a}; only after: {only_b}; or order)"
    if SERIES.search(a.name):
        return None
    if len(left) != len(right):
        return f"{len(left)} rows before, {len(right)} after"
    kept = [c for c in left.columns if not MEASURED.search(c) and c not in ignore]
    excluded.update(c for c in left.columns if MEASURED.search(c) or c in ignore)
    if not kept:
        return None
    def canon(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[kept].astype(str)
        return out.sort_values(kept, kind="mergesort").reset_index(drop=True)
    x, y = canon(left), canon(right)
    if x.equals(y):
        return None
    diff = [c for c in kept if not x[c].equals(y[c])]
    return f"values differ in {diff[:6]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--ignore", action="append", default=[], metavar="COLUMN",
                        help="also leave this column out of the value comparison (e.g. config_hash when the "
                             "config gained a key between the runs); repeatable")
    args = parser.parse_args(argv)
    a, b = files(args.before), files(args.after)
    problems = [f"only before: {p}" for p in sorted(set(a) - set(b))] + \
               [f"only after: {p}" for p in sorted(set(b) - set(a))]
    same, differ, excluded = Counter(), Counter(), Counter()
    for rel in sorted(set(a) & set(b)):
        suffix = Path(rel).suffix
        if suffix == ".keras":
            ok = keras_same(a[rel], b[rel])
            (same if ok else differ)[suffix] += 1
            if not ok:
                problems.append(f"weights or config differ: {rel}")
        elif suffix in BINARY:
            (same if sha256(a[rel]) == sha256(b[rel]) else differ)[suffix] += 1
            if sha256(a[rel]) != sha256(b[rel]):
                problems.append(f"bytes differ: {rel}")
        elif suffix == ".parquet":
            why = compare_table(a[rel], b[rel], excluded, frozenset(args.ignore))
            (differ if why else same)[suffix] += 1
            if why:
                problems.append(f"{rel}: {why}")
    print(f"before: {args.before} ({len(a)} files); after: {args.after} ({len(b)} files)")
    for suffix in sorted(set(same) | set(differ)):
        kind = "same weights and config" if suffix == ".keras" else "byte-identical" if suffix in BINARY else \
            "same columns and unmeasured values (time series: same columns)"
        print(f"  {suffix:9s} {same[suffix]:4d} {kind}, {differ[suffix]:3d} differ")
    print(f"measured columns left out of the value comparison ({len(excluded)}): {', '.join(sorted(excluded))}")
    for line in problems:
        print("  DIFFERS:", line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
