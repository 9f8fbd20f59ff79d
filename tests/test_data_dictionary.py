"""docs/data-dictionary.md documents every column of every summary table, and no column that is gone.

The tables are those of a finished run: ``$EDGEPTQ_SUMMARY`` (a ``results/summary`` folder), else the
checkout's ``results/summary`` when a run left one, else the synthetic three-backend summary the other tests
use (real ``summarize`` code on synthetic per-engine tables); a slow test runs the tiny real workflow.

A column is documented when the sections of its table name it: in a code span or in the first cell of a
table row (comma- or slash-separated), where ``<metric>``, ``<ext>``, ``<i>`` and ``*`` stand for any
text. Each summary table is read with its own section, the per-engine sections it gathers, and the shared
provenance and resource groups (:data:`SECTIONS`). The other way, every name in the first column of those
sections' tables must exist in one of the tables the section describes, unless :data:`CONDITIONAL` says
when it exists (a CPU run has no TensorRT or GPU columns); that check needs a real run with every CPU
backend (the quickstart) made by the current code, so it runs only on ``$EDGEPTQ_SUMMARY`` or
``results/summary``: ``EDGEPTQ_SUMMARY=results/summary python -m pytest tests/test_data_dictionary.py``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from tests.test_workflow import finished_run  # noqa: F401 (a fixture: the tiny real run)

REPO = Path(__file__).resolve().parent.parent
DICTIONARY = REPO / "docs" / "data-dictionary.md"

SHARED = ["Provenance columns", "Settings: which rows may be compared", "Resource columns"]
# Summary table -> the headings (their text, code spans included) whose columns it carries.
SECTIONS = {
    "compression": ["`compression.parquet`", "`<device>/onnx/<cell>/export.parquet`",
                    "`<device>/<backend>/<cell>/<precision>_build.parquet`"],
    "compression_stats": ["`compression_stats.parquet`"],
    "latency": ["`latency.parquet`", "`<device>/<backend>/<cell>/<precision>_latency.parquet`"],
    "runoff": ["`runoff.parquet` (and `<device>/onnx/<cell>/latency_runoff.parquet`)"],
    "accuracy": ["`accuracy.parquet`", "`<device>/<backend>/<cell>/<precision>_accuracy.parquet`"],
    "size": ["`size.parquet`"],
    "resources": ["`resources.parquet`"],
    "compression_resources": ["`compression_resources.parquet`", "Resource time series"],
    "claims": ["`claims.parquet` (and `claims.md`)"],
    "decision": ["`decision.parquet` (and `decision.md`, `summary.md`, `html/*.html`)"],
}
# Documented columns that a CPU run with the three CPU backends does not have, and when they exist.
CONDITIONAL = {
    "h2d_median_ms": "TensorRT", "compute_median_ms": "TensorRT", "d2h_median_ms": "TensorRT",
    "profile_min": "TensorRT", "profile_opt": "TensorRT", "profile_max": "TensorRT", "workspace_mb": "TensorRT",
    "builder_optimization_level": "TensorRT", "dla_core": "TensorRT", "gpu_fallback": "TensorRT",
    "int8_mode": "TensorRT", "calibration_cache_reused": "TensorRT", "calibration_batches_fed": "TensorRT",
    "calibration_batches": "TensorRT", "calibration_batch_size": "TensorRT", "calibration_images_padded": "TensorRT",
    "utilized_cuda_cores_mean": "GPU samples", "accuracy_note": "a dataset without labels",
    "source_sha256": "a user's ONNX file", "measured_device": "a renamed device folder",
    "settings_hashes": "claims.parquet: always (listed in the claims section)",
}


def sections(text: str) -> dict[str, str]:
    """Heading text (after the #s) -> the section's text up to the next heading of the same or a higher level."""
    out = {}
    lines = text.splitlines()
    heads = [(i, len(m.group(1)), m.group(2).strip()) for i, line in enumerate(lines)
             if (m := re.match(r"(#{2,4}) (.*)", line))]
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lv, _ in heads[k + 1:] if lv <= level), len(lines))
        out[title] = "\n".join(lines[i + 1:end])
    return out


def _names(cell: str) -> list[str]:
    return [n for n in re.split(r"[\s,/]+", cell.replace("`", " ")) if re.fullmatch(r"[A-Za-z_<][\w<>*]*", n)]


def documented(text: str) -> tuple[set[str], list[re.Pattern], set[str]]:
    """(names, patterns, names in first table cells) documented by ``text``."""
    names: set[str] = set()
    for span in re.findall(r"`([^`\n]+)`", text):
        names |= set(_names(span))
    rows: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|") and not re.match(r"\|\s*-", line) and not line.startswith("| column"):
            rows |= set(_names(line.split("|")[1]))
    names |= rows
    patterns = [re.compile(re.sub(r"<[^>]+>|\\\*", ".+", re.escape(n)) + "$") for n in names if re.search(r"[<*]", n)]
    return {n for n in names if not re.search(r"[<*]", n)}, patterns, {r for r in rows if not re.search(r"[<*]", r)}


def undocumented_columns(summary: Path) -> dict[str, list[str]]:
    text = sections(DICTIONARY.read_text())
    out = {}
    for table, heads in SECTIONS.items():
        path = summary / f"{table}.parquet"
        if not path.is_file():
            continue
        missing = [h for h in heads + SHARED if h not in text]
        assert not missing, f"the dictionary has no section {missing}: keep SECTIONS in step with its headings"
        names, patterns, _ = documented("\n".join(text[h] for h in heads + SHARED))
        columns = pd.read_parquet(path).columns
        gaps = [c for c in columns if c not in names and not any(p.match(c) for p in patterns)]
        if gaps:
            out[table] = gaps
    return out


def stale_columns(summary: Path) -> dict[str, list[str]]:
    text = sections(DICTIONARY.read_text())
    columns = {t: set(pd.read_parquet(summary / f"{t}.parquet").columns) for t in SECTIONS
               if (summary / f"{t}.parquet").is_file()}
    out = {}
    for table, heads in SECTIONS.items():
        if table not in columns:
            continue
        for head in heads:
            _, _, rows = documented(text[head])
            # A per-engine section is gathered by one summary table; a summary section describes its own.
            tables = [t for t, hs in SECTIONS.items() if head in hs and t in columns]
            gone = sorted(r for r in rows if r not in CONDITIONAL and not any(r in columns[t] for t in tables)
                          and r not in {"provenance", "dataset", "model", "precision", "input_size"} | {"labels"})
            if gone:
                out[f"{table}: {head}"] = gone
    return out


def real_summary() -> Path | None:
    for candidate in (os.environ.get("EDGEPTQ_SUMMARY"), REPO / "results" / "summary"):
        if candidate and (Path(candidate) / "latency.parquet").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def synthetic_summary(tmp_path_factory) -> Path:
    from tests.test_decision import write_quickstart_like
    from workflow_scripts.decision.decide import Budgets, write_decision

    out = write_quickstart_like(tmp_path_factory.mktemp("dictionary") / "results", runoff=True)
    # decision.parquet's columns come from the decision code itself.
    write_decision(out, Budgets(p99_ms=100.0, max_drop_points=2.0), out / "decision.md", out / "decision.parquet")
    return out


def test_every_column_of_the_synthetic_summary_is_documented(synthetic_summary):
    gaps = undocumented_columns(synthetic_summary)
    assert not gaps, f"docs/data-dictionary.md does not document {gaps}"


@pytest.mark.skipif(real_summary() is None, reason="no finished run: set EDGEPTQ_SUMMARY to a results/summary folder")
def test_every_column_of_a_finished_run_is_documented():
    gaps = undocumented_columns(real_summary())
    assert not gaps, f"docs/data-dictionary.md does not document {gaps} (of {real_summary()})"


@pytest.mark.skipif(real_summary() is None, reason="no finished run: set EDGEPTQ_SUMMARY to a results/summary folder")
def test_the_dictionary_documents_no_column_a_finished_run_lacks():
    stale = stale_columns(real_summary())
    assert not stale, f"docs/data-dictionary.md documents columns {real_summary()} does not have: {stale}"


@pytest.mark.slow  # the tiny end-to-end run of tests/test_workflow.py (ONNX Runtime only), a few minutes
def test_every_column_of_a_tiny_real_run_is_documented(finished_run):
    gaps = undocumented_columns(finished_run[0] / "results" / "summary")
    assert not gaps, f"docs/data-dictionary.md does not document {gaps}"


def test_the_checks_catch_what_they_are_for(tmp_path):
    pd.DataFrame({"latency_median_ms": [1.0], "no_such_column_ms": [2.0], "rss_mb_peak": [3.0]}).to_parquet(
        tmp_path / "latency.parquet")
    assert undocumented_columns(tmp_path) == {"latency": ["no_such_column_ms"]}
    assert "latency_p99_ms" in stale_columns(tmp_path)["latency: `<device>/<backend>/<cell>/<precision>_latency.parquet`"]
