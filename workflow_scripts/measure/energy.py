"""Energy per inference over the measured latency run, where this machine lets power be read.

Sources, in order of preference:

1. **NVML energy counter** (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver load; Volta
   and newer discrete GPUs): GPU board energy, read before and after the measured tasks.
2. **RAPL powercap** (``/sys/class/powercap/intel-rapl:<n>/energy_uj``, x86): package energy
   (every process on the socket, not only ours), read before and after; wrap-around handled
   with ``max_energy_range_uj``. Often readable by root only (since Linux 5.10).
3. **Power samples in the monitor's trace**: tegrastats' total input rail on Jetson
   (``power_vdd_in_mw``, ``power_pom_5v_in_mw``; board power), else NVML's instantaneous
   ``power_gpu_mw``, integrated over the measured window with the trapezoid rule.

Where none is available the energy columns are empty and ``energy_note`` says why. Everything
except :func:`open_meter` and the readers is a pure function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

POWERCAP = "/sys/class/powercap"
# Total-board rails of Jetson modules (tegrastats names, lower-cased by gpu_monitor), best first.
TOTAL_RAILS = ("power_vdd_in_mw", "power_pom_5v_in_mw", "power_vin_sys_5v0_mw", "power_vdd_in_total_mw")
COLUMNS = ("energy_j", "energy_per_inference_mj", "energy_per_image_mj", "average_power_w", "energy_source",
           "energy_note")


# --- pure functions ------------------------------------------------------------------------------

def counter_delta(before: float, after: float, max_range: float | None = None) -> float:
    """Increase of a monotonic energy counter that wraps at ``max_range`` (NaN if it went back without one)."""
    delta = after - before
    if delta >= 0:
        return float(delta)
    if max_range:
        return float(after + max_range - before)
    return math.nan


def integrate_power_mw(times_s, power_mw, start_s: float | None = None, end_s: float | None = None) -> float:
    """Energy (J) of a power trace (mW at times in s) by the trapezoid rule, inside [start_s, end_s].

    NaN samples are dropped; fewer than two samples in the window gives NaN.
    """
    t = np.asarray(times_s, dtype=float)
    p = np.asarray(power_mw, dtype=float)
    keep = np.isfinite(t) & np.isfinite(p)
    if start_s is not None:
        keep &= t >= start_s
    if end_s is not None:
        keep &= t <= end_s
    t, p = t[keep], p[keep]
    if len(t) < 2:
        return math.nan
    order = np.argsort(t)
    t, p = t[order], p[order]
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)) / 1e3)


def trace_power_column(trace: pd.DataFrame) -> str | None:
    """The power column of a monitor trace that measures the whole board (Jetson) or the GPU (NVML)."""
    for column in TOTAL_RAILS + ("power_gpu_mw",):
        if column in trace.columns and trace[column].notna().sum() >= 2:
            return column
    return None


def energy_from_trace(trace: pd.DataFrame, start_s: float | None = None,
                      end_s: float | None = None) -> tuple[float, str, str]:
    """(joules, source, note) from a monitor trace's power samples over [start_s, end_s] (unix time)."""
    if not len(trace):
        return math.nan, "", "no monitor samples"
    column = trace_power_column(trace)
    if column is None:
        return math.nan, "", "no power samples in the monitor trace"
    time = "unix_time_s" if "unix_time_s" in trace.columns else "elapsed_s"
    joules = integrate_power_mw(trace[time], trace[column], start_s, end_s)
    if not math.isfinite(joules):
        return math.nan, "", f"fewer than two {column} samples inside the measured window"
    what = "GPU board power (NVML samples)" if column == "power_gpu_mw" else f"board input rail {column} (tegrastats)"
    return joules, f"trace:{column}", f"{what}, trapezoid over the measured tasks"


def energy_columns(joules: float, tasks: int, batch_size: int, window_s: float, source: str, note: str) -> dict:
    """The energy columns of a latency row: total J, mJ per task and per image, mean W, source and note."""
    ok = joules is not None and math.isfinite(joules) and tasks > 0
    return {
        "energy_j": float(joules) if ok else math.nan,
        "energy_per_inference_mj": 1e3 * joules / tasks if ok else math.nan,
        "energy_per_image_mj": 1e3 * joules / (tasks * max(batch_size, 1)) if ok else math.nan,
        "average_power_w": joules / window_s if ok and window_s > 0 else math.nan,
        "energy_source": source if ok else "",
        "energy_note": note,
    }


# --- readers ---------------------------------------------------------------------------------------

def rapl_packages(root: str | Path = POWERCAP) -> list[Path]:
    """The package-level RAPL zones (``intel-rapl:<n>``, not their sub-zones) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists())


def read_rapl(zones: list[Path]) -> list[tuple[float, float]]:
    """(energy_uj, max_energy_range_uj) of each zone; raises OSError (e.g. PermissionError) when unreadable."""
    out = []
    for zone in zones:
        energy = float((zone / "energy_uj").read_text().strip())
        try:
            max_range = float((zone / "max_energy_range_uj").read_text().strip())
        except (OSError, ValueError):
            max_range = math.nan
        out.append((energy, max_range))
    return out


@dataclass
class EnergyMeter:
    """A counter read before and after the measured tasks; ``source`` '' means none (``note`` says why)."""

    source: str
    note: str
    _read: object = None
    _before: object = None
    _started: float = math.nan

    def start(self) -> None:
        import time

        self._started = time.time()
        if self._read is not None:
            try:
                self._before = self._read()
            except OSError as exc:
                self.note, self._read = f"{self.source} became unreadable: {exc}", None

    def stop(self) -> tuple[float, float, float]:
        """(joules or NaN, window start, window end) in unix seconds."""
        import time

        ended = time.time()
        if self._read is None or self._before is None:
            return math.nan, self._started, ended
        try:
            after = self._read()
        except OSError as exc:
            self.note = f"{self.source} became unreadable: {exc}"
            return math.nan, self._started, ended
        if self.source == "rapl":
            joules = sum(counter_delta(b[0], a[0], b[1] if math.isfinite(b[1]) else None)
                         for b, a in zip(self._before, after)) / 1e6
        else:
            joules = counter_delta(self._before, after) / 1e3
        return joules, self._started, ended


def _nvml_meter() -> EnergyMeter | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # no GPU, no driver, or a GPU without the counter (pre-Volta, Jetson)
        return None

    def read():
        try:
            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except pynvml.NVMLError as exc:
            raise OSError(str(exc)) from exc

    return EnergyMeter("nvml", "GPU board energy counter (NVML), read before and after the measured tasks", read)


def open_meter(powercap_root: str | Path = POWERCAP, use_nvml: bool = True) -> EnergyMeter:
    """The best energy counter readable here (NVML, then RAPL), or a meter with source '' and the reason."""
    if use_nvml:
        meter = _nvml_meter()
        if meter is not None:
            return meter
    zones = rapl_packages(powercap_root)
    if not zones:
        return EnergyMeter("", f"no energy counter: no NVML energy counter and no RAPL zones under {powercap_root}")
    try:
        read_rapl(zones)
    except OSError as exc:
        return EnergyMeter("", f"RAPL energy_uj under {powercap_root} is not readable ({exc.strerror or exc}); "
                               "run as root or grant read access to energy_uj")
    names = []
    for zone in zones:
        try:
            names.append((zone / "name").read_text().strip())
        except OSError:
            names.append(zone.name)
    return EnergyMeter("rapl", f"RAPL package energy ({', '.join(names)}): the whole socket, other processes "
                               "included, read before and after the measured tasks", lambda: read_rapl(zones))


def measured_energy(meter: EnergyMeter, reading: tuple[float, float, float], trace: pd.DataFrame, tasks: int,
                    batch_size: int) -> dict:
    """The energy columns of one latency run: the meter's counter if it read, else the trace's power samples."""
    joules, start, end = reading
    window = end - start if math.isfinite(start) else math.nan
    if math.isfinite(joules):
        return energy_columns(joules, tasks, batch_size, window, meter.source, meter.note)
    joules, source, note = energy_from_trace(trace, start if math.isfinite(start) else None, end)
    if math.isfinite(joules):
        return energy_columns(joules, tasks, batch_size, window, source, note)
    return energy_columns(math.nan, tasks, batch_size, window, "", f"{meter.note}; {note}")
