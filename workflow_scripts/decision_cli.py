"""The decision's command line: ``python -m workflow_scripts.decision results/summary --p99-ms 5``.

Every bad input ends in one ``error:`` line naming the argument or file and the fix, exit status 2:
budgets that are not finite numbers (``nan``, ``inf``) or not above 0 (a drop budget may be
negative), a ``--device``/``--model`` that names nothing measured (the line lists what exists), a
``--parquet`` into a missing folder, and an unreadable summary table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from .decision import OBJECTIVES, Budgets, UnreadableTable, decide, decision_markdown, read_tables


def budget(positive: bool = True):
    """An argparse type: a finite number, above 0 when ``positive``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number; give a budget like 5 or 0.5")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0 (a budget at or below 0 rejects "
                                             "every engine); leave the option out for no budget")
        return value
    return parse


def fraction(text: str) -> float:
    """An argparse type: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"{text!r} must be a fraction in [0, 1), e.g. 0.05")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.decision",
        description="Choose per device and model the engine (backend x precision) that meets the budgets.")
    parser.add_argument("summary_dir", help="folder of the summary tables (results/summary)")
    parser.add_argument("--p99-ms", type=budget(), help="p99 task latency budget (ms)")
    parser.add_argument("--max-mb", type=budget(), help="engine size budget (MB)")
    parser.add_argument("--max-drop", type=budget(positive=False), dest="max_drop_points",
                        help="top-1 drop budget vs FP32 (points), judged by the upper 95%% bound")
    parser.add_argument("--drop-bound", choices=["ci_high", "point"], default="ci_high",
                        help="judge the drop by its upper 95%% bound (default) or its point value")
    parser.add_argument("--max-rss-mb", type=budget(), help="peak process RSS budget (MB)")
    parser.add_argument("--max-energy-mj", type=budget(), help="energy per inference budget (mJ), where measured")
    parser.add_argument("--objective", choices=list(OBJECTIVES), default="latency",
                        help="what to optimize among the engines within budget (default: lowest p99)")
    parser.add_argument("--tie-margin", type=fraction, default=0.05,
                        help="latency differences below this fraction of the best are ties (default 0.05)")
    parser.add_argument("--allow-invalid", action="store_true", help="accept latency runs marked invalid")
    parser.add_argument("--device", action="append", help="only this device (repeatable)")
    parser.add_argument("--model", action="append", help="only this model (repeatable)")
    parser.add_argument("--parquet", help="also write the decision table here")
    return parser.parse_args(argv)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = Path(args.summary_dir)
    if not (summary / "latency.parquet").is_file():
        return _error(f"{args.summary_dir}/latency.parquet not found; run the workflow first "
                      "(snakemake --cores 2) or name the folder holding the summary tables")
    if args.parquet and not Path(args.parquet).resolve().parent.is_dir():
        return _error(f"--parquet {args.parquet}: folder {Path(args.parquet).parent} does not exist; create it "
                      f"(mkdir -p {Path(args.parquet).parent}) or choose another path")
    try:
        budgets = Budgets(p99_ms=args.p99_ms, max_mb=args.max_mb, max_drop_points=args.max_drop_points,
                          max_rss_mb=args.max_rss_mb, max_energy_mj=args.max_energy_mj, drop_bound=args.drop_bound,
                          require_valid=not args.allow_invalid, objective=args.objective,
                          tie_margin=args.tie_margin)
        tables = read_tables(summary)
    except (ValueError, UnreadableTable) as exc:
        return _error(str(exc))
    latency = tables["latency"]
    for column, option, wanted in (("device", "--device", args.device), ("model", "--model", args.model)):
        if not wanted:
            continue
        known = sorted(map(str, latency[column].dropna().unique())) if column in latency.columns else []
        unknown = [w for w in wanted if w not in known]
        if unknown:
            return _error(f"{option} {', '.join(unknown)}: no engine results for it in {summary}; "
                          f"{column}s measured: {', '.join(known) or 'none'}")
        tables = {k: (t[t[column].isin(wanted)] if len(t) and column in t.columns else t) for k, t in tables.items()}
    decision = decide(tables, budgets)
    if args.parquet:
        try:
            decision.to_parquet(args.parquet, index=False)
        except OSError as exc:
            return _error(f"--parquet {args.parquet}: cannot write ({exc.strerror or exc})")
    print(decision_markdown(decision, budgets), end="")
    chosen = decision[decision["chosen"]] if len(decision) else pd.DataFrame()
    for _, row in chosen.iterrows():
        if row.get("tie_note"):
            print(f"\n{row['model']} on {row['device']}: {row['tie_note']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
