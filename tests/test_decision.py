"""The deployment decision, its CLI and the end-of-run summary, on a synthetic quickstart-like summary.

The per-engine tables are written in the real path scheme by tests/test_summary.py's writers (one
CPU device, three backends, two models, three precisions each) and summarized by the real
``summarize`` entry point, so the decision reads exactly the columns the workflow writes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests import test_summary as ts
from workflow_scripts.decision import decide as dm
from workflow_scripts.core import discovery
from workflow_scripts.figures import run_summary
from workflow_scripts.summary import summarize

DEVICE = "intel-xeon-processor"
# Per backend: speed factor, latency fraction per precision, top-1 per precision.
BACKENDS = {
    "onnxruntime": (1.0, {"fp32": 1.0, "fp16": 1.5, "int8": 0.6}, {"fp32": 0.90, "fp16": 0.90, "int8": 0.87}),
    "litert": (0.8, {"fp32": 1.0, "fp16": 1.0, "int8": 0.3}, {"fp32": 0.90, "fp16": 0.90, "int8": 0.895}),
    "openvino": (0.7, {"fp32": 1.0, "fp16": 1.0, "int8": 0.5}, {"fp32": 0.90, "fp16": 0.90, "int8": 0.885}),
}


@contextlib.contextmanager
def _constants(**values):
    """Set test_summary's generator constants for one backend, restoring them afterwards."""
    old = {k: getattr(ts, k) for k in values}
    for k, v in values.items():
        setattr(ts, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(ts, k, v)


DRIFT = [1.0, 1.1, 0.95, 1.2, 1.05, 0.9]  # a machine slowing and speeding up over six runoff rounds


def write_runoff(results: Path, rng) -> None:
    """A six-round runoff per model from the engines' latency rows: every engine drifts alike, plus 1% noise."""
    rows = []
    for path in sorted(results.glob(f"{DEVICE}/*/digits_32px/*/*_latency.parquet")):
        row = pd.read_parquet(path).iloc[0]
        for r, drift in enumerate(DRIFT):
            median = float(row["latency_median_ms"]) * drift * (1 + 0.01 * rng.standard_normal())
            rows.append({"device": DEVICE, "dataset": "digits", "input_size": 32, "model": row["model"],
                         "backend": path.parts[-4], "precision": row["precision"], "round": r,
                         "latency_median_ms": median, "latency_p99_ms": 1.3 * median, "latency_iqr_ratio": 0.02,
                         "cpu_steal_percent": 0.0, "other_processes_cores": 0.1})
    frame = pd.DataFrame(rows)
    for model, part in frame.groupby("model"):
        out = results / DEVICE / "onnx" / "digits_32px" / model / "latency_runoff.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        part.to_parquet(out, index=False)


def write_quickstart_like(results: Path, seed: int = 0, flags: bool = True, runoff: bool = False) -> Path:
    """Per-engine tables of one CPU device with three backends; summarize them; return the summary folder.

    With ``flags``, litert int8 of DenseNet169 is marked high variation and openvino fp16 of
    MobileNetV3Small invalid, as real busy-machine runs are. With ``runoff``, a six-round latency
    runoff per model (:func:`write_runoff`).
    """
    rng = np.random.default_rng(seed)
    for backend, (speed, latency, top1) in BACKENDS.items():
        system = {"device": DEVICE, "backend": backend, "cuda_cores": "", "gpu": False}
        with _constants(LATENCY_FRACTION=latency, TOP1=top1):
            invalid = {("MobileNetV3Small", "fp16")} if flags and backend == "openvino" else frozenset()
            ts.write_device(results, system, rng, speed=speed, invalid=invalid)
    ts.write_keras(results)
    if flags:
        path = results / DEVICE / "litert" / "digits_32px" / "DenseNet169" / "int8_latency.parquet"
        frame = pd.read_parquet(path)
        frame["high_variation"] = True
        frame["noise_reason"] = "IQR/median 0.31 > 0.10: steal 31%, other processes 0.8 cores"
        frame.to_parquet(path, index=False)
    if runoff:
        write_runoff(results, rng)
    out = results / "summary"
    files = discovery.discover_results(results)
    summarize.summarize({**files, "results_dir": str(results), "seed": 0, "n_resamples": 300}, out)
    return out


@pytest.fixture(scope="module")
def summary_dir(tmp_path_factory) -> Path:
    return write_quickstart_like(tmp_path_factory.mktemp("quick") / "results")


@pytest.fixture(scope="module")
def tables(summary_dir):
    return dm.read_tables(summary_dir)


def test_engine_table_has_one_row_per_engine_with_drop_intervals(tables):
    engines = dm.engine_table(tables)
    assert len(engines) == 3 * 2 * 3
    assert not engines.duplicated(dm.GROUP + dm.ENGINE).any()
    int8 = engines[engines["precision"] == "int8"]
    assert (int8["drop_ci_low_points"] <= int8["drop_points"]).all()
    assert (int8["drop_points"] <= int8["drop_ci_high_points"]).all()
    assert engines["p99_ms"].ge(engines["p50_ms"]).all()
    assert engines["energy_per_inference_mj"].isna().all() and engines["energy_note"].str.len().gt(0).all()


def test_lowest_p99_within_budgets_is_chosen_and_every_rejection_is_explained(tables):
    budgets = dm.Budgets(p99_ms=100.0, max_drop_points=2.0)
    decision = dm.decide(tables, budgets)
    chosen = decision[decision["chosen"]]
    assert len(chosen) == 2  # one per model on the one device
    for _, row in chosen.iterrows():
        group = decision[(decision["model"] == row["model"]) & decision["feasible"]]
        assert row["p99_ms"] == group["p99_ms"].min()
        assert row["drop_ci_high_points"] <= 2.0
    rejected = decision[~decision["feasible"]]
    assert len(rejected) and rejected["rejection"].str.len().gt(0).all()
    # ORT INT8 loses 3 points: rejected on the drop, naming the upper bound and the excess.
    ort_int8 = rejected[(rejected["backend"] == "onnxruntime") & (rejected["precision"] == "int8")]
    assert len(ort_int8) == 2
    assert ort_int8["rejection"].str.contains(r"95% CI upper bound .* > 2 points \(over by").all()
    # The invalid run is rejected for being invalid, and the flag is said.
    invalid = decision[(decision["backend"] == "openvino") & (decision["precision"] == "fp16")
                       & (decision["model"] == "MobileNetV3Small")].iloc[0]
    assert "latency run invalid" in invalid["rejection"]


def test_budget_excess_is_quantified():
    row = pd.Series({"p99_ms": 7.5, "engine_mb": 12.0, "drop_points": 0.5, "drop_ci_low_points": -0.5,
                     "drop_ci_high_points": 1.5, "rss_peak_mb": 900.0, "energy_per_inference_mj": np.nan,
                     "energy_note": "no RAPL", "valid": True})
    broken, notes = dm.check(row, dm.Budgets(p99_ms=5, max_mb=10, max_drop_points=1.0, max_rss_mb=1000,
                                            max_energy_mj=3))
    text = " | ".join(broken)
    assert "p99 latency 7.5 ms > 5 ms (over by 2.5 ms, 50%)" in text
    assert "engine size 12 MB > 10 MB (over by 2 MB, 20%)" in text
    assert "upper bound 1.50 > 1 points (over by 0.50)" in text
    assert "RSS" not in text
    assert notes == ["energy budget not checked: no RAPL"]
    # Judged by the point estimate, the same drop fits.
    broken, _ = dm.check(row, dm.Budgets(max_drop_points=1.0, drop_bound="point"))
    assert broken == []


def test_objectives_pick_differently(tables):
    fastest = dm.decide(tables, dm.Budgets(objective="latency"))
    smallest = dm.decide(tables, dm.Budgets(objective="size"))
    accurate = dm.decide(tables, dm.Budgets(objective="accuracy"))
    for frame, column, best in ((fastest, "p99_ms", min), (smallest, "engine_mb", min),
                                (accurate, "top1_percent", max)):
        for model, group in frame[frame["feasible"]].groupby("model"):
            assert group.loc[group["chosen"], column].iloc[0] == best(group[column])
    assert set(smallest.loc[smallest["chosen"], "precision"]) == {"int8"}
    assert set(accurate.loc[accurate["chosen"], "precision"]) <= {"fp32", "fp16"}


def test_no_feasible_engine_says_so_and_names_the_closest(tables):
    budgets = dm.Budgets(p99_ms=0.001)
    decision = dm.decide(tables, budgets)
    assert not decision["chosen"].any()
    text = dm.decision_markdown(decision, budgets)
    assert text.count("No engine meets every budget") == 2 and "Closest:" in text


def test_energy_budget_applies_only_where_measured(tables):
    latency = tables["latency"].copy()
    measured = latency["backend"] == "litert"
    latency["energy_per_inference_mj"] = np.where(measured, np.where(latency["precision"] == "int8", 2.0, 9.0), np.nan)
    latency["energy_note"] = np.where(measured, "rapl", "no power counter readable here")
    decision = dm.decide({**tables, "latency": latency}, dm.Budgets(max_energy_mj=5.0, require_valid=False))
    lit = decision[decision["backend"] == "litert"]
    assert (~lit.loc[lit["precision"] != "int8", "feasible"]).all()
    assert lit.loc[lit["precision"] != "int8", "rejection"].str.contains("energy per inference 9 mJ > 5 mJ").all()
    others = decision[decision["backend"] != "litert"]
    assert others["feasible"].all() and others["notes"].str.contains("no power counter readable here").all()


def test_markdown_and_parquet_are_written(summary_dir, tmp_path):
    budgets = dm.Budgets(p99_ms=100, max_drop_points=1.0)
    decision = dm.write_decision(summary_dir, budgets, tmp_path / "decision.md", tmp_path / "decision.parquet")
    text = (tmp_path / "decision.md").read_text()
    assert "## intel-xeon-processor" in text and "**Deploy" in text and "rejected:" in text
    assert budgets.describe() in text
    back = pd.read_parquet(tmp_path / "decision.parquet")
    assert len(back) == len(decision) and back["chosen"].sum() == 2


def test_budgets_from_config_and_bad_values():
    budgets = dm.Budgets.from_config({"p99_ms": 5, "max_drop_points": 1.0, "objective": "size"})
    assert budgets.p99_ms == 5 and budgets.objective == "size" and budgets.require_valid
    with pytest.raises(ValueError, match="objective"):
        dm.Budgets(objective="fastest")
    with pytest.raises(ValueError, match="p99_ms"):
        dm.Budgets(p99_ms=float("nan"))


def test_cli_answers_ad_hoc_budgets(summary_dir, tmp_path):
    cmd = [sys.executable, "-m", "workflow_scripts.cli", str(summary_dir), "--p99-ms", "100", "--max-drop", "1.0",
           "--objective", "size", "--parquet", str(tmp_path / "d.parquet")]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[1], check=False)
    assert done.returncode == 0, done.stderr
    assert "upper 95% bound of the top-1 drop vs FP32 <= 1 points" in done.stdout and "**Deploy" in done.stdout
    assert pd.read_parquet(tmp_path / "d.parquet")["objective"].eq("size").all()
    missing = subprocess.run([sys.executable, "-m", "workflow_scripts.cli", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, cwd=Path(__file__).parents[1], check=False)
    assert missing.returncode == 2 and "latency.parquet not found" in missing.stderr


def test_run_summary_lists_every_engine_with_flags(summary_dir, tmp_path):
    budgets = dm.Budgets(p99_ms=100, max_drop_points=1.0)
    dm.write_decision(summary_dir, budgets, tmp_path / "decision.md", tmp_path / "decision.parquet")
    text = run_summary.write_run_summary(summary_dir, tmp_path / "summary.md", tmp_path / "decision.parquet")
    assert "=== edgeptq: performance summary ===" in text
    for backend in BACKENDS:
        for precision in ("fp32", "fp16", "int8"):
            assert f"{backend} {precision}" in text
    assert "noisy (IQR/median 0.31 > 0.10: steal 31%, other processes 0.8 cores)" in text and "invalid" in text and text.count(" * ") + text.count("*  ") >= 2
    assert "energy: not measured" in text
    import io

    stream = io.StringIO()
    assert run_summary.print_run_summary(tmp_path / "summary.md", stream)
    assert stream.getvalue().strip().startswith("=== edgeptq") and "```" not in stream.getvalue()
    assert not run_summary.print_run_summary(tmp_path / "absent.md", io.StringIO())
