"""claims.py: FP16 and INT8 apart, intervals on drops and latency, and whether each claim is like-for-like."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.test_decision import write_quickstart_like
from workflow_scripts.summary import claims as cl
from workflow_scripts.decision.decide import read_tables

TABLES = ("latency", "accuracy", "size", "compression_stats", "claims")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = write_quickstart_like(tmp_path_factory.mktemp("claims") / "results", runoff=True)
    return out, read_tables(out, TABLES)


def test_no_claim_pools_fp16_and_int8(quick):
    _, tables = quick
    claims = tables["claims"]
    assert "quantized_latency_reduction" not in set(claims["claim"])
    for _, row in claims.iterrows():
        if row["group"] == "FP16":
            assert row["claim"].startswith("fp16_")
        elif row["group"] == "INT8":
            assert row["claim"].startswith("int8_")
        else:
            assert row["group"] == "INT8 vs FP16"


def test_cpu_rows_say_why_they_are_not_like_for_like(quick):
    _, tables = quick
    claims = tables["claims"]
    assert not claims["like_for_like"].any()
    ort = claims[claims["backend"] == "onnxruntime"].set_index("claim")
    for reason in ("device class CPU", "runtime onnxruntime", "dataset digits", "input 32 px"):
        assert ort["why_not"].str.contains(reason).all(), reason
    assert "float32 arithmetic" in ort.loc["fp16_latency_reduction", "why_not"]
    assert "float32 arithmetic" not in ort.loc["int8_latency_reduction", "why_not"]
    assert "weight conversion without kernel selection" in ort.loc["int8_over_fp16_build_time", "why_not"]


def test_drops_and_latency_reductions_carry_intervals(quick):
    _, tables = quick
    claims = tables["claims"].set_index(["backend", "claim"])
    accuracy = tables["accuracy"]
    for backend in ("onnxruntime", "litert", "openvino"):
        row = claims.loc[(backend, "int8_top1_drop")]
        assert row["ours_ci_low"] <= row["ours_mean"] <= row["ours_ci_high"]
        cells = accuracy[(accuracy["backend"] == backend) & (accuracy["precision"] == "int8")]
        assert row["ours_mean"] == pytest.approx(cells["top1_drop_vs_fp32_points"].mean())
        latency = claims.loc[(backend, "int8_latency_reduction")]
        assert latency["ours_ci_low"] < latency["ours_mean"] < latency["ours_ci_high"]
        faster = claims.loc[(backend, "int8_faster_than_fp16")]
        assert faster["ours_ci_low"] <= faster["ours_mean"] <= faster["ours_ci_high"]
    assert claims["ours_ci_low"].loc[(slice(None), "int8_size_fraction")].isna().all()


def test_latency_intervals_come_from_rounds_not_from_one_runs_tasks(quick, tmp_path):
    """The runoff drifts every engine alike by up to 30% over its rounds: paired by round the INT8/FP32
    ratio hardly moves, so the claim's interval is the rounds' (a few %), and without a runoff there is
    none (resampling one run's tasks gave +-1% that reruns fell outside of)."""
    _, tables = quick
    latency = tables["latency"]
    int8 = latency[latency["precision"] == "int8"]
    assert (int8["rounds"] == 6).all()
    assert (int8["latency_median_vs_fp32_rounds_ci_low"] <= int8["latency_median_vs_fp32_rounds"]).all()
    # The unpaired spread of one engine over rounds is the drift (0.9x to 1.2x), far wider than the ratio's.
    fp32 = latency[latency["precision"] == "fp32"]
    spread = fp32["latency_median_rounds_ci_high_ms"] / fp32["latency_median_rounds_ci_low_ms"]
    assert (spread > 1.25).all()
    ratio_spread = int8["latency_median_vs_fp32_rounds_ci_high"] / int8["latency_median_vs_fp32_rounds_ci_low"]
    assert (ratio_spread < 1.1).all()
    plain = read_tables(write_quickstart_like(tmp_path / "results"), TABLES)["claims"].set_index(["backend", "claim"])
    assert plain.loc[("onnxruntime", "int8_latency_reduction"), ["ours_ci_low", "ours_ci_high"]].isna().all()


def test_mean_interval_one_cell_is_its_own_and_several_are_narrower():
    one = cl.mean_interval(pd.Series([2.0]), pd.Series([1.0]), pd.Series([3.5]))
    assert one == (2.0, 1.0, 3.5)
    mean, low, high = cl.mean_interval(pd.Series([2.0, 4.0]), pd.Series([1.0, 3.0]), pd.Series([3.0, 5.0]))
    assert mean == 3.0 and high - low == pytest.approx(2 / np.sqrt(2))
    assert np.isnan(cl.mean_interval(pd.Series([1.0]), pd.Series([np.nan]), pd.Series([2.0]))[1])


def test_jetson_tensorrt_on_the_studys_data_is_like_for_like():
    cell = {"device": "nvidia-jetson-orin-nano", "backend": "tensorrt", "dataset": "cifar100", "model": "DenseNet169",
            "input_size": 224, "settings_hash": "abc"}
    latency = pd.DataFrame([{**cell, "precision": p, "latency_median_ms": m, "latency_median_vs_fp32": m / 50,
                             "latency_median_vs_fp32_ci_low": m / 52, "latency_median_vs_fp32_ci_high": m / 48,
                             "jetson_model": "NVIDIA Jetson Orin Nano", "gpu_name": ""}
                            for p, m in (("fp32", 50.0), ("fp16", 22.0), ("int8", 21.0))])
    size = pd.DataFrame([{**cell, "precision": p, "size_vs_fp32": f} for p, f in (("fp32", 1), ("fp16", .42), ("int8", .3))])
    claims = cl.claims_table({"latency": latency, "size": size}).set_index("claim")
    assert claims.loc["fp16_size_fraction", "like_for_like"] and claims.loc["fp16_size_fraction", "why_not"] == ""
    assert claims.loc["fp16_latency_reduction", "like_for_like"]
    assert claims.loc["int8_latency_reduction", "ours_mean"] == pytest.approx(58.0)
    assert claims.loc["fp16_size_fraction", "device_class"] == "Jetson GPU"


def test_markdown_separates_fp16_int8_and_says_not_like_for_like(quick):
    out, _ = quick
    text = (out / "claims.md").read_text()
    assert "## intel-xeon-processor / litert" in text
    assert text.count("### FP16") == 3 and text.count("### INT8\n") == 3 and text.count("### INT8 vs FP16") == 3
    assert "**Not like-for-like** with the study: device class CPU" in text
    fp16 = text.split("### FP16")[1].split("### INT8")[0]
    assert "INT8" not in fp16.replace("FP16 and INT8 pooled", "")
