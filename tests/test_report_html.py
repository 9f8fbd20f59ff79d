"""The report's HTML pages: names and values from results/ reach them as text, never as markup
(issue 25, item 4: a device folder named with a ``javascript:`` link or an ``<img>`` tag)."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from workflow_scripts.figures import report_html

HOSTILE = [
    "[click](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "[x](JaVaScRiPt:alert(1))",
    "<javascript:alert(1)>",
    "![p](javascript:alert(1))",
    "[y](vbscript:msgbox(1))",
    "[z](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
]


def live_markup(page: str) -> list[str]:
    """Every live element or link a hostile name could have produced."""
    found = re.findall(r"<(?:img|script|iframe|svg)\b", page, flags=re.I)
    found += re.findall(r"""(?:href|src)\s*=\s*["']?\s*(?:javascript|vbscript|data):""", page, flags=re.I)
    found += re.findall(r"<[a-z][^>]*\son\w+\s*=", page, flags=re.I)
    return found


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_device_name_in_a_markdown_table_stays_text(name):
    text = ("# Deployment decision\n\n| device | backend | p99 ms |\n|---|---|---:|\n"
            f"| {name} | onnxruntime | 1.2 |\n\nChosen: **{name} onnxruntime fp32** on `{name}`.\n")
    page = report_html.markdown_html(text, "decision.md")
    assert live_markup(page) == [], page
    assert "<table>" in page and "<strong>" in page  # the page's own Markdown still renders


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_in_a_summary_table_stays_text(name):
    frame = pd.DataFrame({"device": [name], "backend": ["onnxruntime"], "p50_ms": [1.0]})
    page = report_html.table_html(frame, f"latency {name}", note=name)
    assert live_markup(page) == [], page


def test_plain_links_and_markdown_of_our_pages_still_render():
    page = report_html.markdown_html("See [the docs](https://example.org/x) and `code`.\n\n```\n<b>\n```\n", "t")
    assert '<a href="https://example.org/x">the docs</a>' in page
    assert "<code>code</code>" in page and "&lt;b&gt;" in page


def test_a_hostile_caption_in_the_gallery_stays_text(tmp_path):
    png = tmp_path / "fig05_base_latency.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "fig05_base_latency.rst").write_text("Latency of <img src=x onerror=alert(1)> [a](javascript:b)\n")
    page = report_html.gallery_html([png], tmp_path)
    # The figure itself is the one data: image the page may hold.
    assert live_markup(page.replace("<img src='data:image/png;base64,", "<figure-image ")) == [], page
