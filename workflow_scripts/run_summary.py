"""The end-of-run summary, printed when the workflow finishes (as trtexec and benchmark_app do).

Per engine: median (p50) and p99 task latency with their 95% intervals (between rounds where the
runoff ran, else over one run's tasks), the tasks and rounds behind them, throughput, engine size,
top-1 with its drop versus FP32 and the drop's paired 95% interval, and the measurement flags; per
model, a tie within measurement noise and how the decision broke it. Written to
``results/summary/summary.md`` by rule ``run_summary`` (rules/decide.smk) and printed by the
Snakefile's ``onsuccess:`` handler through :func:`print_run_summary`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd

from .decision import GROUP, _num, drop_text, engine_table, flags_text, interval_text, read_tables

HEADER = ("engine", "p50 ms [95% CI]", "p99 ms [95% CI]", "tasks/rounds", "img/s", "MB", "top-1 %",
          "drop pts [95% CI]", "energy mJ", "flags")
LEFT = (0, 1, 2, 7, 9)


def _rows(group: pd.DataFrame, chosen: set) -> list[tuple[str, ...]]:
    rows = []
    for _, row in group.iterrows():
        name = f"{row['backend']} {row['precision']}"
        if (row["device"], row["dataset"], row["model"], row["backend"], row["precision"]) in chosen:
            name += " *"
        rows.append((name, interval_text(row, "p50"), interval_text(row, "p99"),
                     f"{_num(row.get('tasks'), '.0f')}/{int(row.get('rounds', 0) or 0)}",
                     _num(row["throughput_images_per_s"], ".4g"),
                     _num(row["engine_mb"]), _num(row["top1_percent"], ".2f"), drop_text(row),
                     _num(row["energy_per_inference_mj"]), flags_text(row) or "ok"))
    return rows


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [HEADER] + rows) for i in range(len(HEADER))]

    def line(cells):
        return "  ".join(c.ljust(w) if i in LEFT else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(HEADER), "  ".join("-" * w for w in widths)] + [line(r) for r in rows]


def render(tables: dict[str, pd.DataFrame], decision: pd.DataFrame | None = None,
           summary_dir: str | Path = "results/summary") -> str:
    """The summary as plain text (fixed-width columns), grouped by device, dataset and model; the
    closing hint names the files under ``summary_dir`` (config key results_dir + /summary)."""
    engines = engine_table(tables)
    chosen, ties = set(), {}
    if decision is not None and len(decision) and "chosen" in decision.columns:
        picked = decision[decision["chosen"].astype(bool)]
        chosen = set(map(tuple, picked[["device", "dataset", "model", "backend", "precision"]].to_numpy()))
        if "tie_note" in picked.columns:
            ties = {(r["device"], r["dataset"], r["model"]): r["tie_note"] for _, r in picked.iterrows()
                    if r["tie_note"]}
    lines = ["=== edgeptq: performance summary ===",
             "p50/p99: task latency percentiles (warm-ups excluded) with 95% intervals: between interleaved "
             "rounds where the runoff ran (tasks/rounds: tasks of one run / rounds), else over one run's tasks; "
             "a p99 needs 299 tasks (n/a below); img/s: throughput; "
             "MB: engine file; drop: top-1 vs FP32 of the same backend, paired bootstrap 95% CI"
             + ("; * = chosen by the deployment decision (decision.md)" if chosen else "") + "."]
    if not len(engines):
        return "\n".join(lines + ["", "No latency results were found."]) + "\n"
    flagged = 0
    for (device, dataset, size, model), group in engines.groupby(GROUP, sort=False):
        lines += ["", f"--- {device} · {model} · {dataset} {size} px ---"]
        lines += _table(_rows(group, chosen))
        if (device, dataset, model) in ties:
            lines.append(f"Tie within measurement noise: "
                         f"{ties[(device, dataset, model)].removeprefix('tie within measurement noise: ')}.")
        flagged += int((group.apply(flags_text, axis=1) != "").sum())
    energy = engines["energy_per_inference_mj"]
    notes = [""]
    if flagged:
        notes.append(f"{flagged} of {len(engines)} engines carry flags: 'invalid' runs missed their minimum task "
                     "count or duration (or had NaN samples); 'noisy' means IQR/median > 0.10, with what was seen "
                     "(CPU steal, other processes' load): compare their latencies with care.")
    if energy.isna().all():
        reasons = sorted({n for n in engines["energy_note"] if n}) or ["energy not measured"]
        notes.append("energy: not measured (" + "; ".join(reasons) + ").")
    where = Path(summary_dir).as_posix()
    notes.append(f"Tables: {where}/*.parquet; figures: {where}/figures/; "
                 f"decision: {where}/decision.md; ad-hoc budgets: "
                 f"python -m workflow_scripts.decision {shlex.quote(where)} --p99-ms 5 --max-drop 1.0")
    return "\n".join(lines + notes) + "\n"


def write_run_summary(summary_dir: str | Path, out: str | Path, decision_path: str | Path | None = None) -> str:
    """Render the summary of the tables in ``summary_dir`` into ``out`` (a fenced Markdown text block)."""
    from .artifacts import write_text

    decision = pd.read_parquet(decision_path) if decision_path and Path(decision_path).is_file() else None
    text = render(read_tables(summary_dir), decision, summary_dir)
    write_text("# End-of-run summary\n\n```text\n" + text + "```\n", out)
    return text


def print_run_summary(path: str | Path, stream=None) -> bool:
    """Print the summary written at ``path`` (the Snakefile's onsuccess handler); False if it is absent."""
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

