"""GPU and board samplers that the resource monitor polls at each tick.

A sampler has ``sample() -> dict[str, float]`` (the latest values; empty when nothing has been
read yet) and ``close()``. Two kinds exist:

- :class:`TegrastatsSampler` on Jetson: runs ``tegrastats --interval <ms>`` in the background,
  because Jetson's integrated GPU shares RAM with the CPU and NVML reports little there; it gives
  RAM, GPU load (GR3D_FREQ), per-core CPU load and the power rails of the board's INA3221 monitors.
- :class:`NvmlSampler` on discrete NVIDIA GPUs: utilisation, memory and power through NVML.

:func:`make_gpu_sampler` picks one, or returns None where neither applies (a CPU-only machine).
Nothing here raises because a tool or library is missing: monitoring is best-effort and must never
abort a benchmark.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import threading
from typing import Dict, Optional, Sequence

try:
    from typing import Protocol
except ImportError:  # Python 3.7
    Protocol = object  # type: ignore

from workflow_scripts.core.device import jetson_model

LOG = logging.getLogger(__name__)


class Sampler(Protocol):
    """What the resource monitor calls: ``sample()`` at each tick and ``close()`` once at the end."""

    def sample(self) -> dict[str, float]: ...

    def close(self) -> None: ...


# --- tegrastats -------------------------------------------------------------------------------

_RE_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_RE_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
# "CPU [12%@1190,off,...]" (L4T >= 28.2) or "cpu [17%,13%]@408" (older TX1 releases).
_RE_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?", re.IGNORECASE)
_RE_CORE = re.compile(r"(\d+)%(?:@(\d+))?")
# "GR3D_FREQ 0%", "GR3D_FREQ 45%@921", "GR3D_FREQ 84%@[713]", "GR3D_FREQ 0%@[0,0]" (two GPCs),
# and "GR3D 3%@76" from L4T 28 (TX1/TX2).
_RE_GR3D = re.compile(r"\b(GR3D2?)(?:_FREQ)? (\d+)%(?:@\[?([\d,]+)\]?)?")
_RE_EMC = re.compile(r"\bEMC(?:_FREQ)? (\d+)%(?:@(\d+))?")
# Temperatures: "CPU@31.5C", "tj@57.593C"; unpopulated sensors read -256C and are dropped.
_RE_TEMP = re.compile(r"(?<![\w%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
# Rails with units (JetPack >= 4.4 on Xavier, all Orin): "VDD_IN 3588mW/3588mW" or "VDD_IN 3588mW".
_RE_RAIL_MW = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)mW(?:/(\d+)mW)?(?=\s|$)")
# Rails without units (JetPack 4.2-4.3 Xavier, Nano's POM_*): "GPU 463/463", "POM_5V_IN 3187/3187".
_RE_RAIL_BARE = re.compile(r"(?<![\w@])([A-Za-z][A-Za-z0-9_]*) (\d+)/(\d+)(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM"}


def parse_tegrastats_line(line: str) -> dict[str, float]:
    """Parse one tegrastats line into flat float metrics; unknown fields are ignored, never fatal.

    Keys: ram_used_mb, ram_total_mb, swap_used_mb, swap_total_mb, cpu<i>_percent and cpu<i>_mhz
    for online cores (offline "off" cores are left out and counted in cpu_cores_off),
    gpu_util_percent (GR3D_FREQ), gpu_freq_mhz, gpu2_util_percent (GR3D2_FREQ), emc_util_percent,
    temp_<sensor>_c and power_<rail>_mw (instantaneous value, rail name lower-cased).
    """
    out: dict[str, float] = {}
    m = _RE_RAM.search(line)
    if m:
        out["ram_used_mb"] = float(m.group(1))
        out["ram_total_mb"] = float(m.group(2))
    m = _RE_SWAP.search(line)
    if m:
        out["swap_used_mb"] = float(m.group(1))
        out["swap_total_mb"] = float(m.group(2))

    m = _RE_CPU.search(line)
    if m:
        shared_freq = m.group(2)
        off = 0
        for index, field in enumerate(m.group(1).split(",")):
            field = field.strip()
            core = _RE_CORE.fullmatch(field)
            if core is None:
                off += field.lower() == "off"
                continue
            out[f"cpu{index}_percent"] = float(core.group(1))
            freq = core.group(2) or shared_freq
            if freq:
                out[f"cpu{index}_mhz"] = float(freq)
        out["cpu_cores_off"] = float(off)

    for m in _RE_GR3D.finditer(line):
        prefix = "gpu" if m.group(1) == "GR3D" else "gpu2"
        out[f"{prefix}_util_percent"] = float(m.group(2))
        if m.group(3):
            freqs = [float(f) for f in m.group(3).split(",") if f]
            if freqs:
                # Several values are per-GPC clocks; the highest is the clock the GPU runs at.
                out[f"{prefix}_freq_mhz"] = max(freqs)

    m = _RE_EMC.search(line)
    if m:
        out["emc_util_percent"] = float(m.group(1))
        if m.group(2):
            out["emc_freq_mhz"] = float(m.group(2))

    for m in _RE_TEMP.finditer(line):
        value = float(m.group(2))
        if value > -200:  # -256C marks a sensor that is not populated on this module
            out[f"temp_{m.group(1).lower()}_c"] = value

    for regex in (_RE_RAIL_MW, _RE_RAIL_BARE):
        for m in regex.finditer(line):
            name = m.group(1)
            if name in _NOT_RAILS or name == "NC":  # NC: an unconnected monitor channel
                continue
            out.setdefault(f"power_{name.lower()}_mw", float(m.group(2)))
    return out


# tegrastats is itself a process reading sysfs and /proc: at the monitor's 10 Hz it loads a Jetson's
# CPU during the very benchmark it observes. It never runs faster than this (its own default is 1 s).
TEGRASTATS_MIN_INTERVAL_S = 0.5


def tegrastats_interval_ms(interval_s: float) -> int:
    """tegrastats' --interval for a monitor interval: never below TEGRASTATS_MIN_INTERVAL_S."""
    return int(round(max(float(interval_s), TEGRASTATS_MIN_INTERVAL_S) * 1000))


class TegrastatsSampler:
    """Runs tegrastats in the background; ``sample()`` returns the most recent parsed line.

    tegrastats writes through C stdio, which block-buffers a pipe: lines would arrive in 4 KiB
    bursts, minutes late at 0.5 s per line. Its stdout is therefore a pseudo-terminal, on which
    stdio flushes every line (where no pty can be opened, a pipe is the fallback). A reader thread
    keeps only the latest line, so a slow monitor never blocks tegrastats. Without root, some
    releases omit GR3D_FREQ; the keys then simply do not appear.
    """

    def __init__(self, interval_s: float = 1.0, argv: Optional[Sequence[str]] = None) -> None:
        self.interval_ms = tegrastats_interval_ms(interval_s)
        self.argv = list(argv) if argv is not None else ["tegrastats", "--interval", str(self.interval_ms)]
        self._latest: Dict[str, float] = {}
        self._lock = threading.Lock()
        self._lines = 0
        self._master: Optional[int] = None
        try:
            import pty

            self._master, slave = pty.openpty()
        except (ImportError, OSError):
            slave = None
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdout=slave if slave is not None else subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                close_fds=True,
            )
        except BaseException:
            if self._master is not None:
                os.close(self._master)
            raise
        finally:
            if slave is not None:
                os.close(slave)  # the child holds its own copy
        self.line_buffered = slave is not None
        self._thread = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
        self._thread.start()

    def _chunks(self):
        """Raw output as it arrives (EIO from a pty whose child has exited means end of output)."""
        if self._master is None:
            assert self._proc.stdout is not None
            fd = self._proc.stdout.fileno()
        else:
            fd = self._master
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            yield chunk

    def _read(self) -> None:
        pending = b""
        for chunk in self._chunks():
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                parsed = parse_tegrastats_line(raw.decode(errors="replace").strip("\r"))
                if parsed:
                    with self._lock:
                        self._latest = parsed
                        self._lines += 1

    @property
    def lines_read(self) -> int:
        """How many non-empty tegrastats lines have been parsed so far."""
        with self._lock:
            return self._lines

    def sample(self) -> Dict[str, float]:
        """The metrics of the latest tegrastats line (empty before the first line arrives)."""
        with self._lock:
            return dict(self._latest)

    def close(self) -> None:
        """Stop tegrastats and the reader thread; safe to call twice."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=3)
        self._thread.join(timeout=3)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._master is not None:
            try:
                os.close(self._master)
            except OSError:
                pass
            self._master = None


# --- NVML -------------------------------------------------------------------------------------


class NvmlSampler:
    """GPU utilisation, memory and board power of one discrete GPU through NVML (nvidia-ml-py)."""

    def __init__(self, index: int = 0) -> None:
        import pynvml  # nvidia-ml-py; imported here so CPU-only machines never need it

        self._nvml = pynvml
        pynvml.nvmlInit()
        try:
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:
            pynvml.nvmlShutdown()
            raise
        self._closed = False

    def sample(self) -> dict[str, float]:
        """Current gpu_util_percent, gpu_memory_used_mb, gpu_memory_percent (and power_gpu_mw)."""
        if self._closed:
            return {}
        nv = self._nvml
        out: dict[str, float] = {}
        # Each query may be unsupported on a given board (e.g. memory on Jetson's nvgpu); skip it.
        try:
            out["gpu_util_percent"] = float(nv.nvmlDeviceGetUtilizationRates(self._handle).gpu)
        except Exception:
            pass
        try:
            mem = nv.nvmlDeviceGetMemoryInfo(self._handle)
            out["gpu_memory_used_mb"] = mem.used / 2**20
            if mem.total:
                out["gpu_memory_percent"] = 100.0 * mem.used / mem.total
        except Exception:
            pass
        try:
            out["power_gpu_mw"] = float(nv.nvmlDeviceGetPowerUsage(self._handle))
        except Exception:
            pass
        return out

    def close(self) -> None:
        """Shut NVML down; safe to call twice."""
        if not self._closed:
            self._closed = True
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass


def make_gpu_sampler(interval_s: float = 1.0) -> "Sampler | None":
    """tegrastats on Jetson, NVML on a discrete NVIDIA GPU, None elsewhere (never raises)."""
    if jetson_model() is not None:
        if shutil.which("tegrastats"):
            try:
                return TegrastatsSampler(interval_s)
            except OSError as exc:
                LOG.warning("tegrastats found but could not start (%s); no GPU metrics", exc)
                return None
        LOG.warning("Jetson detected but tegrastats is not on PATH; trying NVML")
    try:
        sampler = NvmlSampler()
    except ImportError:
        LOG.info("nvidia-ml-py (pynvml) is not installed; no GPU metrics")
        return None
    except Exception as exc:  # NVMLError: no driver, no GPU
        LOG.info("NVML unavailable (%s); no GPU metrics", exc)
        return None
    if not sampler.sample():
        sampler.close()  # NVML present but every query unsupported: report nothing
        return None
    return sampler
