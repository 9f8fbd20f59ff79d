"""Config vocabulary, semantic checks and the config hash recorded as provenance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import ConfigError

MODELS = (
    "MobileNetV3Small",
    "MobileNetV3Large",
    "EfficientNetB1",
    "EfficientNetB3",
    "DenseNet169",
    "DenseNet201",
)
DATASETS = ("digits", "cifar100", "oxford_flowers102")
PRECISIONS = ("fp32", "fp16", "int8")
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"

# Keys that span the matrix; everything else changes how each cell is computed.
MATRIX_KEYS = ("models", "datasets", "precisions")


def validate_config(config: dict) -> dict:
    """Fill defaults and validate against config/schema.yaml (as the Snakefile does); return config."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(SCHEMA_PATH), set_default=True)
    except WorkflowError as exc:
        raise ConfigError(f"invalid config (schema {SCHEMA_PATH.name}): {exc}") from None
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """Checks the schema cannot express; messages name the key and the fix."""
    if config["input_size"] < 32:
        raise ConfigError("config key 'input_size' must be at least 32 (the MobileNetV3 minimum)")
    for dataset in config["datasets"]:
        if dataset not in config["train"]["batch_size"]:
            raise ConfigError(
                f"config key 'train.batch_size' has no entry for dataset {dataset!r}; "
                f"add e.g. train: {{batch_size: {{{dataset}: 32}}}}"
            )


def settings_hash(config: dict) -> str:
    """A short hash of every setting except the matrix lists: equal hashes mean comparable rows."""
    settings = {k: v for k, v in config.items() if k not in MATRIX_KEYS}
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
