"""The answer up front (issue 27): the decision's one line per model at the end of the console summary, at
the top of summary.md and decision.md and in the report's pages; the test-set size behind the accuracy
budget; curated report tables; rate-limited progress lines; library noise kept off the console."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.test_decision import write_quickstart_like
from workflow_scripts.decision import decide as dm
from workflow_scripts.decision import render
from workflow_scripts.figures import report_html
from workflow_scripts.figures import run_summary
from workflow_scripts.core.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
ANSWER = re.compile(r"^(MobileNetV3Small|DenseNet169) on digits: deploy (onnxruntime|litert|openvino) (fp32|fp16|int8) — "
                    r"p99 [0-9.]+ ms \[[0-9.]+, [0-9.]+\], (top-1 drop [+-][0-9.]+ \[[+-][0-9.]+, [+-][0-9.]+\] points|"
                    r"top-1 [0-9.]+% \(the FP32 reference\)), [0-9.]+ MB")


@pytest.fixture(scope="module")
def summary_dir(tmp_path_factory) -> Path:
    return write_quickstart_like(tmp_path_factory.mktemp("answer") / "results", runoff=True)


@pytest.fixture(scope="module")
def decided(summary_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("decided")
    budgets = dm.Budgets(p99_ms=100, max_drop_points=1.0)
    decision = dm.write_decision(summary_dir, budgets, out / "decision.md", out / "decision.parquet")
    return out, decision, budgets


def test_one_answer_line_per_model_with_intervals_and_size(decided):
    _, decision, _ = decided
    items = render.answers(decision)
    assert [i["model"] for i in items] == list(dict.fromkeys(decision["model"]))
    for item in items:
        assert ANSWER.match(item["line"]), item["line"]
        chosen = decision[decision["chosen"] & (decision["model"] == item["model"])].iloc[0]
        assert item["deploy"] == f"{chosen['backend']} {chosen['precision']}"


def test_decision_md_opens_with_the_answer_and_states_the_test_set(decided):
    out, decision, _ = decided
    text = (out / "decision.md").read_text()
    assert text.index("## The answer") < text.index("Budgets:") < text.index("## intel-xeon-processor")
    for item in render.answers(decision):
        assert f"- {item['line']}" in text
    # 200 synthetic test images: one image is half a point; a 1-point budget is two images' worth.
    assert "digits: 200 test images: one image = 0.5 point; the drop budget of 1 points is 2.0 images' worth" in text
    assert "below two test images' worth" not in text


def test_a_budget_below_two_images_worth_is_warned_about(decided):
    _, decision, _ = decided
    notes = render.test_set_notes(decision, dm.Budgets(max_drop_points=0.6))
    assert len(notes) == 1 and "1.2 images' worth" in notes[0]
    assert "Warning: the budget is below two test images' worth (1 points)" in notes[0]
    assert "decision.max_drop_points" in notes[0]


def _decision_frame(tie: bool) -> pd.DataFrame:
    rows = []
    for backend, precision, p99, mb, rank in (("litert", "int8", 0.27, 1.1, 2), ("litert", "fp16", 0.26, 2.0, 1),
                                              ("onnxruntime", "fp32", 0.9, 4.0, 3)):
        rows.append({"device": "amd-epyc", "dataset": "digits", "input_size": 32, "model": "MobileNetV3Small",
                     "backend": backend, "precision": precision, "p99_ms": p99, "p99_ci_low_ms": p99 - 0.02,
                     "p99_ci_high_ms": p99 + 0.02, "engine_mb": mb, "top1_percent": 97.0, "drop_points": 0.37,
                     "drop_ci_low_points": -0.74, "drop_ci_high_points": 1.48, "feasible": True, "rank": rank,
                     "chosen": precision == ("int8" if tie else "fp16"), "tie": tie and backend == "litert",
                     "tie_broken_by": "size (1.1 MB)" if tie and precision == "int8" else "", "valid": True,
                     "fp32_valid": True, "high_variation": False, "rejection": "", "objective": "latency",
                     "test_images": 270, "budgets": '{"p99_ms": 5}'})
    return pd.DataFrame(rows)


def test_a_tie_says_with_whom_and_how_it_was_broken():
    item = render.answers(_decision_frame(tie=True))[0]
    assert item["line"].startswith("MobileNetV3Small on digits: deploy litert int8 — p99 0.27 ms [0.25, 0.29], "
                                   "top-1 drop +0.37 [-0.74, +1.48] points, 1.1 MB")
    assert item["tie"] == ("tie within measurement noise with litert fp16 (cannot be told apart at 95%); "
                           "broken by size (1.1 MB)")
    assert render.answers(_decision_frame(tie=False))[0]["tie"] == ""


def test_the_decision_records_what_broke_a_tie(summary_dir):
    decision = dm.decide(dm.read_tables(summary_dir), dm.Budgets(tie_margin=0.5))
    tied = decision[decision["chosen"] & decision["tie"]]
    assert len(tied), "a 50% tie margin ties the close engines of the synthetic runoff"
    assert tied["tie_broken_by"].str.match(r"^(size|accuracy) \(").all()
    assert (decision.loc[~decision["chosen"], "tie_broken_by"] == "").all()


def test_the_console_summary_ends_with_the_answer_and_summary_md_starts_with_it(summary_dir, decided, tmp_path):
    out, decision, _ = decided
    text = run_summary.write_run_summary(summary_dir, tmp_path / "summary.md", out / "decision.parquet")
    tail = text.rstrip("\n").splitlines()
    block = tail[[i for i, line in enumerate(tail) if line.startswith("=== The answer")][-1]:]
    assert block[1].startswith("budgets: p99 latency <= 100 ms")
    assert any(line.startswith("MobileNetV3Small on digits: deploy") for line in block)
    assert any(line.startswith("DenseNet169 on digits: deploy") for line in block)
    assert block[-1].startswith("test set digits: 200 test images") or block[-1].startswith("    ")
    md = (tmp_path / "summary.md").read_text()
    assert md.index("## The answer") < md.index("```text")
    stream = io.StringIO()
    assert run_summary.print_run_summary(tmp_path / "summary.md", stream)
    printed = stream.getvalue()
    assert printed.rfind("=== The answer") > printed.rfind("--- intel-xeon-processor")
    # tabulate lays the table out: a header rule of dashes under every column.
    assert re.search(r"^-{6,}  -{10,}", text, flags=re.M)


def test_edgeptq_summary_markdown_has_pipe_tables(summary_dir, decided):
    out, decision, _ = decided
    md = run_summary.render_markdown(dm.read_tables(summary_dir), decision)
    assert md.startswith("# End-of-run summary\n\n## The answer\n")
    assert "| engine " in md and "|--" in md


# --- report pages ------------------------------------------------------------------------------------

def test_report_tables_put_key_columns_first_and_fold_the_settings():
    frame = pd.DataFrame({"timestamp": ["2026"], "settings": ['{"benchmark": {"warmup": 5, "iterations": 30, '
                                                              '"min_duration_s": 1.0}, "rule": "benchmark_latency"}'],
                          "latency_p99_ms": [0.27], "latency_p99_ci_low_ms": [0.25], "latency_p99_ci_high_ms": [0.29],
                          "backend": ["litert"], "precision": ["int8"], "model": ["MobileNetV3Small"],
                          "dataset": ["digits"]})
    page = report_html.table_html(frame, "latency.parquet", "caption", name="latency")
    headers = re.findall(r"<th[^>]*>([^<]*)</th>", page)
    assert headers[:4] == ["model", "dataset", "backend", "precision"]
    assert headers[4] == "p99 ms [95% CI, one run]" and "0.27 [0.25, 0.29]" in page
    assert "<details><summary>" in page and "&quot;min_duration_s&quot;: 1.0" in page


def test_a_time_series_is_summarised_not_dumped():
    n = 848
    frame = pd.DataFrame({"device": "amd-epyc", "backend": np.repeat(["tf2onnx", "onnxruntime"], n // 2),
                          "model": "MobileNetV3Small", "precision": np.repeat(["onnx", "int8"], n // 2),
                          "stage": np.repeat(["onnx_conversion:measured:0", "engine_build:measured:0"], n // 2),
                          "elapsed_s": np.tile(np.arange(n // 2) * 0.1, 2), "cpu_percent_of_machine": 50.0,
                          "rss_mb": 300.0})
    page = report_html.time_series_html(frame, "compression_resources.parquet", "caption")
    assert "848 samples in 2 traces" in page and "compression_resources.parquet" in page
    assert page.count("<tr>") == 2 + 1  # two traces and the header


def test_every_summary_table_has_its_own_caption():
    common = (ROOT / "rules" / "common.smk").read_text()
    tables = re.findall(r'^    "(\w+)",$', common.split("SUMMARY_TABLES = [", 1)[1].split("]", 1)[0], flags=re.M)
    assert len(tables) >= 9
    captions = {name: report_html.caption_text(ROOT / "report" / f"table_{name}.rst") for name in tables + ["decision"]}
    assert all(captions.values()), [n for n, c in captions.items() if not c]
    assert len(set(captions.values())) == len(captions)


def test_report_pages_write_the_answer_for_the_main_page(summary_dir, decided, tmp_path):
    out, decision, _ = decided
    text = report_html.answer_rst(decision)
    assert text.startswith("- DenseNet169 on digits: deploy") and "\n- MobileNetV3Small on digits: deploy" in text
    assert "Budgets: p99 latency <= 100 ms" in text
    odd = _decision_frame(tie=True).assign(model="my_net*")
    assert r"my\_net\*" in report_html.answer_rst(odd)
    workflow = (ROOT / "report" / "workflow.rst").read_text()
    assert workflow.index("answer.rst") < workflow.index("The method")


# --- progress lines ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_is_rate_limited_and_a_short_step_stays_silent(caplog):
    clock = FakeClock()
    log = logging.getLogger("test.progress")
    with caplog.at_level(logging.INFO, logger="test.progress"):
        quick = Progress(log, "quick", total=100, clock=clock)
        for i in range(1, 101):
            clock.now += 0.01
            quick.update(i)
        quick.done("all")
        assert caplog.records == []
        slow = Progress(log, "slow", total=None, unit="batches", clock=clock)
        for i in range(1, 61):
            clock.now += 1.0
            slow.update(i)
        slow.done("60 batches")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:2] == ["slow: 10 batches, 10 s", "slow: 20 batches, 20 s"]
    assert len(lines) == 6 + 1 and lines[-1] == "slow: 60 batches, 60 s"


def test_progress_by_tenths_of_a_known_total(caplog):
    clock = FakeClock()
    log = logging.getLogger("test.progress.tenths")
    with caplog.at_level(logging.INFO, logger="test.progress.tenths"):
        p = Progress(log, "runoff", total=20, unit="measurements", clock=clock)
        for i in range(1, 21):
            clock.now += 4.0
            p.update(i, f"round {i}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "runoff: 1/20 measurements (5%), 4 s, about 76 s left; round 1" or lines[0].startswith("runoff: 2/20")
    assert all("%" in line for line in lines) and len(lines) <= 11


def test_a_long_latency_measurement_says_where_it_is(monkeypatch, caplog):
    from workflow_scripts.stages import latency

    clock = FakeClock()

    def run(_batch):
        clock.now += 0.5  # a 0.5 s task

    monkeypatch.setattr(latency.time, "perf_counter", clock)
    monkeypatch.setattr("workflow_scripts.core.progress.time.monotonic", clock)
    with caplog.at_level(logging.INFO, logger=latency.log.name):
        samples = latency.measure(run, None, warmup=0, iterations=10, min_duration_s=30.0, tasks_needed=0)
    assert len(samples) == 60
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("measuring latency")]
    # 30 s of 0.5 s tasks: a line at 10 s and at 20 s.
    assert lines == ["measuring latency: 20 tasks (33%), 10 s, about 20 s left; until 10 tasks and 30 s of task time",
                     "measuring latency: 40 tasks (67%), 20 s, about 10 s left; until 10 tasks and 30 s of task time"]


# --- library noise off the console ---------------------------------------------------------------------

def _console(tmp_path):
    from workflow_scripts.shims import ConsoleFilter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    handler.addFilter(ConsoleFilter(handler))
    return handler, stream


def test_fp16_truncation_warnings_become_one_line_and_nvml_none(tmp_path):
    handler, stream = _console(tmp_path)
    warnings_log = logging.getLogger("py.warnings")
    monitor = logging.getLogger("workflow_scripts.measure.gpu_monitor")
    runoff_log = logging.getLogger("workflow_scripts.stages.runoff")
    levels = {logger: logger.level for logger in (warnings_log, monitor, runoff_log)}
    for logger in levels:
        logger.addHandler(handler)
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        for value in (6.3e-08, 9.5e-08, -8.6e-08):
            warnings_log.warning("%s", f"UserWarning: the float32 number {value} will be truncated to 1e-07")
        monitor.info("NVML unavailable (%s); no GPU metrics", "NVML Shared Library Not Found")
        runoff_log.info("round 1/6 litert int8: median 0.2 ms", extra={"console": False})
        runoff_log.info("latency runoff: 10/54 measurements (19%)")
    finally:
        for logger, level in levels.items():
            logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("py.warnings: FP16 conversion (onnxconverter-common): float32 values too small")
    assert lines[1] == "workflow_scripts.stages.runoff: latency runoff: 10/54 measurements (19%)"


def test_a_noise_reason_never_reads_the_limit_over_itself():
    from workflow_scripts.measure.noise import noise_reason

    noisy, reason = noise_reason(0.1004, 0.0, 0.0)
    assert noisy and reason.startswith("IQR/median 0.1004 > 0.10")
    assert noise_reason(0.14, 0.0, 0.0)[1].startswith("IQR/median 0.14 > 0.10")


def test_tensorflows_start_up_notices_are_left_out_and_its_other_lines_kept(tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "import os\nos.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR\\nI0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see\\na real error\\n')\n"
        "VALUE = 42\n")
    code = "import workflow_scripts.shims, tensorflow, sys; print(tensorflow.VALUE); print('after', file=sys.stderr)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False,
                          env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42\n" and done.stderr == "a real error\nafter\n"
