"""The end-of-run summary, printed when the workflow finishes (as trtexec and benchmark_app do).

Per engine: median (p50) and p99 task latency with their 95% intervals (between rounds where the
runoff ran, else over one run's tasks), the tasks and rounds behind them, throughput, engine size,
top-1 with its drop versus FP32 and the drop's paired 95% interval, and the measurement flags; per
model, a tie within measurement noise and how the decision broke it. The **answer** (the engine the
decision chose per model, in one line: :func:`workflow_scripts.decision.render.answers`) closes the printed
text, so it is the last screen of a run, and opens ``summary.md``. Written to
``results/summary/summary.md`` by rule ``run_summary`` (rules/decide.smk) and printed by the
Snakefile's ``onsuccess:`` handler through :func:`print_run_summary`. Tables are laid out by tabulate.
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from workflow_scripts.decision.render import answers, budgets_of, drop_text, flags_text, interval_text, _num, test_set_notes
from workflow_scripts.decision.budgets import GROUP
from workflow_scripts.decision.decide import engine_table, read_tables

HEADER = ("engine", "p50 ms [95% CI]", "p99 ms [95% CI]", "tasks/rounds", "img/s", "MB", "top-1 %",
          "drop pts [95% CI]", "energy mJ", "flags")
ALIGN = ("left", "left", "left", "right", "right", "right", "right", "left", "right", "left")
WIDTH = 100
# The cause a noisy run's reason names when nothing else was seen; said once under the tables instead.
GENERIC_CAUSE = ": no steal or other load seen (the engine itself varied: clocks, memory)"
ENGINE_KEYS = ["device", "dataset", "model", "backend", "precision"]


def _chosen_and_ties(decision: pd.DataFrame | None) -> tuple[set, dict]:
    chosen, ties = set(), {}
    if decision is not None and len(decision) and "chosen" in decision.columns:
        picked = decision[decision["chosen"].astype(bool)]
        chosen = set(map(tuple, picked[ENGINE_KEYS].to_numpy()))
        if "tie_note" in picked.columns:
            ties = {(r["device"], r["dataset"], r["model"]): r["tie_note"] for _, r in picked.iterrows()
                    if r["tie_note"]}
    return chosen, ties


def _rows(group: pd.DataFrame, chosen: set) -> list[tuple[str, ...]]:
    rows = []
    for _, row in group.iterrows():
        name = f"{row['backend']} {row['precision']}"
        if tuple(row[k] for k in ENGINE_KEYS) in chosen:
            name += " *"
        rows.append((name, interval_text(row, "p50"), interval_text(row, "p99"),
                     f"{_num(row.get('tasks'), '.0f')}/{int(row.get('rounds', 0) or 0)}",
                     _num(row["throughput_images_per_s"], ".4g"),
                     _num(row["engine_mb"]), _num(row["top1_percent"], ".2f"), drop_text(row),
                     _num(row["energy_per_inference_mj"]), (flags_text(row) or "ok").replace(GENERIC_CAUSE, "")))
    return rows


def _table(rows: list[tuple[str, ...]], tablefmt: str = "simple") -> list[str]:
    return tabulate(rows, headers=HEADER, tablefmt=tablefmt, colalign=ALIGN, disable_numparse=True).splitlines()


def _plain(text: str) -> str:
    """Markdown emphasis and code marks left out, for the console."""
    return text.replace("**", "").replace("`", "")


def answer_block(decision: pd.DataFrame | None) -> list[str]:
    """The answer per model for the console: a heading with the budgets, one line per model (a tie's note
    indented under it), then the test-set size behind the accuracy budget."""
    if decision is None or not len(decision):
        return []
    budgets = budgets_of(decision)
    lines = ["=== The answer: the engine to deploy per model (decision.md) ==="]
    if budgets:
        lines += textwrap.wrap(f"budgets: {budgets.describe()}", WIDTH, subsequent_indent="    ")
    for item in answers(decision):
        lines.append(item["line"])  # one line each, never wrapped
        for note in (item["tie"], item["machine"]):
            if note:
                lines += textwrap.wrap(note, WIDTH, initial_indent="    ", subsequent_indent="      ")
    for note in test_set_notes(decision, budgets):
        lines += textwrap.wrap("test set " + _plain(note), WIDTH, subsequent_indent="    ")
    return lines


def render(tables: dict[str, pd.DataFrame], decision: pd.DataFrame | None = None,
           summary_dir: str | Path = "results/summary") -> str:
    """The summary as plain text, grouped by device, dataset and model, ending with the answer per
    model; the closing hint names the files under ``summary_dir`` (config key results_dir + /summary)."""
    engines = engine_table(tables)
    chosen, ties = _chosen_and_ties(decision)
    legend = ("p50/p99: task latency percentiles (warm-ups excluded) with 95% intervals: between interleaved "
              "rounds where the runoff ran (tasks/rounds: tasks of one run / rounds), else over one run's tasks; "
              "a p99 needs 299 tasks (n/a below); img/s: throughput; MB: engine file; drop: top-1 vs FP32 of the "
              "same backend, paired bootstrap 95% CI"
              + ("; * = chosen by the deployment decision (decision.md)" if chosen else "") + ".")
    lines = ["=== edgeptq: performance summary ==="] + textwrap.wrap(legend, WIDTH)
    if not len(engines):
        return "\n".join(lines + ["", "No latency results were found."]) + "\n"
    flagged = 0
    for (device, dataset, size, model), group in engines.groupby(GROUP, sort=False):
        lines += ["", f"--- {device} · {model} · {dataset} {size} px ---"]
        lines += _table(_rows(group, chosen))
        if (device, dataset, model) in ties:
            body = ties[(device, dataset, model)].removeprefix("tie within measurement noise: ")
            lines += textwrap.wrap(f"Tie within measurement noise: {body}.", WIDTH, subsequent_indent="    ")
        flagged += int((group.apply(flags_text, axis=1) != "").sum())
    energy = engines["energy_per_inference_mj"]
    notes = [""]
    if flagged:
        notes += textwrap.wrap(
            f"{flagged} of {len(engines)} engines carry flags: 'invalid' runs missed their minimum task count or "
            "duration (or had NaN samples); 'noisy' means IQR/median > 0.10, with what was seen (CPU steal, other "
            "processes' load; where nothing is named, none was seen and the engine itself varied: clocks, memory): "
            "compare their latencies with care.", WIDTH)
    if energy.isna().all():
        reasons = sorted({n for n in engines["energy_note"] if n}) or ["energy not measured"]
        notes += textwrap.wrap("energy: not measured (" + "; ".join(reasons) + ").", WIDTH)
    where = Path(summary_dir).as_posix()
    quoted = shlex.quote(where)
    notes.append(f"Tables: {where}/*.parquet; figures: {where}/figures/; decision: {where}/decision.md; other "
                 f"budgets: edgeptq decide {quoted} --p99-ms 5 --max-drop 1.0 [--format md|json|csv] (or "
                 f"python -m workflow_scripts.cli {quoted} --p99-ms 5 --max-drop 1.0)")
    block = answer_block(decision)
    return "\n".join(lines + notes + ([""] + block if block else [])) + "\n"


def render_markdown(tables: dict[str, pd.DataFrame], decision: pd.DataFrame | None = None) -> str:
    """The summary as Markdown: the answer per model first, then one pipe table per device, dataset and model
    (what ``edgeptq summary --format md`` prints)."""
    from workflow_scripts.decision.render import answer_markdown

    engines = engine_table(tables)
    chosen, ties = _chosen_and_ties(decision)
    lines = ["# End-of-run summary", ""]
    answer = answer_markdown(decision) if decision is not None else []
    if answer:
        lines += ["## The answer", ""] + answer + [""]
        budgets = budgets_of(decision)
        if budgets:
            lines += [f"Budgets: {budgets.describe()}.", ""]
        lines += [f"- {n}" for n in test_set_notes(decision, budgets)] + [""]
    if not len(engines):
        return "\n".join(lines + ["No latency results were found."]) + "\n"
    for (device, dataset, size, model), group in engines.groupby(GROUP, sort=False):
        lines += [f"## {model} on {dataset} ({size} px), {device}", ""]
        lines += _table([tuple(c.replace("|", "\\|") for c in r) for r in _rows(group, chosen)], "github")
        if (device, dataset, model) in ties:
            lines += ["", f"Tie within measurement noise: "
                          f"{ties[(device, dataset, model)].removeprefix('tie within measurement noise: ')}."]
        lines.append("")
    if chosen:
        lines.append("`*`: chosen by the deployment decision (decision.md).")
    return "\n".join(lines).rstrip() + "\n"


def summary_markdown(text: str, decision: pd.DataFrame | None) -> str:
    """summary.md: the answer per model as a Markdown list first, then the console text in a fenced block."""
    from workflow_scripts.decision.render import answer_markdown

    head = ["# End-of-run summary", ""]
    answer = answer_markdown(decision) if decision is not None else []
    if answer:
        head += ["## The answer", ""] + answer + [""]
    return "\n".join(head + ["## Per engine", "", "```text", text.rstrip("\n"), "```", ""])


def write_run_summary(summary_dir: str | Path, out: str | Path, decision_path: str | Path | None = None) -> str:
    """Render the summary of the tables in ``summary_dir`` into ``out``; returns the console text."""
    from workflow_scripts.core.artifacts import write_text

    decision = pd.read_parquet(decision_path) if decision_path and Path(decision_path).is_file() else None
    text = render(read_tables(summary_dir), decision, summary_dir)
    write_text(summary_markdown(text, decision), out)
    return text


def print_run_summary(path: str | Path, stream=None) -> bool:
    """Print the console text of the summary written at ``path`` (the Snakefile's onsuccess handler): the
    per-engine tables, then the answer per model last; False if the file is absent."""
    import sys

    stream = stream or sys.stdout
    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text()
    body = text.split("```text\n", 1)[-1].rsplit("```", 1)[0] if "```text\n" in text else text
    stream.write("\n" + body)
    stream.flush()
    return True
