"""Decide again, with this checkout's decision code, on the rounds of earlier stability reruns.

``benchmarks/decision_stability.sh`` reruns the latency runoff N times on a copy of a finished run and keeps,
per rerun, the runoff's rounds (``runoffN.parquet``; older work folders only the job logs
``rerunN.<model>.log``, whose per-round lines are read instead). This script puts each rerun's rounds into
the copy's summary tables and runs the decision on them, so a change of the decision rule can be judged on
measured reruns without measuring again; run it from two checkouts (``git worktree``) to compare rules.

    python benchmarks/redecide_stability.py /tmp/decision_stability.* [--json out.json]

It prints, per work folder and rerun, the chosen engine and the tie set per model, then how often each
engine was chosen per model over all reruns.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow_scripts.decision import decide as dm  # noqa: E402
from workflow_scripts.decision.render import budgets_of  # noqa: E402
from workflow_scripts.stages import runoff as ro  # noqa: E402

ROUND_LINE = re.compile(r"round (\d+)/\d+ (\S+) (\S+): median ([0-9.]+|nan) ms, p99 ([0-9.]+|nan) ms")


def rounds_from_logs(work: Path, rerun: int, groups: pd.DataFrame) -> pd.DataFrame:
    """Runoff rows rebuilt from the per-round lines of a rerun's job logs (median and p99 per round)."""
    rows = []
    for log in sorted(work.glob(f"rerun{rerun}.*.log")):
        model = log.name.split(".")[-2]
        group = groups[groups["model"] == model]
        if not len(group):
            continue
        for line in log.read_text().splitlines():
            match = ROUND_LINE.search(line)
            if match:
                rows.append({**group.iloc[0].to_dict(), "round": int(match[1]) - 1, "backend": match[2],
                             "precision": match[3], "latency_median_ms": float(match[4]),
                             "latency_p99_ms": float(match[5]), "latency_iqr_ratio": float("nan"),
                             "cpu_steal_percent": float("nan"), "other_processes_cores": float("nan")})
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates(["model", "backend", "precision", "round"], keep="last") if len(frame) else frame


def redecide(work: Path) -> list[dict]:
    """One record per rerun and model: the chosen engine and the tie set under this checkout's rule."""
    summary = work / "results" / "summary"
    base = dm.read_tables(summary)
    budgets = budgets_of(pd.read_parquet(summary / "decision.parquet"))
    groups = base["runoff"][["device", "dataset", "input_size", "model"]].drop_duplicates()
    records = []
    reruns = sorted({int(m[1]) for p in work.iterdir() if (m := re.match(r"rerun(\d+)\.log$", p.name))})
    for rerun in reruns:
        saved = work / f"runoff{rerun}.parquet"
        rounds = pd.read_parquet(saved) if saved.exists() else rounds_from_logs(work, rerun, groups)
        if not len(rounds):
            continue
        tables = {**base, "runoff": rounds, "latency": ro.merge_round_statistics(base["latency"], rounds)}
        decision = dm.decide(tables, budgets)
        for model, group in decision.groupby("model"):
            chosen = group[group["chosen"].astype(bool)]
            if not len(chosen):
                continue
            tied = group[group["tie"].astype(bool)]
            records.append({"work": str(work), "rerun": rerun, "model": model,
                            "chosen": f"{chosen.iloc[0]['backend']} {chosen.iloc[0]['precision']}",
                            "tie": sorted((tied["backend"] + " " + tied["precision"]).tolist()),
                            "source": saved.name if saved.exists() else "job logs"})
    return records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="+", type=Path, help="work folders of benchmarks/decision_stability.sh")
    parser.add_argument("--json", type=Path, help="also write every record here")
    args = parser.parse_args(argv)
    records = []
    for work in args.work:
        if not (work / "results" / "summary" / "decision.parquet").exists():
            print(f"{work}: no results/summary/decision.parquet, skipped", file=sys.stderr)
            continue
        for record in redecide(work):
            records.append(record)
            print(f"{work.name} rerun {record['rerun']} {record['model']}: {record['chosen']}"
                  + (f" (tie {', '.join(record['tie'])})" if record["tie"] else ""))
    counts = collections.defaultdict(collections.Counter)
    for record in records:
        counts[record["model"]][record["chosen"]] += 1
    for model, chosen in sorted(counts.items()):
        total = sum(chosen.values())
        print(f"{model}: " + ", ".join(f"{engine} {n}/{total}" for engine, n in chosen.most_common()))
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
