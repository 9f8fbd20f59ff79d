"""The registry is the one list of models, datasets, backends and precisions: everything else agrees with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from workflow_scripts.core import paths, registry
from workflow_scripts.core.errors import BackendUnavailable, ConfigError

REPO = Path(__file__).resolve().parent.parent
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]


def test_schema_enums_are_the_registry():
    assert SCHEMA["models"]["items"]["anyOf"][0]["enum"] == list(registry.MODELS)
    assert SCHEMA["datasets"]["items"]["anyOf"][0]["enum"] == list(registry.DATASETS)
    assert SCHEMA["precisions"]["items"]["enum"] == list(registry.PRECISIONS)
    listed = [option for option in SCHEMA["backends"]["oneOf"] if option.get("type") == "array"][0]
    assert listed["items"]["enum"] == list(registry.BACKENDS)


def test_every_backend_has_its_environment_schema_block_and_module():
    for name, entry in registry.BACKENDS.items():
        assert (REPO / entry.env).is_file(), (name, entry.env)
        assert (REPO / "workflow_scripts" / "backends" / f"{entry.module}.py").is_file() or \
            (REPO / "workflow_scripts" / "backends" / entry.module / "__init__.py").is_file(), name
        assert entry.options_key is None or entry.options_key in SCHEMA, (name, entry.options_key)
        assert entry.source in ("onnx", "keras") and set(entry.precisions) <= set(registry.PRECISIONS)
    suffixes = [entry.suffix for entry in registry.BACKENDS.values()]
    assert len(set(suffixes)) == len(suffixes), "engine suffixes tell backends apart"


def test_every_dataset_has_a_loader_and_a_default_batch_size():
    for name, entry in registry.DATASETS.items():
        assert callable(registry.dataset_loader(name)), name
        assert name in SCHEMA["train"]["properties"]["batch_size"]["default"], name


def test_auto_is_every_available_backend_and_a_named_missing_one_names_its_extra():
    available = [name for name, entry in registry.BACKENDS.items() if entry.available()[0]]
    assert registry.resolve_backends("auto") == available and "onnxruntime" in available
    assert "tensorrt" not in available  # no NVIDIA GPU here
    with pytest.raises(BackendUnavailable, match=r"names tensorrt.*\.\[tensorrt\]"):
        registry.resolve_backends(["onnxruntime", "tensorrt"])
    with pytest.raises(ConfigError, match="unknown backend 'cuda'"):
        registry.resolve_backends(["cuda"])


def test_a_calibration_method_the_backend_cannot_do_is_refused_with_the_alternative():
    config = {"precisions": ["int8"], "calibration": {"method": "percentile"}, "tensorrt": {"int8_mode": "calibration"}}
    with pytest.raises(ConfigError, match=r"'calibration.method' is 'percentile'.*'tensorrt'.*'onnxruntime'"):
        registry.check_backend_config("tensorrt", config)
    registry.check_backend_config("onnxruntime", config)


@pytest.mark.parametrize("path,expected", [
    ("r/dev-a/onnxruntime/oxford_flowers102_224px/DenseNet169/int8_latency.parquet",
     {"where": "engine_table", "device": "dev-a", "backend": "onnxruntime", "dataset": "oxford_flowers102",
      "input_size": 224, "model": "DenseNet169", "precision": "int8", "kind": "latency"}),
    ("r/dev-a/onnx/digits_32px/MobileNetV3Small/export_resources.parquet",
     {"where": "onnx_table", "device": "dev-a", "dataset": "digits", "input_size": 32, "model": "MobileNetV3Small",
      "kind": "export_resources"}),
    ("r/models/cifar100_64px/EfficientNetB1/history.parquet",
     {"where": "model_table", "dataset": "cifar100", "input_size": 64, "model": "EfficientNetB1", "kind": "history"}),
    ("r/summary/x/digits_32px/m/fp32_latency.parquet", None),  # the workflow's own folder, not a device
    ("r/dev-a/onnx/digits_32px/m/fp32_latency.parquet", None),  # the export folder is not a backend
    ("r/dev-a/onnxruntime/digits_32px/m/fp32.onnx", None),
])
def test_parse_reads_back_what_the_patterns_write(path, expected):
    assert paths.parse(path, "r") == expected


def test_parse_round_trips_every_engine_table():
    fields = {"results": "res", "device": "box", "backend": "litert", "dataset": "cifar100", "size": 96,
              "model": "MobileNetV3Large"}
    for kind in paths.ENGINE_TABLES:
        for precision in registry.PRECISIONS:
            parsed = paths.parse(paths.engine_table(kind).format(precision=precision, **fields), "res")
            assert parsed["kind"] == kind and parsed["precision"] == precision and parsed["input_size"] == 96


def test_each_datasets_batch_size_is_the_schemas_default():
    assert SCHEMA["train"]["properties"]["batch_size"]["default"] == {
        name: entry.batch_size for name, entry in registry.DATASETS.items()}


def test_a_missing_training_batch_size_suggests_the_datasets_own_default():
    from workflow_scripts.core.config import validate_config

    with pytest.raises(ConfigError, match=r"no entry for dataset 'oxford_flowers102'.*oxford_flowers102: 4\}"):
        validate_config({"models": ["MobileNetV3Small"], "datasets": ["oxford_flowers102"],
                         "train": {"batch_size": {"digits": 8}}})
