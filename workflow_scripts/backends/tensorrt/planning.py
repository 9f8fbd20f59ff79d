"""What the workflow asks of TensorRT while planning and per job, listed as hooks by its registry entry
(:mod:`workflow_scripts.core.registry`, ``Backend.hooks``): config checks, the settings filter, the
per-job options the rules and the on-device runner pass to a build.

Light: ``tensorrt`` itself is imported only by the hooks that need it installed (``check_installed``,
``hardware_support``, each after the registry's availability check or its own). Python 3.8 compatible
(the on-device runner calls :func:`job_options` on JetPack 5).
"""

from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

from workflow_scripts.backends.tensorrt.options import check_config_options

NAME = "tensorrt"


def check_config(config: Dict[str, Any]) -> None:
    """The ``tensorrt`` block against the rest of the config, before TensorRT is probed (a workstation
    planning a board's run is told too)."""
    check_config_options(config)


def check_installed(config: Dict[str, Any], precisions: Sequence[str]) -> None:
    """Refuse at planning what this TensorRT cannot build (e.g. INT8 by calibration on TensorRT 11, a
    ``tensorrt.dla_core`` this device does not have). Called where TensorRT is available."""
    from workflow_scripts.core.registry import load

    trt = load(NAME)
    trt.check_config_options(config)  # also where backends is auto (config.check_config: named only)
    found = trt.probe()
    trt.check_build_request(precisions, config.get(NAME, {}), trt.version(),
                            found.get("num_DLA_cores"), found.get("compute_capability"))


def int8_calibrates(options: Dict[str, Any]) -> bool:
    """Whether INT8 builds calibrate (``int8_mode: calibration``) rather than read a Q/DQ model's scales."""
    return options.get("int8_mode", "calibration") == "calibration"


def settings_filter(options: Dict[str, Any], precision: str) -> Dict[str, Any]:
    """The options that can change a row: ``gpu_fallback`` only matters with a ``dla_core``."""
    if options.get("dla_core") is None:
        options.pop("gpu_fallback", None)
    return options


def job_options(results: str, device: str, size: Any, config: Dict[str, Any]) -> Dict[str, Any]:
    """Per-job facts a build needs besides its settings (rules/common.smk's ``backend_options``)."""
    return {
        "device": device,
        # Timing caches are per device and TensorRT version: they live under the device.
        "timing_cache": f"{results}/{device}/{NAME}/timing.cache",
        "batch_size": config["benchmark"]["batch_size"],
        "input_shape": [int(size), int(size), 3],
    }


def hardware_support(precision: str) -> Tuple[bool, str]:
    """Whether this machine's TensorRT and GPU build ``precision`` (bf16: TensorRT 10, compute capability 8.0)."""
    from workflow_scripts.core.registry import backend, load

    if not backend(NAME).available()[0]:
        return True, ""
    trt = load(NAME)
    return trt.bf16_support(trt.probe())


def validation_versions(trt_module: Any) -> Dict[str, Any]:
    """The versions fleet/gpu_validate.py reports: Polygraphy, ONNX and ONNX Runtime (its reference), then
    TensorRT and the probe."""
    facts: Dict[str, Any] = {}
    for name in ("polygraphy", "onnx", "onnxruntime"):
        try:
            facts[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - a version report never fails
            facts[name] = f"missing ({type(exc).__name__})"
    facts[NAME] = trt_module.version()
    facts["probe"] = trt_module.probe()
    return facts
