"""Folders under results/ the summary must not take as a backend (issue 25, item 3): a backup copy
of a backend folder (``cp -a onnxruntime onnxruntime-backup``) is left out with a warning naming it,
never summarized as a fourth backend."""

from __future__ import annotations

import logging
import shutil

import numpy as np

from tests.test_summary import CPU, MODELS, write_device, write_keras
from workflow_scripts import discovery, summarize


def backed_up(tmp_path):
    results = tmp_path / "results"
    write_device(results, CPU, np.random.default_rng(0), speed=1.0)
    write_keras(results)
    backend_dir = results / CPU["device"] / CPU["backend"]
    shutil.copytree(backend_dir, backend_dir.with_name(f"{CPU['backend']}-backup"))
    return results, f"{results}/{CPU['device']}/{CPU['backend']}-backup"


def test_a_backend_folder_copy_is_left_out_of_discovery_with_a_warning_naming_it(tmp_path, caplog):
    results, backup = backed_up(tmp_path)
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.discovery"):
        found = discovery.discover_results(results)
    assert not any("-backup" in path for files in found.values() for path in files)
    assert len(found["latency_files"]) == len(MODELS) * 3
    assert backup in caplog.text and "not a backend folder" in caplog.text


def test_the_copy_is_named_while_planning_and_not_fingerprinted(tmp_path, capsys):
    results, backup = backed_up(tmp_path)
    current = discovery.discover_results(results)
    before = discovery.results_fingerprint(results, current)
    assert backup in capsys.readouterr().err
    shutil.rmtree(backup)
    assert discovery.results_fingerprint(results, current) == before
    assert capsys.readouterr().err == ""


def test_the_summary_counts_each_engine_once_beside_a_backend_copy(tmp_path):
    results, _ = backed_up(tmp_path)
    tables = summarize.summarize({**discovery.discover_results(results), "results_dir": str(results),
                                  "n_resamples": 100}, tmp_path / "summary")
    assert set(tables["latency"]["backend"]) == {CPU["backend"]}
    assert len(tables["latency"]) == len(MODELS) * 3
