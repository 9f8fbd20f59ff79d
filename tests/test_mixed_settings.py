"""The summary refuses to mix rows measured under different settings unless asked to (issue 7).

Unit tests of ``config.comparable_settings`` (which settings a row's measurement depends on), the
summary's check on synthetic per-engine tables written in the real path scheme (the helpers of
tests/test_summary.py), and one run of the real snakemake CLI on such tables: the summary job
fails with the conflict in its log and writes nothing, and succeeds with
``--config summary='{allow_mixed_configs: true}'``.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.cli import snakemake
from tests.test_summary import (
    BASE_CONFIG,
    CPU,
    JETSON,
    MODELS,
    REPEATS,
    WARMUP,
    write_device,
    write_keras,
)
from workflow_scripts.core import discovery
from workflow_scripts.summary import summarize
from workflow_scripts.core import settings_check
from workflow_scripts.core.config import NOT_COMPARED, RULE_SETTINGS, comparable_settings, flatten_settings, settings_json, short_hash, stage_keys, validate_config
from workflow_scripts.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def changed(config: dict, key: str, value) -> dict:
    """A deep copy of ``config`` with dotted ``key`` set to ``value``."""
    out = copy.deepcopy(config)
    *blocks, leaf = key.split(".")
    target = out
    for block in blocks:
        target = target.setdefault(block, {})
    target[leaf] = value
    return out


# --- comparable_settings ---------------------------------------------------------------------------

def test_int8_rows_carry_calibration_and_fp32_rows_do_not():
    int8 = comparable_settings(BASE_CONFIG, "int8", "onnxruntime")
    fp32 = comparable_settings(BASE_CONFIG, "fp32", "onnxruntime")
    assert int8["calibration"]["method"] == "entropy" and int8["calibration"]["num_images"] == 256
    assert "calibration" not in fp32 and "calibration" not in comparable_settings(BASE_CONFIG, "fp16", "onnxruntime")
    # The percentile only matters for method percentile.
    assert "percentile" not in int8["calibration"]
    percentile = comparable_settings(changed(BASE_CONFIG, "calibration.method", "percentile"), "int8", "onnxruntime")
    assert percentile["calibration"]["percentile"] == 99.999


def test_tensorrt_block_only_for_tensorrt_rows():
    trt = comparable_settings(BASE_CONFIG, "fp16", "tensorrt")
    assert trt["tensorrt"]["workspace_mb"] == 1024 and trt["tensorrt"]["builder_optimization_level"] == 3
    assert "int8_mode" not in trt["tensorrt"]  # only int8 builds read it
    assert comparable_settings(BASE_CONFIG, "int8", "tensorrt")["tensorrt"]["int8_mode"] == "calibration"
    for backend in ("onnxruntime", "tf2onnx", "keras", None):
        assert "tensorrt" not in comparable_settings(BASE_CONFIG, "fp16", backend), backend
    # A TensorRT build reads the benchmark batch (its optimization profile), even without the rest of benchmark.
    build = comparable_settings(BASE_CONFIG, "fp16", "tensorrt", stage="build_engine")
    assert build["benchmark"] == {"batch_size": 1}
    assert "benchmark" not in comparable_settings(BASE_CONFIG, "fp16", "onnxruntime", stage="build_engine")


def test_rows_without_precision_get_neither_block():
    for stage in ("train_model", "evaluate_keras", "export_onnx", None):
        settings = comparable_settings(BASE_CONFIG, None, "tensorrt", stage=stage)
        assert "calibration" not in settings and "tensorrt" not in settings, stage


@pytest.mark.parametrize("key,value", [
    ("results_dir", "/elsewhere/results"), ("resources_dir", "/mnt/archives"), ("device", "my-board"),
    ("backends", ["tensorrt"]), ("resources.train_model.mem_mb", 99999), ("verify_checksums", False), ("models", ["DenseNet201"]), ("datasets", ["cifar100"]),
    ("precisions", ["int8"]), ("calibration_study.enabled", True), ("calibration_study.methods", ["minmax"]),
    ("summary.allow_mixed_configs", True), ("export.parity_tolerance", 0.1), ("export.parity_images", 2),
])
def test_paths_selectors_and_other_studies_are_excluded(key, value):
    other = changed(BASE_CONFIG, key, value)
    for precision in ("fp32", "int8", None):
        for backend in ("onnxruntime", "tensorrt"):
            assert comparable_settings(other, precision, backend) == comparable_settings(BASE_CONFIG, precision, backend)


@pytest.mark.parametrize("key,value,stages", [
    ("input_size", 64, ["train_model", "evaluate_keras", "export_onnx", "build_engine", "benchmark_latency", "evaluate_engine"]),
    ("seed", 3, ["train_model", "export_onnx", "benchmark_latency"]),
    ("weights", "imagenet", ["train_model", "evaluate_keras", "benchmark_latency"]),
    ("train.epochs", 3, ["train_model", "export_onnx", "evaluate_engine"]),
    ("export.opset", 13, ["export_onnx", "build_engine", "benchmark_latency", "evaluate_engine"]),
    ("compression.repeats", 9, ["export_onnx", "build_engine", "benchmark_latency"]),
    ("monitor.interval_s", 0.5, ["export_onnx", "benchmark_latency"]),
    ("benchmark.iterations", 50, ["benchmark_latency"]),
    ("evaluate.max_images", 10, ["evaluate_engine", "evaluate_keras"]),
])
def test_measured_settings_count_from_the_stage_that_reads_them_on(key, value, stages):
    other = changed(BASE_CONFIG, key, value)
    for stage in RULE_SETTINGS:
        differs = comparable_settings(other, "fp32", "onnxruntime", stage) != \
            comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", stage)
        if stage in stages:
            assert differs, (key, stage)
    # A stage that does not read the key (or anything upstream of one that does) ignores it.
    if key.startswith("benchmark."):
        for stage in ("train_model", "evaluate_keras", "export_onnx", "build_engine", "evaluate_engine"):
            assert comparable_settings(other, "fp32", "onnxruntime", stage) == \
                comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", stage), stage
    if key.startswith("evaluate."):
        for stage in ("export_onnx", "build_engine", "benchmark_latency"):
            assert comparable_settings(other, "fp32", "onnxruntime", stage) == \
                comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", stage), stage


def test_every_schema_key_is_decided():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    from workflow_scripts.core.registry import BACKENDS

    # Besides the rules' keys: calibration (INT8 rows) and each backend's options block (its rows).
    compared = set(stage_keys(None)) | {"calibration"} | {b.options_key for b in BACKENDS.values() if b.options_key}
    assert set(schema["properties"]) == compared | set(NOT_COMPARED)
    assert not compared & set(NOT_COMPARED)


def test_batch_size_of_other_datasets_and_float_spelling_do_not_count():
    other = changed(changed(BASE_CONFIG, "train.batch_size", {"digits": 32, "cifar100": 64}),
                    "benchmark.min_duration_s", 1)  # 1 instead of the default 1.0
    assert comparable_settings(other, "fp32", "onnxruntime", dataset="digits") == \
        comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", dataset="digits")
    assert comparable_settings(other, "fp32", "onnxruntime", dataset="cifar100") != \
        comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", dataset="cifar100")


def test_settings_json_is_compact_sorted_and_hashed():
    text = settings_json(comparable_settings(BASE_CONFIG, "int8", "onnxruntime"))
    assert " " not in text and json.loads(text) == comparable_settings(BASE_CONFIG, "int8", "onnxruntime")
    assert list(json.loads(text)) == sorted(json.loads(text))
    assert len(short_hash(text)) == 12 and short_hash(text) != short_hash(text + " ")
    assert flatten_settings({"a": {"b": 1, "c": {}}, "d": None}) == {"a.b": 1, "a.c": {}, "d": None}


def test_allow_mixed_configs_accepts_the_command_line_string():
    base = {"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"]}
    assert validate_config(copy.deepcopy(base))["summary"]["allow_mixed_configs"] is False
    # --config summary='{allow_mixed_configs: true}' gives the string 'true' (Snakemake parses it untyped).
    assert validate_config({**base, "summary": {"allow_mixed_configs": "true"}})["summary"]["allow_mixed_configs"] is True
    with pytest.raises(ConfigError, match="allow_mixed_configs"):
        validate_config({**base, "summary": {"allow_mixed_configs": "yes please"}})


# --- the provenance columns of each job --------------------------------------------------------------

def job(rule: str, config: dict = BASE_CONFIG, threads: int = 2, **wildcards):
    """The attributes of Snakemake's script object that provenance_of reads; params.settings is built
    as rules/common.smk's settings_param builds it."""
    from types import SimpleNamespace

    from workflow_scripts.core.config import rule_settings

    backend = wildcards.get("backend", "tf2onnx" if rule == "export_onnx" else None)
    wildcards = {"dataset": "digits", **wildcards}
    settings = {"rule": rule, **rule_settings(config, rule, precision=wildcards.get("precision"),
                                              backend=wildcards.get("backend"), dataset="digits")}
    params = SimpleNamespace(provenance={"device": "test-device", "backend": backend} if backend else {},
                             settings=settings)
    return SimpleNamespace(rule=f"{rule}_{backend}" if rule.startswith("build") else rule, config=config,
                           wildcards=wildcards, params=params, threads=threads)


def test_each_rule_gets_its_stage_and_precision():
    from workflow_scripts.shims import row_settings

    int8 = row_settings(job("build_int8_engine", backend="tensorrt"))  # no precision wildcard
    assert int8["calibration"]["method"] == "entropy" and int8["tensorrt"]["int8_mode"] == "calibration"
    assert int8["runtime"] == {"build_int8_engine": {"threads": 2}} and "rule" not in int8
    fp16 = row_settings(job("build_engine", backend="onnxruntime", precision="fp16"))
    assert "calibration" not in fp16 and "benchmark" not in fp16 and "evaluate" not in fp16
    latency = row_settings(job("benchmark_latency", threads=1, backend="onnxruntime", precision="int8"))
    assert latency["benchmark"]["iterations"] == 30 and "calibration" in latency and "evaluate" not in latency
    assert latency["runtime"] == {"benchmark_latency": {"threads": 1}}
    pinned = row_settings(job("benchmark_latency", changed(BASE_CONFIG, "benchmark.threads", 4), threads=2,
                              backend="onnxruntime", precision="fp32"))
    assert pinned["runtime"] == {"benchmark_latency": {"threads": 4}}
    accuracy = row_settings(job("evaluate_engine", backend="onnxruntime", precision="fp32"))
    assert "evaluate" in accuracy and "benchmark" not in accuracy and "runtime" not in accuracy
    export = row_settings(job("export_onnx"))
    assert export["export"] == {"opset": 17} and "calibration" not in export and "evaluate" not in export
    keras = row_settings(job("evaluate_keras"))
    assert "evaluate" in keras and "export" not in keras and keras["train"]["batch_size"] == {"digits": 32}
    # A job without a settings param (the calibration study's rows) records none.
    from types import SimpleNamespace

    assert row_settings(SimpleNamespace(rule="evaluate_calibration_variant", params=SimpleNamespace())) == {}


def test_provenance_of_adds_settings_and_their_hash():
    from workflow_scripts.shims import provenance_of

    prov = provenance_of(job("benchmark_latency", backend="onnxruntime", precision="fp32"), dataset="digits")
    expected = comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", "benchmark_latency", "digits")
    assert json.loads(prov["settings"]) == {**expected, "runtime": {"benchmark_latency": {"threads": 2}}}
    assert prov["settings_hash"] == short_hash(prov["settings"]) and len(prov["config_hash"]) == 12
    assert prov["device"] == "test-device" and prov["dataset"] == "digits"


def test_other_thread_counts_are_a_conflict_the_summary_names(tmp_path):
    # Rows of one latency cell measured with --cores 1 and the rest with 2: the summary refuses.
    from workflow_scripts.shims import row_settings

    frames = {"latency": pd.DataFrame([
        {"device": "d", "backend": "onnxruntime", "model": "m", "precision": precision,
         "settings": settings_json(row_settings(job("benchmark_latency", threads=threads, backend="onnxruntime",
                                                    precision=precision)))}
        for precision, threads in (("fp32", 2), ("fp16", 1))])}
    with pytest.raises(ConfigError) as info:
        settings_check.check_settings(frames)
    assert "runtime.benchmark_latency.threads" in str(info.value) and "--forcerun benchmark_latency" in str(info.value)


# --- the summary's check ---------------------------------------------------------------------------

CALIBRATION_B = changed(BASE_CONFIG, "calibration.method", "minmax")
ITERATIONS_50 = changed(BASE_CONFIG, "benchmark.iterations", 50)


def test_calibration_change_leaves_fp32_and_fp16_settings_equal():
    for precision in ("fp32", "fp16"):
        for stage in (None, "build_engine", "benchmark_latency", "evaluate_engine"):
            assert comparable_settings(CALIBRATION_B, precision, "onnxruntime", stage) == \
                comparable_settings(BASE_CONFIG, precision, "onnxruntime", stage)
    for stage in (None, "build_engine", "benchmark_latency", "evaluate_engine"):
        assert comparable_settings(CALIBRATION_B, "int8", "onnxruntime", stage) != \
            comparable_settings(BASE_CONFIG, "int8", "onnxruntime", stage)


def results_with(tmp_path: Path, cpu_config_of, jetson_config_of=None) -> Path:
    results = tmp_path / "results"
    rng = np.random.default_rng(1)
    write_device(results, CPU, rng, speed=1.0, config_of=cpu_config_of)
    if jetson_config_of is not None:
        write_device(results, JETSON, rng, speed=0.5, config_of=jetson_config_of)
    write_keras(results)
    return results


def summarize_all(results: Path, out: Path, allow_mixed: bool = False, config: dict | None = None):
    return summarize.summarize({**discovery.discover_results(results), "results_dir": str(results),
                                "n_resamples": 200}, out, allow_mixed=allow_mixed, config=config)


def test_int8_only_rerun_after_a_calibration_change_is_accepted(tmp_path):
    # FP32/FP16 (and the export) from config A, INT8 rerun under config B: comparable, so no refusal.
    def int8_rerun(precision, stage):
        return CALIBRATION_B if precision == "int8" else BASE_CONFIG

    results = results_with(tmp_path, int8_rerun, int8_rerun)
    tables = summarize_all(results, tmp_path / "summary")
    latency = tables["latency"]
    assert latency.loc[latency["precision"] == "int8", "settings"].str.contains('"method":"minmax"').all()
    cpu_fp32 = latency[(latency["precision"] == "fp32") & (latency["device"] == CPU["device"])]
    assert len(cpu_fp32) == 2 and cpu_fp32["settings"].map(json.loads).map(
        lambda s: s == comparable_settings(BASE_CONFIG, "fp32", "onnxruntime", "benchmark_latency", "digits")).all()
    assert (tmp_path / "summary" / "claims.md").is_file()
    # The other device's INT8 rows under the old calibration would be a real mix.
    results = results_with(tmp_path / "again", int8_rerun, lambda precision, stage: BASE_CONFIG)
    with pytest.raises(ConfigError, match="calibration.method"):
        summarize_all(results, tmp_path / "again" / "summary")


def test_latency_only_rerun_after_a_benchmark_change_is_accepted(tmp_path):
    # benchmark.* reaches only the latency jobs: builds and accuracy keep the old config.
    results = results_with(tmp_path, lambda precision, stage: ITERATIONS_50 if stage == "benchmark_latency" else BASE_CONFIG)
    summarize_all(results, tmp_path / "summary")


def test_devices_measured_with_different_iterations_are_refused(tmp_path):
    results = results_with(tmp_path, lambda precision, stage: BASE_CONFIG, lambda precision, stage: ITERATIONS_50)
    out = tmp_path / "summary"
    with pytest.raises(ConfigError) as info:
        summarize_all(results, out, config=BASE_CONFIG)
    message = str(info.value)
    assert "benchmark.iterations" in message and "summary.allow_mixed_configs" in message
    assert "30 on " in message and "50 on " in message and "[current config: 30]" in message
    assert CPU["device"] in message and JETSON["device"] in message
    assert "--forcerun benchmark_latency" in message and "allow_mixed_configs: true" in message
    assert "… and" in message  # 6 cells per device: the list is abbreviated
    # Only the latency rows carry benchmark: the one conflicting key is iterations.
    conflicts = settings_check.settings_conflicts(
        {"latency": summarize.read_all(discovery.discover_results(results)["latency_files"], results)})
    assert list(conflicts) == ["benchmark.iterations"]
    assert not out.exists() or not list(out.iterdir())  # nothing written


def test_allow_mixed_configs_keeps_the_rows_and_their_settings_hash(tmp_path, caplog):
    results = results_with(tmp_path, lambda precision, stage: BASE_CONFIG, lambda precision, stage: ITERATIONS_50)
    out = tmp_path / "summary"
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.summary.summarize"):
        tables = summarize_all(results, out, allow_mixed=True)
    assert "allow_mixed_configs is true" in caplog.text and "benchmark.iterations" in caplog.text
    latency = pd.read_parquet(out / "latency.parquet")
    fp32 = latency[latency["precision"] == "fp32"].drop_duplicates("device").set_index("device")
    assert fp32.loc[CPU["device"], "settings_hash"] != fp32.loc[JETSON["device"], "settings_hash"]
    for name in ("latency", "size", "resources", "accuracy", "compression_stats"):
        assert "settings_hash" in pd.read_parquet(out / f"{name}.parquet").columns, name
    assert set(tables["claims"]["device"]) == {CPU["device"], JETSON["device"]}


def test_rows_without_settings_are_unknown_not_conflicts(tmp_path, caplog):
    # The Jetson's rows predate the settings column; the CPU's have it.
    results = results_with(tmp_path, lambda precision, stage: BASE_CONFIG, lambda precision, stage: None)
    with caplog.at_level(logging.WARNING, logger="workflow_scripts.summary.summarize"):
        summarize_all(results, tmp_path / "summary")
    assert "settings are unknown" in caplog.text and JETSON["device"] in caplog.text


# --- through the snakemake CLI -------------------------------------------------------------------

CLI_CONFIG = {"models": list(MODELS), "datasets": ["digits"], "precisions": ["fp32", "fp16", "int8"],
              "backends": ["onnxruntime"], "device": CPU["device"], "weights": "none", "input_size": 32,
              "train": {"epochs": 10, "batch_size": {"digits": 32, "cifar100": 32, "oxford_flowers102": 4}},
              "compression": {"warmup": WARMUP, "repeats": REPEATS},
              # Synthetic per-engine tables only: no runoff tables stand in for the runoff's jobs.
              "runoff": {"enabled": False}}
SUMMARY_TARGET = "results/summary/claims.md"


@pytest.mark.slow  # the real snakemake CLI (about 10 s: synthetic tables, only the summary job runs)
def test_summary_job_fails_on_mixed_settings_and_runs_when_allowed(tmp_path):
    results_with(tmp_path, lambda precision, stage: BASE_CONFIG, lambda precision, stage: ITERATIONS_50)
    # Only the summary may run: the synthetic per-engine tables stand in for their jobs' outputs.
    args = ("--allowed-rules", "summarize", "--", SUMMARY_TARGET)
    failed = snakemake(tmp_path, *args, config=CLI_CONFIG, check=False)
    assert failed.returncode != 0
    log = (tmp_path / "results" / "logs" / "summarize" / "summary.log").read_text()
    assert "benchmark.iterations" in log and "summary.allow_mixed_configs" in log
    assert not list((tmp_path / "results" / "summary").glob("*.parquet"))
    assert not (tmp_path / SUMMARY_TARGET).exists()
    # The nested key from the command line, exactly as the error message spells it.
    done = snakemake(tmp_path, "--config", "summary={allow_mixed_configs: true}", *args, config=CLI_CONFIG)
    assert done.returncode == 0
    latency = pd.read_parquet(tmp_path / "results" / "summary" / "latency.parquet")
    assert {CPU["device"], JETSON["device"]} <= set(latency["device"])
    assert latency.groupby("precision")["settings_hash"].nunique().eq(2).all()
    assert "allow_mixed_configs is true" in (tmp_path / "results" / "logs" / "summarize" / "summary.log").read_text()


def _rows(config: dict, cells) -> pd.DataFrame:
    """Accuracy rows of (dataset, model) cells, each with the settings comparable_settings gives it."""
    return pd.DataFrame([
        {"device": "d", "backend": "onnxruntime", "dataset": dataset, "input_size": 32, "model": model,
         "precision": "fp32", "settings": settings_json(comparable_settings(config, "fp32", "onnxruntime",
                                                                          dataset=dataset, model=model))}
        for dataset, model in cells])


def test_per_model_weights_and_per_dataset_batch_sizes_are_one_study():
    """weights: {EfficientNetLite0: imagenet, default: none} gives two models different weights (and
    train.max_images different subsets), and train.batch_size two datasets different batches: the
    config asked for that, so no conflict. The same
    model with two weights is still one (named per model, with the current config's value for it)."""
    config = changed(changed(BASE_CONFIG, "weights", {"EfficientNetLite0": "imagenet", "default": "none"}),
                     "train.batch_size", {"digits": 32, "fashion_mnist": 16})
    config = changed(config, "train.max_images", {"EfficientNetLite0": 20000, "default": 8000})
    cells = [(d, m) for d in ("digits", "fashion_mnist") for m in ("EfficientNetLite0", "MobileNetV3Small")]
    assert settings_check.settings_conflicts({"accuracy": _rows(config, cells)}) == {}
    other = changed(config, "weights", "none")  # Lite0 measured once from scratch too
    frame = pd.concat([_rows(config, cells), _rows(other, [("digits", "EfficientNetLite0")])])
    conflicts = settings_check.settings_conflicts({"accuracy": frame})
    assert list(conflicts) == ["weights[EfficientNetLite0]"]
    message = settings_check.conflicts_message(conflicts, flatten_settings(comparable_settings(config)))
    assert '[current config: "imagenet"]' in message and '"none" on d/onnxruntime' in message
