"""Config vocabulary, semantic checks and the config hash recorded as provenance."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from workflow_scripts.core import registry
from workflow_scripts.core.paths import RESERVED
from workflow_scripts.core.errors import ConfigError

MODELS = tuple(registry.MODELS)
DATASETS = tuple(registry.DATASETS)
PRECISIONS = registry.PRECISIONS
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

# Keys that span the matrix; everything else changes how each cell is computed.
MATRIX_KEYS = ("models", "datasets", "precisions")


def check_renamed_keys(config: dict) -> None:
    """Keys of earlier versions get a message naming their new spelling (before schema validation)."""
    if "backend" in config:
        old = config["backend"]
        raise ConfigError(
            f"config key 'backend' ({old!r}) is now 'backends': auto (every backend available here) or a list, "
            f"e.g. backends: [{old}] in the config file or --config 'backends=[{old}]'")


def validate_config(config: dict) -> dict:
    """Fill defaults and validate against config/schema.yaml (as the Snakefile does); return config."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    check_renamed_keys(config)
    coerce_cli_values(config)
    try:
        validate(config, str(SCHEMA_PATH), set_default=True)
    except WorkflowError as exc:
        raise ConfigError(f"invalid config (schema {SCHEMA_PATH.name}): {exc}") from None
    check_config(config)
    return config


def check_config(config: dict) -> None:
    """Checks the schema cannot express; messages name the key and the fix."""
    for key in ("results_dir", "resources_dir"):
        # As in a shell: '~/x' is the home folder's x, never a folder literally named '~'.
        if isinstance(config.get(key), str):
            config[key] = os.path.expanduser(config[key])
    backends = config.get("backends", "auto")
    for name in [backends] if isinstance(backends, str) else list(backends):
        # Before any backend is probed: a workstation planning a board's run is told too.
        check = registry.BACKENDS[name].hook("check_config") if name in registry.BACKENDS else None
        if check is not None:
            check(config)
    if config["input_size"] < 32:
        raise ConfigError("config key 'input_size' must be at least 32 (the MobileNetV3 minimum)")
    from workflow_scripts.core.config_checks import check_weights_and_subsets
    from workflow_scripts.core.user_inputs import check_user_matrix, dataset_classes

    check_user_matrix(config)  # names, and whether each model fits each dataset
    trained = [m for m in config["models"] if m not in (config.get("user_models") or {})]
    for dataset in config["datasets"] if trained else []:
        if dataset not in config["train"]["batch_size"]:
            # A registered dataset's own default (registry Dataset.batch_size; the schema's default lists them).
            size = registry.DATASETS[dataset].batch_size if dataset in registry.DATASETS else 32
            raise ConfigError(
                f"config key 'train.batch_size' has no entry for dataset {dataset!r}; "
                f"add e.g. train: {{batch_size: {{{dataset}: {size}}}}}"
            )
    check_weights_and_subsets(config, lambda dataset: dataset_classes(config, dataset))
    device = config.get("device", "auto")
    if device in RESERVED:
        raise ConfigError(
            f"config key 'device' is {device!r}, the name of one of the workflow's own folders under results_dir "
            f"({', '.join(RESERVED)}); choose another name, e.g. --config device={device}-board")


def load_schema() -> dict:
    """config/schema.yaml as a dict (yaml only: light enough for planning)."""
    import yaml

    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _types(spec: dict) -> list[str]:
    """The JSON types ``spec`` allows, its ``oneOf`` alternatives' included."""
    kinds = spec.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    for option in spec.get("oneOf", []):
        kinds += _types(option)
    return kinds


def _coerce(value, spec: dict):
    """``value`` converted to what ``spec`` asks where it is a string standing for it."""
    kinds = _types(spec)
    if isinstance(value, str):
        text = value.strip()
        if "null" in kinds and text.lower() in ("null", "none", "~"):
            return None
        if "boolean" in kinds and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if "integer" in kinds:
            try:
                return int(text)
            except ValueError:
                pass
        if "number" in kinds:
            try:
                return float(text)
            except ValueError:
                pass
        return value
    if isinstance(value, dict):
        if "oneOf" in spec and "properties" not in spec and "additionalProperties" not in spec:
            spec = next((o for o in spec["oneOf"] if "object" in _types(o)), spec)
        props = spec.get("properties", {})
        extra = spec.get("additionalProperties")
        return {k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list):
        items = spec.get("items", {})
        if not items and "oneOf" in spec:
            items = next((o.get("items", {}) for o in spec["oneOf"] if "array" in _types(o)), {})
        return [_coerce(v, items) for v in value]
    return value


def coerce_cli_values(config: dict, schema: dict | None = None) -> None:
    """Give values the types the schema names, in place. ``--config`` passes nested values (and a bare
    ``false``) as strings, so ``--config verify_checksums=false`` or ``summary='{allow_mixed_configs:
    true}'`` then mean exactly what the same value means in a config file."""
    schema = schema or load_schema()
    props = schema.get("properties", {})
    for key in list(config):
        if key in props:
            config[key] = _coerce(config[key], props[key])


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
    "backends": "selector; the row's backend is its own column (and folder)",
    "resources": "what a scheduler is asked for (memory, wall time), not how a row is measured",
    "placement": "where a scheduler runs each stage; the device check keeps measurements on the declared device",
    "results_dir": "a path: where outputs go",
    "resources_dir": "a path: where the dataset archives are read from (their md5 is checked)",
    "verify_checksums": "whether the archives' md5 is checked; the data are the same or the job fails",
    "calibration_study": "configures the calibration study, which has its own tables and summary",
    "summary": "how the summary treats rows, not how a row is measured",
    "decision": "budgets of the deployment decision, read from the summary tables",
    "user_models": "what a model name stands for: its file's fingerprint and preprocessing are params of its import "
                   "job, so a change reruns it and everything downstream (source.json records the SHA-256)",
    "user_datasets": "what a dataset name stands for: its files' fingerprint is a param of prepare_dataset, so a change "
                     "reruns it and everything downstream (meta.json records the SHA-256)",
    "runoff": "the latency runoff's rounds, its own table (latency_runoff.parquet, rule params), not a per-engine row",
}

# Keys inside compared blocks that do not change a measurement (dotted).
NOT_MEASURED = {
    "export.parity_tolerance": "an acceptance gate after the timed runs; the kept ONNX model is the same",
    "export.parity_images": "images of that gate (outside the timed runs)",
}

# What each rule reads: (the rule upstream of it, top-level keys its own job reads as settings).
# The one map of it: rules/common.smk builds every rule's ``settings`` param from it
# (``settings_param``), the job reads its config values from that param only, and the row records
# it. A row's comparable settings are the keys of its rule and of every rule upstream of it.
RULE_SETTINGS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "prepare_dataset": (None, ("input_size", "seed", "split")),
    "train_model": ("prepare_dataset", ("weights", "train")),
    "evaluate_keras": ("train_model", ("evaluate",)),
    "export_onnx": ("train_model", ("export", "compression", "monitor")),
    # + calibration (int8), the backend's options block and the job's threads
    "build_engine": ("export_onnx", ()),
    "build_int8_engine": ("export_onnx", ()),
    "benchmark_latency": ("build_engine", ("benchmark", "monitor")),
    "evaluate_engine": ("build_engine", ("evaluate",)),
}
ENGINE_RULES = ("build_engine", "build_int8_engine")
# Rules whose measurement depends on the CPU threads they get (recorded as runtime.threads).
TIMED_RULES = ("export_onnx", "build_engine", "build_int8_engine", "benchmark_latency")


def stage_keys(stage: str | None) -> list[str]:
    """Top-level config keys read by rule ``stage`` and every rule upstream of it (None: every rule)."""
    if stage is None:
        return sorted({key for _, keys in RULE_SETTINGS.values() for key in keys})
    if stage not in RULE_SETTINGS:
        raise ValueError(f"unknown rule {stage!r}; one of {sorted(RULE_SETTINGS)}")
    keys: list[str] = []
    while stage is not None:
        stage, own = RULE_SETTINGS[stage]
        keys += [k for k in own if k not in keys]
    return keys


def rules_reading(key: str) -> list[str]:
    """The rules whose own job reads top-level key ``key`` (for the rerun hint of a conflict)."""
    rules = [rule for rule, (_, own) in RULE_SETTINGS.items() if key in own]
    if key == "calibration":
        rules.append("build_int8_engine")
    if key in registry.BACKENDS or any(b.options_key == key for b in registry.BACKENDS.values()):
        rules += list(ENGINE_RULES)
    if key == "runtime":
        rules += list(TIMED_RULES)
    # The engine rules exist once per backend (rules/engine.smk): build_engine_<backend>.
    rules = [name for rule in rules
             for name in ([f"{rule}_{b}" for b in registry.BACKENDS] if rule in ENGINE_RULES else [rule])]
    return sorted(set(rules))


def _plain(value):
    """JSON-stable value: integral floats as ints (1.0 in one config equals 1 in another), containers recursed."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Dotted config keys a mapping may give per model ({<model>: value, default: value}), with the value a
# model without an entry and no default gets. Each job and each row sees only its model's entry
# (comparable_settings), and the summary compares them within a model (settings_check).
PER_MODEL = {"weights": "none", "train.max_images": 0, "train.epochs": 10}


def _dotted(config: dict, key: str):
    """The value of a dotted key ('train.max_images'), None where a block or the key is missing."""
    value = config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def per_model(value, model: str, fallback):
    """A config value that may be given per model: the value itself, or from a mapping its entry for
    ``model`` (else its ``default``, else ``fallback``)."""
    if isinstance(value, dict):
        return value.get(model, value.get("default", fallback))
    return value


def weights_for(weights, model: str) -> str:
    """Config key ``weights`` for one model."""
    return per_model(weights, model, PER_MODEL["weights"])


def comparable_settings(config: dict, precision: str | None = None, backend: str | None = None,
                        stage: str | None = None, dataset: str | None = None, model: str | None = None) -> dict:
    """The settings that determine what one result row measures (a nested dict; pure).

    Arguments describe the row: ``precision`` (fp32/fp16/int8; None for rows without one: training
    history, Keras accuracy, ONNX export), ``backend`` (the engine backend), ``stage`` (the job that
    wrote it, a key of :data:`RULE_SETTINGS`; None means a complete engine row: every stage) and
    ``dataset`` (narrows ``train.batch_size`` to that dataset's entry).

    Decisions, key by key (config/schema.yaml):

    - never compared (:data:`NOT_COMPARED`): the matrix lists ``models``, ``datasets``,
      ``precisions``; the selectors ``device`` and ``backend`` (each row records them as columns);
      the paths ``results_dir`` and ``resources_dir``; ``verify_checksums``; ``calibration_study``
      (its own study, tables and summary); ``summary``.
    - compared, by stage (:data:`RULE_SETTINGS`), because each changes the data, the model, the engine or
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
    if model is not None:  # a per-model mapping narrows to the row's model
        for key, fallback in PER_MODEL.items():
            *blocks, leaf = key.split(".")
            parent = _dotted(out, ".".join(blocks)) if blocks else out
            if isinstance(parent, dict) and leaf in parent:
                parent[leaf] = per_model(parent[leaf], model, fallback)
    train = out.get("train")
    if dataset is not None and isinstance(train, dict) and isinstance(train.get("batch_size"), dict):
        sizes = train["batch_size"]
        train["batch_size"] = {dataset: sizes[dataset]} if dataset in sizes else {}
    engine_stage = stage is None or bool(set(ENGINE_RULES) & _upstream(stage))
    if engine_stage and precision == "int8" and "calibration" in config:
        calibration = dict(config["calibration"])
        if calibration.get("method") != "percentile":
            calibration.pop("percentile", None)
        if backend in registry.BACKENDS and backend not in registry.METHOD_BACKENDS:
            # LiteRT and NNCF calibrate with their own (min/max) method: the images are shared.
            calibration = {k: v for k, v in calibration.items() if k in ("num_images", "batch_size", "per_channel")}
        out["calibration"] = calibration
    entry = registry.BACKENDS.get(backend) if backend else None
    key = entry.options_key if entry else None
    if engine_stage and precision is not None and key and isinstance(config.get(key), dict):
        options = backend_settings(backend, dict(config[key]), precision)
        if options:
            out[key] = options
        for dotted in entry.shared_settings:  # other blocks' keys its builds read (registry)
            block, _, leaf = dotted.partition(".")
            value = config.get(block, {}).get(leaf)
            if value is not None:
                out[block] = {**out.get(block, {}), leaf: value}
    return _plain(out)


def backend_settings(backend: str, options: dict, precision: str) -> dict:
    """The part of a backend's options block that can change a ``precision`` row of it."""
    settings_filter = registry.BACKENDS[backend].hook("settings_filter")
    if settings_filter is not None:
        options = settings_filter(options, precision)
    if precision != "int8":
        int8_only = registry.BACKENDS[backend].int8_options
        options = {k: v for k, v in options.items() if k not in int8_only}
    return options


def _upstream(stage: str) -> set[str]:
    """``stage`` and every stage upstream of it."""
    seen = set()
    current: str | None = stage
    while current is not None:
        seen.add(current)
        current = RULE_SETTINGS[current][0]
    return seen


def rule_settings(config: dict, rule: str, precision: str | None = None, backend: str | None = None,
                  dataset: str | None = None, model: str | None = None) -> dict:
    """The ``settings`` param of one job of ``rule`` (rules/common.smk): what its rows compare.

    :func:`comparable_settings` of the job's rule, precision, backend and dataset. Snakemake hashes
    it, so a change reruns the job; the job reads its config values from it and records it. What
    is only known when the job runs (``runtime``: the threads it got) is added by the job itself
    (``shims.row_settings``).
    """
    if rule == "build_int8_engine":
        precision = "int8"
    return comparable_settings(config, precision=precision, backend=backend, stage=rule, dataset=dataset,
                               model=model)


def settings_param(config: dict, rule: str, precision: str | None = None, backend: str | None = None,
                   dataset: str | None = None, model: str | None = None) -> dict:
    """The ``settings`` param of one job of logical rule ``rule`` (build_engine_<backend> is build_engine):
    :func:`rule_settings` with the rule's name (``rule``) for the job. rules/common.smk's ``settings_param``
    and the on-device runner both give their jobs this."""
    return {"rule": rule, **rule_settings(config, rule, precision=precision, backend=backend, dataset=dataset,
                                          model=model)}


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
