"""TensorRT build options: defaults and bounds from config/schema.yaml, and the version policy.

The config keys a user sets (``tensorrt:`` in the config) take their defaults *and* their bounds
from the ``tensorrt`` block of ``config/schema.yaml``, read here at import time, so the backend
and the schema cannot disagree. A few keys are not user settings but are filled in by the rules
(``batch_size``, ``input_shape``, ``device``, ``timing_cache``, ``calibration_cache``); their
defaults live in :data:`BACKEND_DEFAULTS`, and for any key the schema also names, the schema wins.

Version policy (see docs/tensorrt.md):

- TensorRT < 8.5 is refused (``execute_async_v3`` and the tensor-address API appeared in 8.5).
- 8.5 (JetPack 5.1), 8.6 and 10.x build *weakly typed* networks: precision flags (FP16/INT8),
  INT8 by entropy calibration or from a Q/DQ model.
- 10.x also offers *strongly typed* networks (``network_typing: strong``): the precision comes
  from the ONNX itself (an FP16 copy of the export, or the Q/DQ model), no precision flags.
- 11 and later removed the precision flags and implicit calibration: only strongly typed
  builds run; a weakly typed request or ``int8_mode: calibration`` is refused with the reason.
- BF16 (``BuilderFlag.BF16``, a weakly typed build with FP32 fallback) needs TensorRT 10 and a GPU of
  compute capability 8.0 or newer (Ampere, Ada, Hopper; Jetson Orin is 8.7, Xavier 7.2 has none).
  It is refused on older TensorRT or GPUs, under strong typing (the workflow makes no BF16 ONNX, so
  TensorRT 11 cannot build it) and on DLA (which runs FP16/INT8 only: a bf16 engine stays on the GPU).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from workflow_scripts.core.errors import ConfigError

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
SCHEMA_PATH = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"

MIN_VERSION = (8, 5)  # execute_async_v3 / set_tensor_address
STRONG_TYPING_MIN = (10, 0)  # NetworkDefinitionCreationFlag.STRONGLY_TYPED
WEAK_TYPING_END = (11, 0)  # BuilderFlag.FP16/INT8, int8_calibrator removed
OPTIMIZATION_LEVEL_MIN = (8, 6)  # IBuilderConfig.builder_optimization_level
BF16_MIN_VERSION = (10, 0)  # BuilderFlag.BF16 (weak typing; gone with the flags in 11)
BF16_MIN_COMPUTE = (8, 0)  # BF16 tensor cores: Ampere and newer (Orin 8.7; Xavier 7.2 and Turing 7.5 lack them)

# Keys the rules fill in (not user settings), and keys the schema does not carry yet. For a key the
# schema's tensorrt block also defines, the schema's default is used (see DEFAULTS below).
BACKEND_DEFAULTS: Dict[str, Any] = {
    "batch_size": 1,  # the profile's optimum batch (the rules pass benchmark.batch_size)
    "input_shape": None,  # [H, W, 3]; needed only when the ONNX leaves spatial dims dynamic
    "device": "unknown",  # device tag, recorded with caches
    "timing_cache": None,  # tactic timing cache path; used only with reuse_timing_cache
    "reuse_timing_cache": False,  # False: every build measures its tactics afresh
    "network_typing": "auto",  # auto (weak before TensorRT 11, strong from 11), weak, strong
    "calibration_cache": None,  # None: <calibration_dir>/<onnx stem>.int8.cache
}
# Bounds of the backend-filled keys (the schema's keys are checked against the schema).
_BACKEND_RULES: Dict[str, Dict[str, Any]] = {
    "batch_size": {"type": "integer", "minimum": 1},
    "reuse_timing_cache": {"type": "boolean"},
    "network_typing": {"type": "string", "enum": ["auto", "weak", "strong"]},
}


def load_schema_block(path: Path = SCHEMA_PATH) -> Dict[str, Dict[str, Any]]:
    """The ``properties`` of the schema's ``tensorrt`` block (key -> JSON-schema rules)."""
    import yaml

    try:
        schema = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(
            f"the TensorRT backend reads its option defaults from {path}, which cannot be read "
            f"({exc}); run from a checkout of the repository (pip install -e .)"
        ) from exc
    try:
        return dict(schema["properties"]["tensorrt"]["properties"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path} has no properties.tensorrt.properties block") from exc


SCHEMA_RULES: Dict[str, Dict[str, Any]] = load_schema_block()
SCHEMA_DEFAULTS: Dict[str, Any] = {k: v.get("default") for k, v in SCHEMA_RULES.items()}
DEFAULTS: Dict[str, Any] = {**BACKEND_DEFAULTS, **SCHEMA_DEFAULTS}


def _check(key: str, value: Any, rules: Dict[str, Any]) -> None:
    """Raise ConfigError naming ``key`` when ``value`` breaks the schema ``rules`` (the subset used)."""
    types = rules.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    checks = {
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, (list, tuple)),
        "object": lambda v: isinstance(v, dict),
    }
    bounds = []
    if "minimum" in rules:
        bounds.append(f">= {rules['minimum']}")
    if "maximum" in rules:
        bounds.append(f"<= {rules['maximum']}")
    want = " or ".join(types) + (f" {' and '.join(bounds)}" if bounds else "")
    if types and not any(checks.get(t, lambda v: True)(value) for t in types):
        raise ConfigError(f"config key 'tensorrt.{key}' is {value!r}; use {want}")
    if value is None:
        return
    if "enum" in rules and value not in rules["enum"]:
        raise ConfigError(f"config key 'tensorrt.{key}' is {value!r}; use one of {rules['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if ("minimum" in rules and value < rules["minimum"]) or (
            "maximum" in rules and value > rules["maximum"]
        ):
            raise ConfigError(f"config key 'tensorrt.{key}' is {value!r}; use {want}")


def normalize_options(options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Defaults merged with ``options``, each value checked; raises ConfigError naming the key.

    A null value means "use the default". Keys the backend does not know are kept (the engine
    stage passes the calibration settings along in the same dict).
    """
    opts = dict(DEFAULTS)
    opts.update({k: v for k, v in (options or {}).items() if v is not None})
    for key, rules in {**_BACKEND_RULES, **SCHEMA_RULES}.items():
        _check(key, opts.get(key), rules)
    if opts.get("max_batch_size") is None:
        opts["max_batch_size"] = opts["batch_size"]
    if opts["max_batch_size"] < opts["batch_size"]:
        raise ConfigError(
            f"config key 'tensorrt.max_batch_size' is {opts['max_batch_size']}, smaller than the "
            f"profile's optimum batch {opts['batch_size']} (benchmark.batch_size); raise it"
        )
    shape = opts["input_shape"]
    if shape is not None:
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 3
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
        ):
            raise ConfigError(f"config key 'input_shape' is {shape!r}; use [height, width, channels]")
        opts["input_shape"] = [int(d) for d in shape]
    return opts


# --- versions ----------------------------------------------------------------------------------


def parse_version(version: Any) -> Tuple[int, ...]:
    """(major, minor, ...) of a version string such as '8.5.2.2' or '10.3.0.post1'."""
    parts = []
    for piece in str(version).split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
    if not parts:
        raise ValueError(f"not a version: {version!r}")
    return tuple(parts)


def supports_optimization_level(trt_module: Any) -> bool:
    """Whether this TensorRT has IBuilderConfig.builder_optimization_level (added in 8.6)."""
    version = getattr(trt_module, "__version__", None)
    if not version:
        return True
    try:
        return parse_version(version)[:2] >= OPTIMIZATION_LEVEL_MIN
    except ValueError:
        return True


def version_problem(version: str) -> Optional[str]:
    """Why this TensorRT version cannot be used at all (None when it can)."""
    try:
        parsed = parse_version(version)
    except ValueError:
        return f"TensorRT reports an unreadable version {version!r}"
    if parsed[:2] < MIN_VERSION:
        return (
            f"TensorRT {version} is older than 8.5, the first with execute_async_v3 and the "
            "tensor-address API this backend uses (JetPack 4.x boards cannot run it)"
        )
    return None


def resolve_typing(opts: Dict[str, Any], version: str) -> str:
    """'weak' (precision flags, calibration) or 'strong' (precision from the ONNX), for this TensorRT.

    Raises ConfigError naming the key when the request cannot be met by this version.
    """
    requested = opts.get("network_typing", "auto")
    parsed = parse_version(version)[:2]
    if requested == "auto":
        return "strong" if parsed >= WEAK_TYPING_END else "weak"
    if requested == "strong" and parsed < STRONG_TYPING_MIN:
        raise ConfigError(
            f"config key 'tensorrt.network_typing' is 'strong', but TensorRT {version} has no "
            "strongly typed networks (they need TensorRT >= 10); use 'weak' or 'auto'"
        )
    if requested == "weak" and parsed >= WEAK_TYPING_END:
        raise ConfigError(
            f"config key 'tensorrt.network_typing' is 'weak', but TensorRT {version} removed the "
            "FP16/INT8 builder flags and implicit calibration; use 'strong' or 'auto'"
        )
    return requested


def parse_compute_capability(value: Any) -> Optional[Tuple[int, int]]:
    """(major, minor) of a compute capability such as '8.7', (8, 7) or 87; None when unknown."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) and len(value) >= 2:
        return int(value[0]), int(value[1])
    text = str(value).strip()
    m = re.match(r"^(\d+)\.(\d+)$", text)
    if m:
        return int(m.group(1)), int(m.group(2))
    if text.isdigit() and len(text) >= 2:
        return int(text[:-1]), int(text[-1])
    return None


def bf16_problem(version: str, compute_capability: Any = None, typing: Optional[str] = None) -> Optional[str]:
    """Why this TensorRT/GPU cannot build a BF16 engine (None when it can, or the GPU is not known).

    The reason names the missing capability and the fix (the planning refusal and the backends: auto
    note quote it)."""
    try:
        parsed = parse_version(version)[:2]
    except ValueError:
        return f"TensorRT reports an unreadable version {version!r}"
    if parsed < BF16_MIN_VERSION:
        return (f"TensorRT {version} has no BF16 builder flag (BuilderFlag.BF16 needs TensorRT 10, JetPack 6.1+); "
                "leave bf16 out of config key 'precisions' or upgrade TensorRT")
    cc = parse_compute_capability(compute_capability)
    if cc is not None and cc < BF16_MIN_COMPUTE:
        return (f"this GPU has compute capability {cc[0]}.{cc[1]}, and TensorRT builds BF16 only on compute "
                f"capability {BF16_MIN_COMPUTE[0]}.{BF16_MIN_COMPUTE[1]} or newer (Ampere, Ada, Hopper, Jetson Orin; "
                "not Xavier or Turing); leave bf16 out of config key 'precisions' or run it on such a GPU")
    if typing == "strong" or parsed >= WEAK_TYPING_END:
        return (f"BF16 is built with BuilderFlag.BF16 on a weakly typed network, and "
                + (f"TensorRT {version} removed that flag" if parsed >= WEAK_TYPING_END
                   else "config key 'tensorrt.network_typing' is 'strong'")
                + " (the workflow makes no BF16 ONNX for a strongly typed build); "
                + ("leave bf16 out of config key 'precisions'" if parsed >= WEAK_TYPING_END
                   else "set tensorrt.network_typing: weak or auto, or leave bf16 out of 'precisions'"))
    return None


def check_build_request(
    precisions: Sequence[str], options: Optional[Dict[str, Any]], version: str, num_dla_cores: Optional[int] = None,
    compute_capability: Any = None,
) -> str:
    """Refuse, naming the key, any precision this TensorRT cannot build with these options.

    Cheap and import-free: meant for planning time (``version`` from :func:`..version`,
    ``num_dla_cores`` and ``compute_capability`` from :func:`..probe`) and again at build time.
    Returns the network typing that will be used ('weak' or 'strong').
    """
    problem = version_problem(version)
    if problem:
        raise ConfigError(problem)
    opts = normalize_options(options)
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ConfigError(f"precisions {bad} are not ones TensorRT builds here; use {list(PRECISIONS)}")
    if any(p in ("fp16", "int8") for p in precisions):  # DLA runs FP16/INT8 only; fp32/bf16 ignore dla_core
        check_dla_core(opts.get("dla_core"), num_dla_cores)
    typing = resolve_typing(opts, version)
    if "bf16" in precisions:
        problem = bf16_problem(version, compute_capability, typing)
        if problem:
            raise ConfigError(f"precision 'bf16' cannot be built: {problem}")
    if typing == "strong" and "int8" in precisions and opts["int8_mode"] == "calibration":
        why = (
            f"TensorRT {version} removed implicit INT8 calibration"
            if parse_version(version)[:2] >= WEAK_TYPING_END
            else "a strongly typed network takes its INT8 scales only from Q/DQ nodes"
        )
        raise ConfigError(
            f"precision 'int8' with config key 'tensorrt.int8_mode' 'calibration' cannot be built: "
            f"{why}; set tensorrt.int8_mode: qdq (the workflow makes the Q/DQ model) or drop int8"
        )
    return typing


def check_config_options(config: Dict[str, Any]) -> Dict[str, Any]:
    """The ``tensorrt`` block checked against the rest of a workflow config, without TensorRT.

    Run while the config is validated (``config.check_config``, when ``backends`` names tensorrt)
    and by ``device_run`` before any job, so a workstation planning a board's run is told too:
    e.g. ``tensorrt.max_batch_size`` below ``benchmark.batch_size`` (the profile's optimum batch).
    Evaluation batches need no check: the runner runs any batch size in parts.
    """
    bench = (config.get("benchmark") or {}).get("batch_size", BACKEND_DEFAULTS["batch_size"])
    return normalize_options({**(config.get("tensorrt") or {}), "batch_size": bench})


def check_dla_core(dla_core: Optional[int], num_dla_cores: Optional[int]) -> None:
    """Refuse a DLA core index the device does not have (``IBuilder.num_DLA_cores``; None: unknown).

    With ``gpu_fallback`` a build for a missing core could otherwise end up on the GPU while its
    rows say DLA.
    """
    if dla_core is None or num_dla_cores is None:
        return
    cores = int(num_dla_cores)
    if int(dla_core) >= cores:
        have = "has no DLA core" if cores == 0 else f"has {cores} DLA core(s), numbered 0..{cores - 1}"
        raise ConfigError(
            f"config key 'tensorrt.dla_core' is {dla_core}, but this device {have} "
            f"(TensorRT's num_DLA_cores = {cores}); "
            + ("set tensorrt.dla_core: null" if cores == 0 else f"use 0..{cores - 1} or null")
        )


def versioned_timing_cache(path: str, device: str, version: str) -> str:
    """The timing cache path for this device and TensorRT version.

    ``{device}`` and ``{tensorrt_version}`` in ``path`` are replaced; without the latter, the
    version is put before the suffix (``timing.cache`` -> ``timing.trt-10.3.0.cache``), since a
    timing cache from another TensorRT version is rejected or, worse, misleading.
    """
    out = str(path).replace("{device}", str(device))
    if "{tensorrt_version}" in out:
        return out.replace("{tensorrt_version}", str(version))
    p = Path(out)
    return str(p.with_name(f"{p.stem}.trt-{version}{p.suffix}"))
