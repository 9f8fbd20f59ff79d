"""Whether TensorRT can build here: ``is_available()`` (for planning) and ``version()``.

``is_available`` does more than look for the package: in a child process it imports
``tensorrt`` and ``polygraphy`` (the builder chain and the CUDA wrapper), creates a ``Builder``
(which initialises CUDA and fails without a usable GPU or driver), a builder config and an
explicit-batch network, and checks the version policy. The child
keeps a broken CUDA install from crashing or hanging the Snakemake planner; the answer is cached
per process, and a machine without the package answers at once without a child.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import subprocess
import sys
from typing import Any, Dict, Tuple

from workflow_scripts.core.errors import BackendUnavailable
from workflow_scripts.backends.tensorrt.options import version_problem

LOG = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 120.0

# Run by a child Python: prints one JSON object. Kept free of project imports on purpose.
PROBE = r"""
import json, sys
out = {"ok": False}
try:
    import tensorrt as trt
except Exception as exc:
    out["reason"] = "import tensorrt failed: %s: %s" % (type(exc).__name__, exc)
    print(json.dumps(out)); sys.exit(0)
out["version"] = str(getattr(trt, "__version__", ""))
try:
    import polygraphy
    out["polygraphy"] = str(getattr(polygraphy, "__version__", ""))
except Exception as exc:
    out["reason"] = ("TensorRT %s is installed but Polygraphy, which builds the engines, cannot be imported "
                     "(pip install 'polygraphy>=0.53.4'): %s: %s" % (out["version"], type(exc).__name__, exc))
    print(json.dumps(out)); sys.exit(0)
try:
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    if builder is None:
        raise RuntimeError("trt.Builder returned None")
    config = builder.create_builder_config()
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    if config is None or network is None:
        raise RuntimeError("the builder could not create a config or a network")
except Exception as exc:
    out["reason"] = ("TensorRT %s cannot create a builder (no usable NVIDIA GPU or driver?): %s: %s"
                     % (out["version"], type(exc).__name__, exc))
    print(json.dumps(out)); sys.exit(0)
for key in ("platform_has_fast_fp16", "platform_has_fast_int8", "platform_has_tf32", "num_DLA_cores"):
    try:
        out[key] = getattr(builder, key)
    except Exception:
        pass
# The GPU's compute capability (BF16 needs >= 8.0) from the CUDA driver API, which every NVIDIA driver
# ships (libcuda.so.1, on Jetson under /usr/lib/aarch64-linux-gnu/tegra): cuDeviceGetAttribute 75/76.
try:
    import ctypes
    cuda = ctypes.CDLL("libcuda.so.1")
    device, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if (cuda.cuInit(0) == 0 and cuda.cuDeviceGet(ctypes.byref(device), 0) == 0
            and cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device) == 0
            and cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device) == 0):
        out["compute_capability"] = "%d.%d" % (major.value, minor.value)
except Exception:
    pass
out["ok"] = True
print(json.dumps(out))
"""


def import_tensorrt():
    """Import tensorrt or raise BackendUnavailable naming the fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend 'tensorrt' needs the 'tensorrt' Python package, which cannot be imported ({exc}); "
            "see docs/tensorrt.md or run with --config backend=onnxruntime"
        ) from exc
    return trt


def version() -> str:
    """The installed TensorRT's version, or BackendUnavailable naming the fix."""
    return str(import_tensorrt().__version__)


def _package_missing() -> bool:
    try:
        return importlib.util.find_spec("tensorrt") is None
    except (ImportError, ValueError):
        return True


@functools.lru_cache(maxsize=1)
def probe() -> Dict[str, Any]:
    """What a child Python finds: {"ok", "version", "reason", builder facts}; cached per process."""
    if _package_missing():
        return {
            "ok": False,
            "reason": (
                "the Python package 'tensorrt' is not installed (x86: pip install -e .[tensorrt]; "
                "Jetson: use JetPack's TensorRT, see docs/tensorrt.md)"
            ),
        }
    env = dict(os.environ)
    try:
        done = subprocess.run(
            [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
            env=env, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "reason": f"creating a TensorRT builder did not finish in {PROBE_TIMEOUT_S:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"ok": False, "reason": f"the TensorRT probe exited with code {done.returncode}: {tail[0]}"}
    result = json.loads(lines[-1])
    if result.get("ok"):
        problem = version_problem(result.get("version", ""))
        if problem:
            result.update(ok=False, reason=problem)
    return result


def bf16_support(found: Dict[str, Any]) -> Tuple[bool, str]:
    """(True, '') where this TensorRT and GPU build BF16 engines, else (False, why and the fix), from a
    :func:`probe` result. An unknown compute capability is not refused here (the build checks again)."""
    from workflow_scripts.backends.tensorrt.options import bf16_problem

    if not found.get("ok"):
        return False, f"backend 'tensorrt' cannot run here: {found.get('reason', 'unknown reason')}"
    problem = bf16_problem(str(found.get("version", "")), found.get("compute_capability"))
    return (False, f"backend 'tensorrt' cannot build bf16 here: {problem}") if problem else (True, "")


def is_available() -> Tuple[bool, str]:
    """(True, what was found) when TensorRT can build here, else (False, why not). Never raises."""
    try:
        found = probe()
    except Exception as exc:  # availability must never raise: it is asked at DAG-planning time
        return False, f"checking for TensorRT failed: {exc}"
    if not found.get("ok"):
        return False, str(found.get("reason", "unknown reason"))
    extras = ", ".join(
        f"{k}={found[k]}" for k in ("polygraphy", "compute_capability", "platform_has_fast_fp16",
                                    "platform_has_fast_int8", "num_DLA_cores")
        if k in found
    )
    return True, f"TensorRT {found['version']} can create a builder here ({extras})"
