import copy
from pathlib import Path

import pytest
import yaml

from workflow_scripts.core.config import comparable_settings, settings_hash, validate_config
from workflow_scripts.core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_defaults_fill_every_section():
    config = validate_config({"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"]})
    assert config["calibration"]["method"] == "entropy"
    assert config["benchmark"]["warmup"] == 5 and config["benchmark"]["iterations"] == 30
    assert config["verify_checksums"] is True and config["backends"] == "auto"


def test_schema_documents_every_key():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())

    def walk(properties, prefix=""):
        for key, spec in properties.items():
            assert "description" in spec, f"{prefix}{key} lacks a description"
            if "$ref" in spec:
                continue  # an optional block of a type described under $defs: absent means none
            assert "default" in spec, f"{prefix}{key} lacks a default"
            walk(spec.get("properties", {}), f"{prefix}{key}.")

    walk(schema["properties"])


@pytest.mark.parametrize("key,value,needle", [
    ("models", ["ResNet50"], "ResNet50"),
    ("datasets", ["imagenet"], "imagenet"),
    ("precisions", ["int4"], "int4"),
    ("backends", ["cuda"], "cuda"),
    ("backend", "onnxruntime", "backends=[onnxruntime]"),
    ("input_size", 16, "16"),
])
def test_invalid_values_are_named(key, value, needle):
    config = {"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"], key: value}
    with pytest.raises(ConfigError) as info:
        validate_config(config)
    assert needle in str(info.value)


def test_missing_batch_size_for_dataset_names_the_key():
    config = {"models": ["MobileNetV3Small"], "datasets": ["cifar100"], "precisions": ["fp32"],
              "train": {"batch_size": {"digits": 32}}}
    with pytest.raises(ConfigError, match="train.batch_size"):
        validate_config(config)


def test_shipped_configs_are_valid_and_study_is_the_full_matrix():
    study = validate_config(load("config.yaml"))
    assert len(study["models"]) == 6 and set(study["datasets"]) == {"cifar100", "oxford_flowers102"}
    assert study["precisions"] == ["fp32", "fp16", "int8"] and study["input_size"] == 224
    assert study["weights"] == "imagenet"
    assert study["train"]["batch_size"] == {"cifar100": 32, "oxford_flowers102": 4}
    validate_config(load("quickstart.yaml"))


def test_quickstart_overrides_everything_the_study_sets():
    """--configfile merges onto config.yaml, so the quickstart must not inherit study settings."""
    from snakemake.utils import update_config

    merged = load("config.yaml")
    update_config(merged, load("quickstart.yaml"))
    assert validate_config(merged) == validate_config(load("quickstart.yaml"))


def test_realistic_configs_are_valid_and_layer_as_the_readme_runs_them():
    """snakemake --configfile config/realistic.yaml [config/realistic_calibration.yaml]: merged in that order
    onto config.yaml, every study setting is overridden and the calibration layer changes only the matrix
    and the study block (so it reuses the realistic run's models and engines)."""
    from snakemake.utils import update_config

    merged = load("config.yaml")
    update_config(merged, load("realistic.yaml"))
    realistic = validate_config(copy.deepcopy(merged))
    assert realistic["datasets"] == ["fashion_mnist"] and realistic["input_size"] == 64
    assert realistic["weights"] == {"EfficientNetLite0": "imagenet", "default": "none"}
    layered = copy.deepcopy(merged)
    update_config(layered, load("realistic_calibration.yaml"))
    layered = validate_config(layered)
    assert layered["models"] == ["EfficientNetLite0"] and layered["calibration_study"]["enabled"] is True
    for precision in ("fp32", "int8"):
        row = {"precision": precision, "backend": "onnxruntime", "dataset": "fashion_mnist", "model": "EfficientNetLite0"}
        assert comparable_settings(layered, **row) == comparable_settings(realistic, **row)


def test_settings_hash_ignores_the_matrix_but_not_settings():
    base = validate_config(load("quickstart.yaml"))
    narrowed = copy.deepcopy(base)
    narrowed["models"] = ["MobileNetV3Small"]
    changed = copy.deepcopy(base)
    changed["calibration"]["method"] = "minmax"
    assert settings_hash(base) == settings_hash(narrowed)
    assert settings_hash(base) != settings_hash(changed)


BASE = {"models": ["MobileNetV3Small"], "datasets": ["digits"], "precisions": ["fp32"]}


def test_command_line_strings_mean_what_a_config_file_means():
    # What snakemake's --config hands over for verify_checksums=false and nested blocks.
    config = validate_config({**BASE, "verify_checksums": "false", "summary": {"allow_mixed_configs": "True"},
                              "train": {"epochs": "3", "batch_size": {"digits": "16"}},
                              "calibration": {"percentile": "99.9", "per_channel": "false"},
                              "onnxruntime": {"reduce_range": "null"}, "benchmark": {"min_duration_s": "2"}})
    assert config["verify_checksums"] is False and config["summary"]["allow_mixed_configs"] is True
    assert config["train"]["epochs"] == 3 and config["train"]["batch_size"]["digits"] == 16
    assert config["calibration"]["percentile"] == 99.9 and config["calibration"]["per_channel"] is False
    assert config["onnxruntime"]["reduce_range"] is None and config["benchmark"]["min_duration_s"] == 2.0
    # Strings that are not what the key takes stay strings, and the schema names the key.
    with pytest.raises(ConfigError, match="verify_checksums"):
        validate_config({**BASE, "verify_checksums": "perhaps"})


@pytest.mark.parametrize("key,value", [
    ("input_size", 100000), ("benchmark", {"iterations": 10**9}), ("train", {"epochs": 100000}),
    ("monitor", {"interval_s": 0.0001}), ("calibration", {"num_images": 10**7}), ("compression", {"repeats": 1000}),
])
def test_absurd_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        validate_config({**BASE, key: value})


def test_results_dir_expands_the_home_folder_as_a_shell_does():
    config = validate_config({**BASE, "results_dir": "~/edgeptq-results", "resources_dir": "~/archives"})
    assert config["results_dir"] == str(Path.home() / "edgeptq-results")
    assert config["resources_dir"] == str(Path.home() / "archives")


def test_weights_per_model_narrow_to_the_rows_model():
    from workflow_scripts.core.config import comparable_settings, weights_for

    config = validate_config({**BASE, "models": ["EfficientNetLite0", "MobileNetV3Small"],
                              "weights": {"EfficientNetLite0": "imagenet", "default": "none"}})
    assert weights_for(config["weights"], "EfficientNetLite0") == "imagenet"
    assert weights_for(config["weights"], "MobileNetV3Small") == "none"
    lite = comparable_settings(config, stage="train_model", model="EfficientNetLite0")
    small = comparable_settings(config, stage="train_model", model="MobileNetV3Small")
    assert lite["weights"] == "imagenet" and small["weights"] == "none"
    with pytest.raises(ConfigError, match="'weights' maps \\['ResNet50'\\]"):
        validate_config({**BASE, "weights": {"ResNet50": "imagenet"}})


def test_training_subset_per_model_narrows_to_the_rows_model_and_reads_from_the_command_line():
    from workflow_scripts.core.config import coerce_cli_values, comparable_settings

    raw = {**BASE, "models": ["EfficientNetLite0", "MobileNetV3Small", "MobileNetV3Large"],
           "train": {"max_images": {"EfficientNetLite0": "20000", "MobileNetV3Large": "0", "default": "8000"}}}
    coerce_cli_values(raw)  # what --config 'train={max_images: {...}}' hands over
    config = validate_config(raw)
    found = {m: comparable_settings(config, stage="train_model", model=m)["train"]["max_images"]
             for m in config["models"]}
    assert found == {"EfficientNetLite0": 20000, "MobileNetV3Small": 8000, "MobileNetV3Large": 0}
    scalar = {**BASE, "train": {"max_images": "5000"}}
    coerce_cli_values(scalar)
    assert comparable_settings(validate_config(scalar), stage="train_model", model="MobileNetV3Small")[
        "train"]["max_images"] == 5000
    no_default = validate_config({**BASE, "train": {"max_images": {"EfficientNetLite0": 100}}})
    assert comparable_settings(no_default, stage="train_model", model="MobileNetV3Small")["train"]["max_images"] == 0
    with pytest.raises(ConfigError, match="'train.max_images' maps \\['Lite0'\\]"):
        validate_config({**BASE, "train": {"max_images": {"Lite0": 100}}})


def test_epochs_per_model_narrow_to_the_rows_model():
    """train.epochs may be a per-model mapping (config/quickstart.yaml trains DenseNet169 5 epochs, the
    rest 8): each model's training job and rows see only its own count; no entry and no default is 10."""
    from workflow_scripts.core.config import coerce_cli_values, comparable_settings

    raw = {**BASE, "models": ["MobileNetV3Small", "DenseNet169"],
           "train": {"epochs": {"DenseNet169": "5", "default": "8"}}}
    coerce_cli_values(raw)  # what --config 'train={epochs: {...}}' hands over
    config = validate_config(raw)
    found = {m: comparable_settings(config, stage="train_model", model=m)["train"]["epochs"] for m in config["models"]}
    assert found == {"MobileNetV3Small": 8, "DenseNet169": 5}
    no_default = validate_config({**BASE, "train": {"epochs": {"DenseNet169": 5}}})
    assert comparable_settings(no_default, stage="train_model", model="MobileNetV3Small")["train"]["epochs"] == 10
    with pytest.raises(ConfigError, match="'train.epochs' maps \\['DenseNet121'\\]"):
        validate_config({**BASE, "train": {"epochs": {"DenseNet121": 5}}})
    with pytest.raises(ConfigError, match="epochs"):
        validate_config({**BASE, "train": {"epochs": {"DenseNet169": 0}}})


def test_a_training_subset_is_stratified_and_seeded():
    import numpy as np

    from workflow_scripts.stages.train import training_subset

    labels = np.repeat(np.arange(10), 100)
    chosen = training_subset(labels, 200, seed=0)
    assert len(chosen) == 200 and (np.bincount(labels[chosen]) == 20).all()
    assert (training_subset(labels, 200, seed=0) == chosen).all()
    assert training_subset(labels, 0, 0) is None and training_subset(labels, 5000, 0) is None
