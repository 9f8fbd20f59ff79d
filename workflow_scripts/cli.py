"""The decision's command line: ``python -m workflow_scripts.cli results/summary --p99-ms 5``.

Every bad input ends in one ``error:`` line naming the argument or file and the fix, exit status 2:
budgets that are not finite numbers (``nan``, ``inf``) or not above 0 (a drop budget may be
negative), a ``--device``/``--model`` that names nothing measured (the line lists what exists), a
``--parquet`` into a missing folder, and an unreadable summary table.

The console command ``edgeptq`` (pyproject ``[project.scripts]``, :func:`edgeptq`) has subcommands
``decide`` (the same budgets, plus ``--dataset``/``--backend``/``--precision`` filters and ``--format
md|json|csv``) and ``summary`` (the end-of-run summary of a summary folder, same filters and formats).
Its parser takes no abbreviations; an unknown option or filter value ends in one ``error:`` line
naming the bad value and the valid ones, exit status 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import pandas as pd

from workflow_scripts.decision.render import decision_markdown
from workflow_scripts.decision.budgets import Budgets, OBJECTIVES
from workflow_scripts.decision.decide import decide, read_tables, UnreadableTable


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


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The budgets, objective and tie margin of a decision (config block ``decision``)."""
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


# Filters: option, column of the summary tables.
FILTERS = (("--device", "device"), ("--model", "model"))
MORE_FILTERS = (("--dataset", "dataset"), ("--backend", "backend"), ("--precision", "precision"))


def add_filter_arguments(parser: argparse.ArgumentParser, filters=FILTERS) -> None:
    for option, column in filters:
        parser.add_argument(option, action="append", help=f"only this {column} (repeatable)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workflow_scripts.cli",
        description="Choose per device and model the engine (backend x precision) that meets the budgets.")
    parser.add_argument("summary_dir", help="folder of the summary tables (results/summary)")
    add_budget_arguments(parser)
    add_filter_arguments(parser)
    parser.add_argument("--parquet", help="also write the decision table here")
    return parser.parse_args(argv)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _budgets(args) -> Budgets:
    return Budgets(p99_ms=args.p99_ms, max_mb=args.max_mb, max_drop_points=args.max_drop_points,
                   max_rss_mb=args.max_rss_mb, max_energy_mj=args.max_energy_mj, drop_bound=args.drop_bound,
                   require_valid=not args.allow_invalid, objective=args.objective, tie_margin=args.tie_margin)


def _check_summary(summary: Path, name: str) -> str:
    """'' when ``summary`` holds the summary tables, else the error message."""
    if not (summary / "latency.parquet").is_file():
        return (f"{name}/latency.parquet not found; run the workflow first "
                "(snakemake --cores 2) or name the folder holding the summary tables")
    return ""


def filter_tables(tables: dict[str, pd.DataFrame], args, summary: Path, filters=FILTERS):
    """``tables`` narrowed to the filter options given; a value naming nothing measured is an error message
    (a str) naming it and what was measured."""
    latency = tables["latency"]
    for option, column in filters:
        wanted = getattr(args, column, None)
        if not wanted:
            continue
        known = sorted(map(str, latency[column].dropna().unique())) if column in latency.columns else []
        unknown = [w for w in wanted if w not in known]
        if unknown:
            return (f"{option} {', '.join(unknown)}: no engine results for it in {summary}; "
                    f"{column}s measured: {', '.join(known) or 'none'}")
        tables = {k: (t[t[column].isin(wanted)] if len(t) and column in t.columns else t) for k, t in tables.items()}
    return tables


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    summary = Path(args.summary_dir)
    if message := _check_summary(summary, args.summary_dir):
        return _error(message)
    if args.parquet and not Path(args.parquet).resolve().parent.is_dir():
        return _error(f"--parquet {args.parquet}: folder {Path(args.parquet).parent} does not exist; create it "
                      f"(mkdir -p {Path(args.parquet).parent}) or choose another path")
    try:
        budgets = _budgets(args)
        tables = read_tables(summary)
    except (ValueError, UnreadableTable) as exc:
        return _error(str(exc))
    tables = filter_tables(tables, args, summary)
    if isinstance(tables, str):
        return _error(tables)
    decision = decide(tables, budgets)
    if args.parquet:
        try:
            decision.to_parquet(args.parquet, index=False)
        except OSError as exc:
            return _error(f"--parquet {args.parquet}: cannot write ({exc.strerror or exc})")
    print(decision_markdown(decision, budgets), end="")
    chosen = decision[decision["chosen"]] if len(decision) else pd.DataFrame()
    for _, row in chosen.iterrows():
        for note in (row.get("tie_note"), row.get("machine_note")):
            if note:
                print(f"\n{row['model']} on {row['device']}: {note}", file=sys.stderr)
    return 0


# --- the console command: edgeptq -------------------------------------------------------------------

FORMATS = ("md", "json", "csv")
# The columns of the CSV/JSON candidate and engine tables, key columns first; the rest follow.
KEY_COLUMNS = ["device", "dataset", "input_size", "model", "backend", "precision", "chosen", "feasible", "rank",
               "p50_ms", "p50_ci_low_ms", "p50_ci_high_ms", "p99_ms", "p99_ci_low_ms", "p99_ci_high_ms",
               "top1_percent", "drop_points", "drop_ci_low_points", "drop_ci_high_points", "engine_mb",
               "throughput_images_per_s", "rejection", "tie", "tie_note", "tie_broken_by", "machine_note"]


class StrictParser(argparse.ArgumentParser):
    """No abbreviated options (``--p99`` is not ``--p99-ms``); an unknown option names the valid ones."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        if message.startswith("unrecognized arguments"):
            options = sorted({o for a in self._actions for o in a.option_strings if o.startswith("--")})
            message += f"; valid options: {', '.join(options)}"
        super().error(message)


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    first = [c for c in KEY_COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _write(frame: pd.DataFrame, fmt: str, extra: dict | None = None) -> None:
    frame = _ordered(frame)
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
        return
    import json

    records = json.loads(frame.to_json(orient="records", double_precision=6))
    print(json.dumps({**(extra or {}), "rows": records}, indent=2, ensure_ascii=False,
                     default=lambda v: v.item() if hasattr(v, "item") else str(v)))


def edgeptq_parser() -> argparse.ArgumentParser:
    parser = StrictParser(prog="edgeptq", description="Ask a finished edgeptq run's summary tables "
                          "(results/summary) for the engine to deploy, or for the end-of-run summary.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=StrictParser, metavar="{decide,summary}")
    decide_p = sub.add_parser("decide", help="the engine to deploy per device and model under the budgets given",
                              description="Choose per device and model the engine (backend x precision) that meets "
                              "the budgets; the answer per model comes first.")
    summary_p = sub.add_parser("summary", help="the end-of-run summary (per engine latency, size, accuracy; the "
                               "decision's choice marked) of a summary folder")
    for p in (decide_p, summary_p):
        p.add_argument("summary_dir", help="folder of the summary tables (results/summary)")
        add_filter_arguments(p, FILTERS + MORE_FILTERS)
        p.add_argument("--format", choices=FORMATS, default="md",
                       help="md (Markdown, default), json or csv (one row per engine, key columns first)")
    add_budget_arguments(decide_p)
    decide_p.add_argument("--parquet", help="also write the decision table here")
    summary_p.add_argument("--no-decision", action="store_true",
                           help="leave out the choice and answer of the folder's decision.parquet")
    parser.commands = {"decide": decide_p, "summary": summary_p}
    return parser


def edgeptq(argv: list[str] | None = None) -> int:
    """The ``edgeptq`` console command."""
    from workflow_scripts.decision.render import answers, budgets_of
    from workflow_scripts.decision.decide import engine_table
    from workflow_scripts.figures.run_summary import render_markdown

    parser = edgeptq_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Named by the subcommand's parser, so the message lists that subcommand's valid options.
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    summary = Path(args.summary_dir)
    if message := _check_summary(summary, args.summary_dir):
        return _error(message)
    try:
        tables = read_tables(summary)
        budgets = _budgets(args) if args.command == "decide" else None
    except (ValueError, UnreadableTable) as exc:
        return _error(str(exc))
    tables = filter_tables(tables, args, summary, FILTERS + MORE_FILTERS)
    if isinstance(tables, str):
        return _error(tables)
    if args.command == "decide":
        if args.parquet and not Path(args.parquet).resolve().parent.is_dir():
            return _error(f"--parquet {args.parquet}: folder {Path(args.parquet).parent} does not exist; create it "
                          f"(mkdir -p {Path(args.parquet).parent}) or choose another path")
        decision = decide(tables, budgets)
        if args.parquet:
            decision.to_parquet(args.parquet, index=False)
        if args.format == "md":
            print(decision_markdown(decision, budgets), end="")
        else:
            _write(decision, args.format, {"budgets": budgets.describe(), "objective": budgets.objective,
                                           "answers": answers(decision)})
        return 0
    decision = None
    stored = summary / "decision.parquet"
    if not args.no_decision and stored.is_file():
        try:
            decision = pd.read_parquet(stored)
        except Exception as exc:  # noqa: BLE001 (pyarrow raises several types)
            return _error(f"{stored} is unreadable ({type(exc).__name__}); rewrite it with: snakemake --cores 2 "
                          "--forcerun decide, or pass --no-decision")
        for option, column in FILTERS + MORE_FILTERS:
            if getattr(args, column, None) and column in decision.columns:
                decision = decision[decision[column].isin(getattr(args, column))]
    if args.format == "md":
        print(render_markdown(tables, decision), end="")
        return 0
    engines = engine_table(tables)
    if decision is not None and len(engines):
        keys = ["device", "dataset", "input_size", "model", "backend", "precision"]
        marks = decision[keys + ["chosen", "tie"]].drop_duplicates(keys)
        for key in keys:
            marks[key] = marks[key].astype(engines[key].dtype)
        engines = engines.merge(marks, on=keys, how="left")
    budgets = budgets_of(decision) if decision is not None else None
    _write(engines, args.format, {"budgets": budgets.describe() if budgets else None,
                                  "answers": answers(decision) if decision is not None else []})
    return 0


def _exit_quietly_on_closed_pipe(command) -> None:
    """``sys.exit(command())``; when the reader of stdout has gone (``edgeptq summary … --format csv | head``),
    exit with status 1 and no traceback, as the Python documentation's note on SIGPIPE recommends."""
    try:
        code = command()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at devnull so that flush cannot fail too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    sys.exit(code)


def edgeptq_entry() -> None:
    """The ``edgeptq`` script's entry point (pyproject ``[project.scripts]``)."""
    _exit_quietly_on_closed_pipe(edgeptq)


if __name__ == "__main__":
    _exit_quietly_on_closed_pipe(main)
