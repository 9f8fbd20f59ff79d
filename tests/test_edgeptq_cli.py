"""The ``edgeptq`` console command (pyproject [project.scripts]): ``decide`` and ``summary`` with
``--format md|json|csv``; an unknown option, filter value or format ends in exit status 2 naming the bad
value and the valid ones (issue 27)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_decision import write_quickstart_like
from workflow_scripts import cli as decision_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def summary_dir(tmp_path_factory) -> Path:
    out = write_quickstart_like(tmp_path_factory.mktemp("cli") / "results")
    from workflow_scripts.decision import decide as dm

    dm.write_decision(out, dm.Budgets(p99_ms=100, max_drop_points=1.0), out / "decision.md", out / "decision.parquet")
    return out


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = decision_cli.edgeptq(list(map(str, argv)))
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_decide_json_has_the_answers_and_one_row_per_candidate(summary_dir, capsys):
    code, out, err = run(capsys, "decide", summary_dir, "--p99-ms", 5, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["budgets"].startswith("p99 latency <= 5 ms") and data["objective"] == "latency"
    assert {a["model"] for a in data["answers"]} == {"MobileNetV3Small", "DenseNet169"}
    assert len(data["rows"]) == 18
    assert list(data["rows"][0])[:6] == ["device", "dataset", "input_size", "model", "backend", "precision"]


def test_decide_csv_and_md(summary_dir, capsys):
    code, out, _ = run(capsys, "decide", summary_dir, "--max-drop", 1.0, "--format", "csv", "--backend", "litert")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 6 and {r["backend"] for r in rows} == {"litert"}
    code, out, _ = run(capsys, "decide", summary_dir, "--format", "md", "--precision", "int8")
    assert code == 0 and out.startswith("# Deployment decision\n\n## The answer\n") and " fp32 " not in out


def test_summary_in_every_format(summary_dir, capsys):
    code, md, _ = run(capsys, "summary", summary_dir)
    assert code == 0 and "## The answer" in md and "| engine" in md
    code, out, _ = run(capsys, "summary", summary_dir, "--format", "csv", "--model", "DenseNet169")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 9 and sum(r["chosen"] == "True" for r in rows) == 1
    code, out, _ = run(capsys, "summary", summary_dir, "--format", "json")
    assert code == 0 and len(json.loads(out)["rows"]) == 18


@pytest.mark.parametrize("argv, named", [
    (["decide", "{dir}", "--p99", "5"], ["--p99 5", "valid options:", "--p99-ms", "--max-drop"]),
    (["decide", "{dir}", "--format", "xml"], ["'xml'", "md", "json", "csv"]),
    (["decide", "{dir}", "--backend", "tensorrtx"], ["tensorrtx", "backends measured: litert, onnxruntime, openvino"]),
    (["summary", "{dir}", "--model", "ResNet50"], ["ResNet50", "models measured: DenseNet169, MobileNetV3Small"]),
    (["decide", "{dir}", "--precision", "int4"], ["int4", "precisions measured: fp16, fp32, int8"]),
    (["decide", "{dir}", "--p99-ms", "-5"], ["'-5' must be greater than 0"]),
    (["predict", "{dir}"], ["'predict'", "decide", "summary"]),
])
def test_bad_values_exit_2_naming_the_value_and_the_valid_ones(summary_dir, capsys, argv, named):
    code, out, err = run(capsys, *[a.format(dir=summary_dir) for a in argv])
    assert code == 2 and out == ""
    for text in named:
        assert text in err, err


def test_a_missing_summary_folder_is_named(tmp_path, capsys):
    code, _, err = run(capsys, "summary", tmp_path / "nowhere")
    assert code == 2 and "nowhere/latency.parquet not found" in err


def test_the_installed_script_works_as_written(summary_dir):
    script = shutil.which("edgeptq")
    if script is None:
        pytest.skip("the edgeptq script is not installed: pip install -e . --no-deps")
    done = subprocess.run([script, "decide", str(summary_dir), "--p99-ms", "5", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answers"]


def test_the_module_cli_keeps_working(summary_dir):
    done = subprocess.run(["python", "-m", "workflow_scripts.cli", str(summary_dir), "--p99-ms", "100"],
                          capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0 and "**Deploy" in done.stdout and "## The answer" in done.stdout


def test_a_reader_that_stops_early_gets_no_traceback(summary_dir):
    """``edgeptq summary … --format csv | head -1``: the reader has gone before the table is written; the
    command ends with status 1 and an empty stderr instead of a BrokenPipeError traceback."""
    script = ("import sys; from workflow_scripts.cli import _exit_quietly_on_closed_pipe, edgeptq; "
              f"sys.argv = ['edgeptq', 'summary', {str(summary_dir)!r}, '--format', 'csv']; "
              "_exit_quietly_on_closed_pipe(edgeptq)")
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone: every write to the pipe fails with EPIPE
    try:
        done = subprocess.run(["python", "-c", script], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1
