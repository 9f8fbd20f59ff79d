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
"""


def page(title: str, body: str) -> str:
    """A complete HTML document."""
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


def table_html(frame: pd.DataFrame, title: str, note: str = "", max_rows: int = 2000) -> str:
    """One summary table as an HTML page (long provenance strings shortened; at most ``max_rows`` rows)."""
    shown = frame.head(max_rows).copy()
    for column in shown.columns:
        if shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: v if not isinstance(v, str) or len(v) < 80 else v[:77] + "...")
    rows = f"<p>{len(frame)} rows" + (f", first {max_rows} shown" if len(frame) > max_rows else "") + "</p>"
    body = f"<h1>{html.escape(title)}</h1>\n" + (f"<p>{html.escape(note)}</p>\n" if note else "") + rows + \
        shown.to_html(index=False, escape=True, render_links=False, na_rep="–", float_format=lambda v: f"{v:.4g}", border=0)
    return page(title, body)


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
    return re.sub(r"\{\{.*?\}\}", "", text).strip()


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
CAPTIONS_DIR = Path(__file__).resolve().parent.parent / "report"

TABLE_NOTES = {
    "decision": "One row per engine: the budgets it breaks (rejection), whether it is chosen, its rank.",
    "claims": "The study's headline numbers per device and backend, with 95% intervals and comparability.",
}


def write_report_pages(summary_dir: str | Path, tables: list[str], markdown: list[str], figures: list[str],
                       captions_dir: str | Path | None, out_dir: str | Path) -> list[Path]:
    """Write <table>.html for each summary table, <name>.html for each Markdown page, and figures.html
    (captions from ``captions_dir``, by default the checkout's report/ folder: :data:`CAPTIONS_DIR`)."""
    from .artifacts import write_text

    captions_dir = CAPTIONS_DIR if captions_dir is None else captions_dir
    summary_dir, out_dir = Path(summary_dir), Path(out_dir)
    written = []
    for name in tables:
        frame = pd.read_parquet(summary_dir / f"{name}.parquet")
        note = TABLE_NOTES.get(name, "Columns and units: docs/data-dictionary.md.")
        written.append(write_text(table_html(frame, f"{name}.parquet", note), out_dir / f"{name}.html"))
    for path in markdown:
        path = Path(path)
        written.append(write_text(markdown_html(path.read_text(), path.name), out_dir / f"{path.stem}_md.html"))
    written.append(write_text(gallery_html(figures, captions_dir), out_dir / "figures.html"))
    return written
