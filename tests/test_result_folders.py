"""Folders under results/ the summary must not take as a backend (issue 25, item 3): a backup copy
of a backend folder (``cp -a onnxruntime onnxruntime-backup``) is left out with a warning naming it,
never summarized as a fourth backend."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.test_summary import CPU, MODELS, write_device, write_keras
from workflow_scripts.core import discovery
from workflow_scripts.summary import summarize


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, str]:
    """One CPU device's tables and a backup copy of its backend folder (read-only for the tests)."""
    results = tmp_path_factory.mktemp("folders") / "results"
    write_device(results, CPU, np.random.default_rng(0), speed=1.0)
    write_keras(results)
    backend_dir = results / CPU["device"] / CPU["backend"]
    shutil.copytree(backend_dir, backend_dir.with_name(f"{CPU['backend']}-backup"))
    return results, f"{results}/{CPU['device']}/{CPU['backend']}-backup"


@pytest.fixture(scope="module")
def summarized(tree, tmp_path_factory):
    """The summary of ``tree`` written under another folder than results/summary."""
    results, _ = tree
    out = tmp_path_factory.mktemp("elsewhere") / "study-out" / "summary"
    tables = summarize.summarize({**discovery.discover_results(results), "results_dir": str(results),
                                  "n_resamples": 100}, out)
    return out, tables


def test_a_backend_folder_copy_is_left_out_of_discovery_with_a_warning_naming_it(tree, caplog):
    results, backup = tree
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.core.discovery"):
        found = discovery.discover_results(results)
    assert not any("-backup" in path for files in found.values() for path in files)
    assert len(found["latency_files"]) == len(MODELS) * 3
    assert backup in caplog.text and "not a backend folder" in caplog.text


def test_the_copy_is_named_while_planning_and_not_fingerprinted(tree, tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(tree[0], results)
    backup = tree[1].replace(str(tree[0]), str(results))
    current = discovery.discover_results(results)
    before = discovery.results_fingerprint(results, current)
    assert backup in capsys.readouterr().err
    shutil.rmtree(backup)
    assert discovery.results_fingerprint(results, current) == before
    assert capsys.readouterr().err == ""


def test_the_summary_counts_each_engine_once_beside_a_backend_copy(summarized):
    _, tables = summarized
    assert set(tables["latency"]["backend"]) == {CPU["backend"]}
    assert len(tables["latency"]) == len(MODELS) * 3


def test_the_end_of_run_hint_names_the_configured_summary_folder(summarized):
    """Issue 25, item 10: with another results_dir the hint names that folder, not results/summary."""
    from workflow_scripts.figures.run_summary import write_run_summary

    summary, _ = summarized
    text = write_run_summary(summary, summary / "summary.md")
    hint = text.strip().splitlines()[-1]
    assert f"Tables: {summary.as_posix()}/*.parquet" in hint and f"decision: {summary.as_posix()}/decision.md" in hint
    assert f"python -m workflow_scripts.cli {summary.as_posix()} " in hint
    assert "results/summary" not in hint
