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
    """Checks the schema cannot express; messages name the key and the fix.

    Also turns the strings 'true'/'false' of ``summary.allow_mixed_configs`` into booleans: that
    is what ``--config summary='{allow_mixed_configs: true}'`` yields (Snakemake parses nested
    --config values as YAML without types).
    """
    summary = config.get("summary")
    if isinstance(summary, dict) and "allow_mixed_configs" in summary:
        summary["allow_mixed_configs"] = config_flag(summary["allow_mixed_configs"], "summary.allow_mixed_configs")
    if config["input_size"] < 32:
        raise ConfigError("config key 'input_size' must be at least 32 (the MobileNetV3 minimum)")
    for dataset in config["datasets"]:
        if dataset not in config["train"]["batch_size"]:
            raise ConfigError(
                f"config key 'train.batch_size' has no entry for dataset {dataset!r}; "
                f"add e.g. train: {{batch_size: {{{dataset}: 32}}}}"
            )


def config_flag(value, key: str) -> bool:
    """A boolean config value, accepting the strings 'true' and 'false' (any case) too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"config key '{key}' is {value!r}; use true or false")


def settings_hash(config: dict) -> str:
    """A short hash of every setting except the matrix lists: equal hashes mean comparable rows."""
    settings = {k: v for k, v in config.items() if k not in MATRIX_KEYS}
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# --- comparable settings -----------------------------------------------------------------------
#
# What one result row measures depends on a subset of the config. The summary compares these
# subsets across rows (summarize.check_settings) and refuses to mix rows whose subsets disagree.
# A key belongs to a row's subset exactly when (1) it can change what the row measures and (2) it
# reaches the row's job or a job upstream of it as a Snakemake param, so changing it reruns the
# row. (2) matters as much as (1): a key that reaches only some jobs (calibration: the INT8 chain;
# benchmark: the latency jobs) must appear only in those jobs' rows, or a legitimate partial rerun
# (e.g. FP32/FP16 rows under the old calibration.method, INT8 rows under the new one) would read
# as a conflict.

# Top-level keys never compared, and why.
NOT_COMPARED = {
    "models": "matrix list: which cells exist, not how one is measured",
    "datasets": "matrix list",
    "precisions": "matrix list",
    "device": "selector; the row's device is its own column (and folder)",
    "backend": "selector; the row's backend is its own column (and folder)",
    "results_dir": "a path: where outputs go",
    "resources_dir": "a path: where the dataset archives are read from (their md5 is checked)",
    "verify_checksums": "whether the archives' md5 is checked; the data are the same or the job fails",
    "calibration_study": "configures the calibration study, which has its own tables and summary",
    "summary": "how the summary treats rows, not how a row is measured",
}

# Keys inside compared blocks that do not change a measurement (dotted).
NOT_MEASURED = {
    "export.parity_tolerance": "an acceptance gate after the timed runs; the kept ONNX model is the same",
    "export.parity_images": "images of that gate (outside the timed runs)",
}

# The stages of the pipeline: (upstream stage, top-level keys the stage's own job reads as params).
# A row's comparable settings are the keys of its stage and of every stage upstream of it.
STAGES: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "data": (None, ("input_size", "seed", "split")),  # prepare_dataset (size from the path)
    "train": ("data", ("weights", "train")),  # train_model: history rows
    "evaluate_keras": ("train", ("evaluate",)),  # evaluate_keras: Keras accuracy rows
    "export": ("train", ("export", "compression", "monitor")),  # export_onnx: export rows and traces
    "build": ("export", ()),  # build_engine/build_int8_engine: + calibration (int8), tensorrt (tensorrt)
    "latency": ("build", ("benchmark", "monitor")),  # benchmark_latency
    "evaluate": ("build", ("evaluate",)),  # evaluate_engine
}


def stage_keys(stage: str | None) -> list[str]:
    """Top-level config keys read by ``stage`` and every stage upstream of it (None: every stage)."""
    if stage is None:
        return sorted({key for _, keys in STAGES.values() for key in keys})
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
    keys: list[str] = []
    while stage is not None:
        stage, own = STAGES[stage]
        keys += [k for k in own if k not in keys]
    return keys


def _plain(value):
    """JSON-stable value: integral floats as ints (1.0 in one config equals 1 in another), containers recursed."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def comparable_settings(config: dict, precision: str | None = None, backend: str | None = None,
                        stage: str | None = None, dataset: str | None = None) -> dict:
    """The settings that determine what one result row measures (a nested dict; pure).

    Arguments describe the row: ``precision`` (fp32/fp16/int8; None for rows without one: training
    history, Keras accuracy, ONNX export), ``backend`` (the engine backend), ``stage`` (the job that
    wrote it, a key of :data:`STAGES`; None means a complete engine row: every stage) and
    ``dataset`` (narrows ``train.batch_size`` to that dataset's entry).

    Decisions, key by key (config/schema.yaml):

    - never compared (:data:`NOT_COMPARED`): the matrix lists ``models``, ``datasets``,
      ``precisions``; the selectors ``device`` and ``backend`` (each row records them as columns);
      the paths ``results_dir`` and ``resources_dir``; ``verify_checksums``; ``calibration_study``
      (its own study, tables and summary); ``summary``.
    - compared, by stage (:data:`STAGES`), because each changes the data, the model, the engine or
      the measurement protocol: ``input_size``, ``seed`` (splits, initialization, calibration
      sample) and ``split`` for every row; ``weights`` and ``train`` (``train.batch_size`` only for
      the row's dataset when given; ``train.threads`` is kept: the bit-identical weights rely on
      fixed threads) from training on; ``export.opset``, ``compression`` (warm-ups and repeats of
      the timed export/build runs) and ``monitor`` (sampling interval of the resource columns) from
      the export on; ``benchmark`` and ``monitor`` for latency rows; ``evaluate`` for accuracy rows
      (engine and Keras).
    - ``calibration`` only for int8 rows from the build on (only the INT8 build reads it);
      ``calibration.percentile`` only when ``calibration.method`` is percentile.
    - ``tensorrt`` only for backend tensorrt rows with a precision from the build on (only TensorRT
      builds read it),
      plus ``benchmark.batch_size``, the batch the TensorRT profile is optimized for;
      ``tensorrt.int8_mode`` only for int8 rows, ``tensorrt.gpu_fallback`` only when ``dla_core``
      is set (TensorRT ignores them otherwise).
    - not measured (:data:`NOT_MEASURED`): ``export.parity_tolerance`` and ``export.parity_images``,
      an acceptance check after the timed runs.

    Every compared key reaches the row's job or one upstream of it as a Snakemake param, so
    changing it reruns the row: rows left over from a partial rerun never disagree on a key they
    do not depend on. Integral floats are written as ints, so ``1`` and ``1.0`` compare equal.
    """
    keys = stage_keys(stage)
    out: dict = {}
    for key in keys:
        if key in config:
            value = config[key]
            out[key] = dict(value) if isinstance(value, dict) else value
    for dotted in NOT_MEASURED:
        block, _, leaf = dotted.partition(".")
        if isinstance(out.get(block), dict):
            out[block].pop(leaf, None)
    train = out.get("train")
    if dataset is not None and isinstance(train, dict) and isinstance(train.get("batch_size"), dict):
        sizes = train["batch_size"]
        train["batch_size"] = {dataset: sizes[dataset]} if dataset in sizes else {}
    engine_stage = stage is None or "build" in _upstream(stage)
    if engine_stage and precision == "int8" and "calibration" in config:
        calibration = dict(config["calibration"])
        if calibration.get("method") != "percentile":
            calibration.pop("percentile", None)
        out["calibration"] = calibration
    if engine_stage and precision is not None and backend == "tensorrt" and "tensorrt" in config:
        trt = dict(config["tensorrt"])
        if precision != "int8":
            trt.pop("int8_mode", None)
        if trt.get("dla_core") is None:
            trt.pop("gpu_fallback", None)
        out["tensorrt"] = trt
        batch = config.get("benchmark", {}).get("batch_size")
        if batch is not None:
            out.setdefault("benchmark", {})
            out["benchmark"] = {**out["benchmark"], "batch_size": batch}
    return _plain(out)


def _upstream(stage: str) -> set[str]:
    """``stage`` and every stage upstream of it."""
    seen = set()
    current: str | None = stage
    while current is not None:
        seen.add(current)
        current = STAGES[current][0]
    return seen


def settings_json(settings: dict) -> str:
    """Compact, key-sorted JSON of comparable settings (the ``settings`` provenance column)."""
    return json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)


def short_hash(text: str) -> str:
    """12 hex digits of the SHA-256 of ``text`` (the ``settings_hash`` provenance column)."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def flatten_settings(settings: dict, prefix: str = "") -> dict[str, object]:
    """Nested settings as ``{dotted key: leaf value}``; an empty dict is a leaf ``{}``."""
    flat: dict[str, object] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_settings(value, f"{name}."))
        else:
            flat[name] = value
    return flat
