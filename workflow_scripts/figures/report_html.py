"""HTML renderings for the Snakemake report: summary tables, Markdown pages, and a figure gallery.

A browser shows Parquet as gibberish and Markdown as plain text; the report links these instead.
Every page is self-contained (inline CSS; figures embedded as base64 PNG) so it renders inside
the report's viewer and when opened alone. Markdown is rendered by markdown-it-py (CommonMark with
pipe tables) with raw HTML off, and every name and value of a table is escaped: a folder or model
name holding ``<img ...>`` or a ``javascript:`` link reaches the page as text, never as markup.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1600px; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
td:first-child, th:first-child, td:last-child, th:last-child { text-align: left; }
td { white-space: nowrap; } td:last-child { white-space: normal; }
tr:nth-child(even) td { background: #fafafa; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 12px; }
figure { margin: 0 0 2.5em; } figcaption { max-width: 1100px; font-size: 14px; line-height: 1.4; }
img { max-width: 100%; border: 1px solid #ddd; }
details summary { cursor: pointer; color: #345; white-space: nowrap; }
details pre { white-space: pre-wrap; max-width: 700px; margin: 0.3em 0; text-align: left; }
th.key, td.key { background: #f4f8fc; }
p.caption { max-width: 1100px; line-height: 1.4; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


# Every table's key columns first (those present), then its headline metrics (with their intervals, one
# cell each), then every other column in the table's own order.
KEY_COLUMNS = ["model", "dataset", "input_size", "backend", "precision", "device"]
# table -> (heading, point column, CI low column, CI high column, scale); low/high None: a plain cell.
HEADLINES = {
    "latency": [("p50 ms [95% CI over rounds]", "latency_median_rounds_ms", "latency_median_rounds_ci_low_ms",
                 "latency_median_rounds_ci_high_ms", 1),
                ("p99 ms [95% CI over rounds]", "latency_p99_rounds_ms", "latency_p99_rounds_ci_low_ms",
                 "latency_p99_rounds_ci_high_ms", 1),
                ("p50 ms [95% CI, one run]", "latency_median_ms", "latency_median_ci_low_ms",
                 "latency_median_ci_high_ms", 1),
                ("p99 ms [95% CI, one run]", "latency_p99_ms", "latency_p99_ci_low_ms", "latency_p99_ci_high_ms", 1),
                ("img/s", "throughput_images_per_s", None, None, 1), ("engine MB", "engine_mb", None, None, 1),
                ("valid", "valid", None, None, 1), ("noisy over rounds", "runoff_high_variation", None, None, 1),
                ("noisy, one run", "high_variation", None, None, 1)],
    "accuracy": [("top-1 % [Wilson 95% CI]", "top1_accuracy", "top1_ci_low", "top1_ci_high", 100),
                 ("drop vs FP32, points [paired 95% CI]", "top1_drop_vs_fp32_points", "top1_drop_ci_low_points",
                  "top1_drop_ci_high_points", 1),
                 ("top-5 %", "top5_accuracy", None, None, 100), ("test images", "images", None, None, 1)],
    "size": [("engine MB", "engine_mb", None, None, 1), ("vs FP32", "size_vs_fp32", None, None, 1),
             ("ONNX MB", "onnx_mb", None, None, 1)],
    "compression_stats": [("stage", "stage", None, None, 1),
                          ("mean s [95% CI]", "duration_mean_s", "duration_ci_low_s", "duration_ci_high_s", 1),
                          ("measured runs", "measured_runs", None, None, 1)],
    "compression": [("stage", "stage", None, None, 1), ("run", "run", None, None, 1),
                    ("warm-up", "warmup", None, None, 1), ("duration s", "duration_s", None, None, 1)],
    "runoff": [("round", "round", None, None, 1), ("position", "position", None, None, 1),
               ("median ms", "latency_median_ms", None, None, 1), ("p99 ms", "latency_p99_ms", None, None, 1),
               ("tasks", "tasks", None, None, 1)],
    "claims": [("claim", "claim", None, None, 1), ("group", "group", None, None, 1),
               ("ours [95% CI]", "ours", "ours_ci_low", "ours_ci_high", 1), ("study", "study", None, None, 1),
               ("unit", "unit", None, None, 1)],
    "decision": [("chosen", "chosen", None, None, 1), ("within budget", "feasible", None, None, 1),
                 ("rank", "rank", None, None, 1),
                 ("p99 ms [95% CI]", "p99_ms", "p99_ci_low_ms", "p99_ci_high_ms", 1),
                 ("p50 ms [95% CI]", "p50_ms", "p50_ci_low_ms", "p50_ci_high_ms", 1),
                 ("drop points [95% CI]", "drop_points", "drop_ci_low_points", "drop_ci_high_points", 1),
                 ("engine MB", "engine_mb", None, None, 1), ("rejection", "rejection", None, None, 1)],
}
# Time series: summarised per group on their page, the rows themselves left to the Parquet file.
TIME_SERIES = {"compression_resources"}
FOLD_AT = 60  # characters: longer text cells (settings JSON, reasons) are folded in <details>


def _fmt(value, scale: float = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, (bool,)) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            number = float(value) * scale
        except (TypeError, ValueError):
            return str(value)
        if number != number:
            return "–"
        return f"{number:.4g}"
    return str(value)


def _cell(value, scale: float = 1) -> str:
    """One escaped cell; long text (the JSON ``settings``, long reasons) folded in <details>."""
    if value is pd.NA:
        return "<td>–</td>"
    text = _fmt(value, scale)
    if isinstance(value, str) and len(text) > FOLD_AT:
        shown = text
        if text.lstrip().startswith("{"):
            try:
                import json

                shown = json.dumps(json.loads(text), indent=1, sort_keys=True)
            except ValueError:
                pass
        return (f"<td><details><summary>{html.escape(text[:40])}…</summary>"
                f"<pre>{html.escape(shown)}</pre></details></td>")
    return f"<td>{html.escape(text)}</td>"


def _interval(row, point: str, low: str, high: str, scale: float) -> str:
    text = _fmt(row.get(point), scale)
    if text == "–":
        return "<td>–</td>"
    lo, hi = _fmt(row.get(low), scale), _fmt(row.get(high), scale)
    return f"<td>{html.escape(text)}" + (f" [{html.escape(lo)}, {html.escape(hi)}]" if lo != "–" and hi != "–"
                                         else "") + "</td>"


def curated_columns(frame: pd.DataFrame, name: str) -> tuple[list[str], list[tuple], list[str]]:
    """(key columns, headline specs, other columns) of table ``name``, those present in ``frame``."""
    keys = [c for c in KEY_COLUMNS if c in frame.columns]
    heads = [h for h in HEADLINES.get(name, []) if h[1] in frame.columns]
    used = set(keys) | {c for h in heads for c in h[1:4] if c}
    return keys, heads, [c for c in frame.columns if c not in used]


def table_html(frame: pd.DataFrame, title: str, note: str = "", max_rows: int = 2000, name: str = "") -> str:
    """One summary table as an HTML page: key columns (model, dataset, backend, precision, ...) first, then the
    table's headline metrics with their 95% intervals in one cell each, then the rest; long text cells (the
    JSON ``settings``) folded; at most ``max_rows`` rows."""
    name = name or title.removesuffix(".parquet")
    keys, heads, rest = curated_columns(frame, name)
    shown = frame.head(max_rows)
    header = "".join(f"<th class='key'>{html.escape(c)}</th>" for c in keys) + \
        "".join(f"<th>{html.escape(h[0])}</th>" for h in heads) + "".join(f"<th>{html.escape(c)}</th>" for c in rest)
    rows = []
    for _, row in shown.iterrows():
        cells = [_cell(row[c]).replace("<td>", "<td class='key'>", 1) for c in keys]
        for heading, point, low, high, scale in heads:
            cells.append(_interval(row, point, low, high, scale) if low and high and low in row and high in row
                         else _cell(row[point], scale))
        cells += [_cell(row[c]) for c in rest]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    count = f"<p>{len(frame)} rows, {len(frame.columns)} columns" + \
        (f", first {max_rows} shown" if len(frame) > max_rows else "") + \
        "; key columns first, then the headline metrics with their 95% intervals; long cells fold open.</p>"
    body = f"<h1>{html.escape(title)}</h1>\n" + (f"<p class='caption'>{html.escape(note)}</p>\n" if note else "") + \
        count + f"<table><thead><tr>{header}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    return page(title, body)


def time_series_html(frame: pd.DataFrame, title: str, note: str = "") -> str:
    """A resource time series summarised per traced run (device, backend, model, precision, stage): samples,
    duration, mean and peak CPU and peak RSS; the samples themselves stay in the Parquet file."""
    keys = [c for c in ("device", "backend", "dataset", "input_size", "model", "precision") if c in frame.columns]
    work = frame.copy()
    if "stage" in work.columns:
        # '<stage>:<warmup|measured>:<run>' -> the stage and whether it was measured.
        parts = work["stage"].astype(str).str.split(":", expand=True)
        work["stage_name"] = parts[0].replace({"": "outside a timed run", "nan": "outside a timed run"})
        work["runs"] = parts[2] if parts.shape[1] > 2 else ""
        keys += ["stage_name"]
    agg = {"samples": ("elapsed_s", "size") if "elapsed_s" in work.columns else (work.columns[0], "size")}
    if "elapsed_s" in work.columns:
        agg["duration_s"] = ("elapsed_s", lambda v: float(v.max() - v.min()))
    for column, how, label in (("cpu_percent_of_machine", "mean", "cpu_machine_pct_mean"),
                               ("cpu_percent_of_machine", "max", "cpu_machine_pct_peak"),
                               ("rss_mb", "max", "rss_mb_peak"), ("gpu_util_percent", "mean", "gpu_util_pct_mean")):
        if column in work.columns and pd.to_numeric(work[column], errors="coerce").notna().any():
            agg[label] = (column, how)
    if "runs" in work.columns:
        agg["runs"] = ("runs", "nunique")
    summary = work.groupby(keys, dropna=False, sort=True).agg(**agg).reset_index() if keys else work.head(0)
    summary = summary.rename(columns={"stage_name": "stage"})
    text = (f"{len(frame)} samples in {len(summary)} traces, summarised here one row per trace; the samples "
            f"themselves: {title} (download it from this report's Tables › Compression (PTQ) time and resources, "
            "or read results/summary/" + title + ").")
    return table_html(summary, title.replace(".parquet", " (summary)"), (note + " " if note else "") + text,
                      name="time_series")


def _markdown():
    """CommonMark with pipe tables, raw HTML off: every ``<`` of a name or value is shown as text,
    and markdown-it's ``validateLink`` leaves ``javascript:``/``vbscript:``/``file:``/``data:`` links
    as plain text."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _inline(text: str) -> str:
    """One line of Markdown (bold, code, links) as HTML, raw HTML escaped."""
    return _markdown().renderInline(text)


def markdown_html(text: str, title: str) -> str:
    """Our Markdown pages (decision.md, claims.md, summary.md) as HTML (raw HTML in them is escaped)."""
    return page(title, _markdown().render(text))


def caption_text(rst: str | Path) -> str:
    """The plain text of a report caption (.rst), Jinja expressions left out."""
    text = Path(rst).read_text() if Path(rst).is_file() else ""
    return re.sub(r"\{\{.*?\}\}", "", text).replace("``", "").strip()


def gallery_html(figures: list[str | Path], captions_dir: str | Path) -> str:
    """Every figure PNG embedded with its caption visible under it, in the order given."""
    parts = ["<h1>Figures</h1>", "<p>Every figure of the summary with its caption. SVG versions lie beside the "
             "PNGs in results/summary/figures/.</p>"]
    for png in figures:
        png = Path(png)
        data = base64.b64encode(png.read_bytes()).decode()
        caption = caption_text(Path(captions_dir) / f"{png.stem}.rst")
        parts.append(f"<figure><h2>{html.escape(png.stem)}</h2><img src='data:image/png;base64,{data}' "
                     f"alt='{html.escape(png.stem)}'><figcaption>{_inline(caption)}</figcaption></figure>")
    return page("Figures", "\n".join(parts))


# The figure captions of the Snakemake report (report/<figure>.rst), found from this file so that no
# absolute path of the checkout enters a rule's params.
CAPTIONS_DIR = Path(__file__).resolve().parents[2] / "report"

TABLE_NOTES = {
    "decision": "One row per engine: the budgets it breaks (rejection), whether it is chosen, its rank.",
    "claims": "The study's headline numbers per device and backend, with 95% intervals and comparability.",
}


def table_caption(name: str, captions_dir: str | Path) -> str:
    """The caption of summary table ``name``: report/table_<name>.rst (the same text the report shows beside
    it), else a short note."""
    text = caption_text(Path(captions_dir) / f"table_{name}.rst")
    return text or TABLE_NOTES.get(name, "Columns and units: docs/data-dictionary.md.")


def _rst_escape(text: str) -> str:
    return re.sub(r"([\\*`|_])", r"\\\1", text)


def answer_rst(decision: pd.DataFrame) -> str:
    """The decision's answer per model as a reStructuredText list, for the report's main page
    (report/workflow.rst reads ``html/answer.rst``) and the Decision page's caption."""
    from workflow_scripts.decision.render import answers, budgets_of, test_set_notes

    items = answers(decision)
    if not items:
        return "No engine results were found, so there is no answer yet.\n"
    lines = []
    for item in items:
        lines.append(f"- {_rst_escape(item['line'])}")
        for note in (item["tie"], item["machine"]):
            if note:
                lines += ["", f"  - {_rst_escape(note)}", ""]
    budgets = budgets_of(decision)
    if budgets is not None:
        lines += ["", f"Budgets: {_rst_escape(budgets.describe())}."]
    for note in test_set_notes(decision, budgets):
        lines += ["", "Test set " + _rst_escape(note.replace("**", "").replace("`", ""))]
    return "\n".join(lines) + "\n"


def write_report_pages(summary_dir: str | Path, tables: list[str], markdown: list[str], figures: list[str],
                       captions_dir: str | Path | None, out_dir: str | Path) -> list[Path]:
    """Write <table>.html for each summary table (a time series summarised), <name>.html for each Markdown
    page, figures.html (captions from ``captions_dir``, by default the checkout's report/ folder:
    :data:`CAPTIONS_DIR`) and answer.rst (the decision's answer per model, for the report's main page)."""
    from workflow_scripts.core.artifacts import write_text

    captions_dir = CAPTIONS_DIR if captions_dir is None else captions_dir
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    written = []
    for name in tables:
        frame = pd.read_parquet(summary_dir / f"{name}.parquet")
        note = table_caption(name, captions_dir)
        if name in TIME_SERIES:
            page_text = time_series_html(frame, f"{name}.parquet", note)
        else:
            page_text = table_html(frame, f"{name}.parquet", note, name=name)
        written.append(write_text(page_text, out_dir / f"{name}.html"))
    for path in markdown:
        path = Path(path)
        written.append(write_text(markdown_html(path.read_text(), path.name), out_dir / f"{path.stem}_md.html"))
    written.append(write_text(gallery_html(figures, captions_dir), out_dir / "figures.html"))
    decision_path = summary_dir / "decision.parquet"
    decision = pd.read_parquet(decision_path) if decision_path.is_file() else pd.DataFrame()
    written.append(write_text(answer_rst(decision), out_dir / "answer.rst"))
    return written
