"""Device identity: a filesystem-safe tag under which all of a device's results live.

Detection order: config override, Jetson model (/proc/device-tree/model), NVIDIA GPU name
(NVML), CPU model. Fast and free of heavy imports: the Snakefile calls it at DAG time.
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

from workflow_scripts.core.paths import RESERVED

JETSON_MODEL_FILE = Path("/proc/device-tree/model")
SYSFS_ROOT = Path("/sys")

# CUDA cores per device, keyed by a slug fragment matched against slugify(device name).
# Sources: NVIDIA's Jetson module data sheets and GPU product pages. Longer keys are tried
# first, so "rtx-3090-ti" wins over "rtx-3090" and "agx-orin-32gb" over "agx-orin".
CUDA_CORES: dict[str, int] = {
    # Jetson modules (the name comes from /proc/device-tree/model)
    "jetson-nano": 128,
    "jetson-tx1": 256,
    "jetson-tx2": 256,
    "tx2-nx": 256,
    "xavier-nx": 384,
    "agx-xavier": 512,
    "orin-nano-4gb": 512,
    "orin-nano-8gb": 1024,
    "orin-nano": 1024,  # the developer kit and the unqualified name are the 8 GB module
    "orin-nx": 1024,
    "agx-orin-32gb": 1792,
    "agx-orin-64gb": 2048,
    "agx-orin": 2048,
    # Discrete GPUs (the name comes from NVML, e.g. "NVIDIA GeForce RTX 3090")
    "gtx-1080-ti": 3584,
    "gtx-1080": 2560,
    "gtx-1070": 1920,
    "rtx-2060": 1920,
    "rtx-2070": 2304,
    "rtx-2080": 2944,
    "rtx-2080-ti": 4352,
    "rtx-3060": 3584,
    "rtx-3060-ti": 4864,
    "rtx-3070": 5888,
    "rtx-3070-ti": 6144,
    "rtx-3080": 8704,
    "rtx-3080-ti": 10240,
    "rtx-3090": 10496,
    "rtx-3090-ti": 10752,
    "rtx-4060": 3072,
    "rtx-4060-ti": 4352,
    "rtx-4070": 5888,
    "rtx-4070-ti": 7680,
    "rtx-4080": 9728,
    "rtx-4090": 16384,
    "rtx-a4000": 6144,
    "rtx-a5000": 8192,
    "rtx-a6000": 10752,
    "rtx-6000-ada": 18176,
    "t4": 2560,
    "v100": 5120,
    "a10": 9216,
    "a30": 3584,
    "a40": 10752,
    "a100": 6912,
    "l4": 7424,
    "l40": 18176,
    "l40s": 18176,
    "h100": 16896,  # SXM5 and NVL; the PCIe card has fewer SMs enabled
    "h100-pcie": 14592,
    "h200": 16896,
}


def slugify(text: str) -> str:
    """Lower-case, keep [a-z0-9], join the rest with single dashes."""
    text = re.sub(r"\((r|tm)\)|cpu|@.*$", " ", text.lower())
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or platform.processor() elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


# /proc/cpuinfo flags of x86 BF16 arithmetic that OpenVINO's CPU plugin executes bf16 with (oneDNN's
# avx512_core_bf16 and AMX; its CPU plugin then lists BF16 in OPTIMIZATION_CAPABILITIES).
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The feature flags of the first processor in ``cpuinfo`` ("flags" on x86, "Features" on ARM);
    empty when unreadable (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.lower().split())
    return set()


def cpu_bf16_support(flags: set[str] | None = None, machine: str | None = None) -> tuple[bool, str]:
    """(True, the flag found) where this CPU computes in BF16 (x86 ``avx512_bf16`` or ``amx_bf16``),
    else (False, why: the missing flags, the CPU, and the fix). Cheap: reads /proc/cpuinfo only."""
    flags = cpu_flags() if flags is None else set(flags)
    machine = (machine or platform.machine() or "").lower()
    found = [f for f in X86_BF16_FLAGS if f in flags]
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    fix = ("run bf16 on a CPU that has one (Intel Xeon Cooper Lake/Sapphire Rapids or newer, AMD Zen 4 or newer) "
           "or leave bf16 out of config key 'precisions'")
    if not flags:
        return False, f"this machine's CPU flags cannot be read (no /proc/cpuinfo), so its BF16 support is unknown; {fix}"
    if machine not in ("x86_64", "amd64"):
        return False, (f"this {machine} CPU ({cpu_model()}) has no x86 avx512_bf16 or amx_bf16 flag, and OpenVINO's "
                       f"CPU plugin runs bf16 only with them; {fix}")
    return False, (f"this CPU ({cpu_model()}) has neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo, "
                   f"the flags OpenVINO's CPU plugin needs to compute in BF16; {fix}")


def jetson_model(model_file: Path = JETSON_MODEL_FILE) -> str | None:
    """The Jetson board name from the device tree, or None off Jetson."""
    try:
        text = model_file.read_bytes().decode(errors="replace").strip("\x00 \n")
    except OSError:
        return None
    return text if "jetson" in text.lower() or "nvidia" in text.lower() else None


def nvidia_gpu_name() -> str | None:
    """The first NVIDIA GPU's name through NVML, or None when NVML or a GPU is absent."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError when no driver: absent NVML is normal on CPU machines
        return None
    try:
        if pynvml.nvmlDeviceGetCount() < 1:
            return None
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def cuda_cores(device_name: str | None, mem_total_mb: float | None = None) -> int | None:
    """CUDA cores of a Jetson board or GPU named like the device tree or NVML does, else None.

    ``mem_total_mb`` tells the 4 GB Orin Nano (512 cores) from the 8 GB one when the name does not.
    """
    if not device_name:
        return None
    slug = f"-{slugify(device_name)}-"
    for key in sorted(CUDA_CORES, key=len, reverse=True):
        if f"-{key}-" in slug:
            if key == "orin-nano" and mem_total_mb is not None and mem_total_mb < 6000:
                return CUDA_CORES["orin-nano-4gb"]
            return CUDA_CORES[key]
    return None


def mem_total_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Total RAM in MB from /proc/meminfo, or None where it cannot be read."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def parse_nvpmodel_output(text: str) -> str | None:
    """The power mode from ``nvpmodel -q`` output, e.g. "MAXN" or "15W (mode 0)", or None."""
    name = None
    mode_id = None
    for line in text.splitlines():
        line = line.strip()
        if line.lower().startswith("nv power mode:"):
            name = line.split(":", 1)[1].strip()
        elif name is not None and mode_id is None and line.isdigit():
            mode_id = line  # nvpmodel prints the mode number on the line after the name
    if not name:
        return None
    return f"{name} (mode {mode_id})" if mode_id is not None else name


def power_mode(timeout_s: float = 3.0) -> str | None:
    """The Jetson power mode reported by ``nvpmodel -q`` where that command exists, else None."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "-q"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    # Older L4T releases print the mode on stderr; read both streams.
    return parse_nvpmodel_output(proc.stdout + "\n" + proc.stderr)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def clocks(sysfs_root: Path = SYSFS_ROOT) -> dict[str, float]:
    """Current and maximum CPU0 and Jetson GPU clocks in MHz, for whichever sysfs files are readable."""
    out: dict[str, float] = {}
    cpufreq = sysfs_root / "devices/system/cpu/cpu0/cpufreq"
    for key, name in (("cpu_mhz", "scaling_cur_freq"), ("cpu_max_mhz", "scaling_max_freq")):
        value = _read_int(cpufreq / name)
        if value is not None:
            out[key] = value / 1000.0  # cpufreq reports kHz
    # Jetson iGPU: a devfreq node named after the GPU (57000000.gpu, 17000000.gv11b, 17000000.ga10b).
    devfreq = sysfs_root / "class/devfreq"
    try:
        nodes = sorted(devfreq.iterdir()) if devfreq.is_dir() else []
    except OSError:
        nodes = []
    for node in nodes:
        if not re.search(r"gpu|gv11b|ga10b|gp10b|gm20b", node.name):
            continue
        for key, name in (("gpu_mhz", "cur_freq"), ("gpu_max_mhz", "max_freq")):
            value = _read_int(node / name)
            if value is not None:
                out[key] = value / 1e6  # devfreq reports Hz
        break
    return out


def detect_device_tag(override: str | None = None) -> str:
    """Return the device tag: the override if given (and not 'auto'), exactly as written (the schema
    allows only tag characters, so names and folders are one-to-one), else the detected name."""
    if override and override != "auto":
        return override
    tag = slugify(jetson_model() or nvidia_gpu_name() or cpu_model())
    # A detected tag never takes one of the workflow's own folder names.
    return f"{tag}-device" if tag in RESERVED else tag


def device_info(override: str | None = None) -> dict[str, str]:
    """Identity facts recorded in every result row (unknown values are empty strings)."""
    jetson = jetson_model()
    gpu = nvidia_gpu_name()
    cores = cuda_cores(jetson or gpu, mem_total_mb() if jetson else None)
    clk = clocks()
    return {
        "device": detect_device_tag(override),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "gpu_name": gpu or "",
        "jetson_model": jetson or "",
        "cuda_cores": str(cores) if cores is not None else "",
        "power_mode": (power_mode() or "") if jetson else "",
        "cpu_clock_mhz": f"{clk['cpu_mhz']:.0f}" if "cpu_mhz" in clk else "",
        "gpu_clock_mhz": f"{clk['gpu_mhz']:.0f}" if "gpu_mhz" in clk else "",
    }
