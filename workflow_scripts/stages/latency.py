"""The compressed-model latency benchmark (study Fig. 4), with trtexec-style statistics.

One inference task = one ``Runner.run`` call on a fixed batch of ``batch_size`` test images,
input already in memory; its wall time is the task latency (or, for a runner that exposes
``runtime_latency_s``, the runtime's own time of the call, as its vendor's benchmark tool reports it:
OpenVINO's ``InferRequest.latency``; the wall time is then kept as ``wall_*``/``latency_clock``) and
latency per image is that divided by ``batch_size``. Warm-up tasks are discarded; measured tasks continue until
``iterations``, ``min_duration_s`` (MLPerf LoadGen's minimum count and duration) and the count the
reported p99 needs (299 tasks for a 95% bound, :func:`statistics.tasks_needed`) are all reached,
bounded by ``max_duration_s``. Each row carries distribution-free 95% intervals of the median and
p99 (order statistics), the task count, and why the run was noisy (:mod:`workflow_scripts.measure.noise`).
The uncertainty that holds across runs comes from the interleaved rounds of
:mod:`workflow_scripts.stages.runoff`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.measure import statistics as st
from workflow_scripts.core.artifacts import write_parquet
from workflow_scripts.backends import get_backend
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.measure.energy import measured_energy, open_meter
from workflow_scripts.measure.monitor import make_monitor, summarize_resources
from workflow_scripts.measure.noise import CpuNoise, noise_reason
from workflow_scripts.core.progress import Progress
from workflow_scripts.core.provenance import with_provenance

log = logging.getLogger(__name__)


def engine_mb(backend: str, engine_path: str | Path) -> float:
    """The engine's size in MB, files beside it that belong to it included (OpenVINO's .bin weights)."""
    from workflow_scripts.core.registry import backend as backend_entry

    path = Path(engine_path)
    files = [path] + [path.with_suffix(f".{ext}") for ext in backend_entry(backend).companions]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def measure(run, batch: np.ndarray, warmup: int, iterations: int, min_duration_s: float,
            max_iterations: int = 1_000_000, on_measure_start=None, tasks_needed: int = 0,
            max_duration_s: float = float("inf"), runtime_timer=None, wall: list | None = None) -> np.ndarray:
    """Latency in seconds of each measured call of ``run(batch)`` (warm-ups excluded).

    With ``runtime_timer`` (the runner's ``runtime_latency_s``: the runtime's own time of the call just
    made, as OpenVINO's benchmark_app reports it) a task's latency is that time, and the wall time
    around ``run`` is appended to ``wall``; without it, the wall time is the latency.

    Measuring continues until ``iterations``, ``tasks_needed`` (the count the reported percentile
    needs, :func:`statistics.tasks_needed`) and ``min_duration_s`` of task time are all reached, and
    stops earlier only at ``max_duration_s`` of wall time (then the row says what is missing).
    ``on_measure_start`` is called after the warm-ups, just before the first measured task (the
    energy meter starts there, so energy covers the measured tasks only).
    """
    for _ in range(warmup):
        run(batch)
    if on_measure_start is not None:
        on_measure_start()
    samples = []
    clock = time.perf_counter
    measured = 0.0
    count = max(iterations, tasks_needed)
    progress = Progress(log, "measuring latency", unit="tasks")
    started = clock()
    # Progress every ~10 s, checked against the task's own clock reading (nothing added inside a task).
    next_report = started + progress.every_s
    while len(samples) < max_iterations:
        t0 = clock()
        run(batch)
        around = clock() - t0
        elapsed = around
        if runtime_timer is not None:
            elapsed = runtime_timer()
            if wall is not None:
                wall.append(around)
        samples.append(elapsed)
        measured += elapsed
        if t0 + around >= next_report:
            next_report = t0 + around + progress.every_s
            share = min(len(samples) / count if count else 1.0, measured / min_duration_s if min_duration_s > 0 else 1.0)
            progress.update(len(samples), f"until {count} tasks and {min_duration_s:g} s of task time"
                            + (f" (at most {max_duration_s:g} s)" if np.isfinite(max_duration_s) else ""),
                            fraction=share)
        # The minimum duration counts task time, the same sum the validity rule checks.
        if len(samples) >= count and measured >= min_duration_s:
            break
        if t0 + around - started >= max_duration_s:
            log.warning("stopped at benchmark.max_duration_s=%g s after %d tasks (wanted %d and %g s of tasks)",
                        max_duration_s, len(samples), count, min_duration_s)
            break
    return np.asarray(samples)


def summarize_latency(samples_s: np.ndarray, batch_size: int) -> dict:
    """Task latency (ms): mean, median and p99 with order-statistic 95% CIs, p90, min, max, std, CV,
    IQR/median; per-image latency and throughput. NaN samples are left out and counted."""
    raw = np.asarray(samples_s, dtype=float) * 1e3
    ms = raw[np.isfinite(raw)]
    n = len(ms)
    nan = float("nan")
    mean = float(ms.mean()) if n else nan
    std = float(ms.std(ddof=1)) if n > 1 else 0.0
    out = {
        "iterations": int(n),
        "latency_mean_ms": mean,
        "latency_min_ms": float(ms.min()) if n else nan,
        "latency_max_ms": float(ms.max()) if n else nan,
        "latency_std_ms": std,
        "latency_cv": std / mean if n and mean > 0 else nan,
        "latency_iqr_ratio": st.robust_dispersion(ms),
        "throughput_images_per_s": batch_size * n / (ms.sum() / 1e3) if n else nan,
        "measured_duration_s": float(ms.sum() / 1e3),
    }
    out.update(st.latency_statistics(raw, batch_size))
    out["latency_per_image_median_ms"] = out["latency_median_ms"] / batch_size
    return out


RUNTIME_CLOCK = "runtime"  # latency_clock of rows timed by the runtime itself (OpenVINO's InferRequest.latency)
WALL_CLOCK = "wall"  # latency_clock of rows timed around Runner.run (time.perf_counter)


def timing_columns(samples_s: np.ndarray, wall_s: list | None) -> dict:
    """How a row's task latencies were timed (``latency_clock``) and the wall time around ``Runner.run``
    (``wall_median_ms``, ``wall_p99_ms``: what a Python caller waits, the harness included)."""
    wall = np.asarray(wall_s if wall_s else samples_s, dtype=float) * 1e3
    wall = wall[np.isfinite(wall)]
    return {"latency_clock": RUNTIME_CLOCK if wall_s else WALL_CLOCK,
            "wall_median_ms": float(np.median(wall)) if len(wall) else float("nan"),
            "wall_p99_ms": float(np.percentile(wall, 99)) if len(wall) else float("nan")}


def measure_round(module, engine_path: str | Path, threads: int, batch: np.ndarray, warmup: int, iterations: int,
                  min_duration_s: float, max_duration_s: float = float("inf"),
                  tasks_needed: int = 0, timing: dict | None = None,
                  clock: str = RUNTIME_CLOCK) -> tuple[np.ndarray, float, dict]:
    """One round: load a fresh runner, warm up, measure; (samples in s, load time in s, CPU noise).
    ``timing`` (a dict) receives :func:`timing_columns`. ``clock`` ``wall`` returns the wall time around
    ``Runner.run`` as the samples for every runner (one clock for all backends: the runoff, which ranks
    backends against each other); ``runtime`` uses a runner's own per-call timer where it has one."""
    if hasattr(module, "check"):
        module.check(engine_path)  # the digest check outside the timed load (later rounds only stat the files)
    started = time.perf_counter()
    runner = module.load_runner(engine_path, threads)
    load_s = time.perf_counter() - started
    wall: list = []
    try:
        with CpuNoise() as noise:
            samples = measure(runner.run, batch, warmup, iterations, min_duration_s, tasks_needed=tasks_needed,
                              max_duration_s=max_duration_s,
                              runtime_timer=(getattr(runner, "runtime_latency_s", None)
                                             if clock == RUNTIME_CLOCK else None), wall=wall)
    finally:
        runner.close()
    if timing is not None:
        timing.update(timing_columns(samples, wall))
    return samples, load_s, noise.result


def validity(summary: dict, iterations: int, min_duration_s: float) -> tuple[bool, str]:
    """(valid, why not): enough finite tasks and task time, and a finite median."""
    why = []
    if summary.get("latency_nan_samples", 0):
        why.append(f"{summary['latency_nan_samples']} NaN samples")
    if not np.isfinite(summary.get("latency_median_ms", np.nan)):
        why.append("no finite median")
    if summary["iterations"] < iterations:
        why.append(f"{summary['iterations']} tasks < benchmark.iterations={iterations}")
    if summary["measured_duration_s"] < min_duration_s:
        why.append(f"{summary['measured_duration_s']:.2f} s of tasks < benchmark.min_duration_s={min_duration_s:g}")
    return not why, "; ".join(why)


def device_breakdown(runner, batch: np.ndarray, iterations: int) -> dict[str, float]:
    """Medians of host-to-device copy, compute and device-to-host copy (ms), where the runner can time them.

    Like trtexec, these come from a separate pass with CUDA events, so the events never
    perturb the wall-clock samples. CPU runners have no such split and return nothing.
    """
    if not hasattr(runner, "timed_infer"):
        return {}
    parts = [runner.timed_infer(batch) for _ in range(iterations)]
    return {
        "h2d_median_ms": float(np.median([p.h2d_ms for p in parts])),
        "compute_median_ms": float(np.median([p.compute_ms for p in parts])),
        "d2h_median_ms": float(np.median([p.d2h_ms for p in parts])),
    }


def benchmark_latency(backend: str, engine_path: str | Path, data_dir: str | Path, batch_size: int, warmup: int,
                      iterations: int, min_duration_s: float, threads: int, monitor_interval_s: float,
                      summary_path: str | Path, samples_path: str | Path, resources_path: str | Path,
                      labels: dict, provenance: dict, max_duration_s: float = 60.0) -> dict:
    """Load the engine, warm up, measure with the monitor running; write summary, raw samples and resources."""
    module = get_backend(backend)
    batch, _ = next(iter_batches(data_dir, "test", batch_size))
    if len(batch) < batch_size:
        raise ValueError(f"the test split has {len(batch)} images, fewer than benchmark.batch_size={batch_size}")
    module.check(engine_path)  # the digest check (engine_check) outside the timed load
    load_started = time.perf_counter()
    runner = module.load_runner(engine_path, threads)
    load_s = time.perf_counter() - load_started
    monitor = make_monitor(monitor_interval_s)
    meter = open_meter()
    needed = st.tasks_needed(0.99)
    wall: list = []
    with monitor, CpuNoise() as noise:
        samples = measure(runner.run, batch, warmup, iterations, min_duration_s, on_measure_start=meter.start,
                          tasks_needed=needed, max_duration_s=max_duration_s,
                          runtime_timer=getattr(runner, "runtime_latency_s", None), wall=wall)
        reading = meter.stop()
    breakdown = device_breakdown(runner, batch, iterations)
    runner.close()
    summary = summarize_latency(samples, batch_size)
    summary.update(breakdown)
    summary.update(timing_columns(samples, wall))
    valid, invalid_reason = validity(summary, iterations, min_duration_s)
    summary.update(labels)
    summary.update(noise.result)
    noisy, reason = noise_reason(summary["latency_iqr_ratio"], summary["cpu_steal_percent"],
                                 summary["other_processes_cores"])
    summary.update({
        "batch_size": batch_size, "warmup": warmup, "min_iterations": iterations, "min_duration_s": min_duration_s,
        "max_duration_s": max_duration_s, "threads": threads, "load_s": load_s, "valid": valid,
        "invalid_reason": invalid_reason, "engine_mb": engine_mb(backend, engine_path),
        "high_variation": noisy, "noise_reason": reason,
    })
    if noisy:
        log.warning("noisy latency run: %s", reason)
    if summary["latency_p99_note"]:
        log.warning("%s (benchmark.max_duration_s=%g s reached first)", summary["latency_p99_note"], max_duration_s)
    resources = monitor.frame()
    summary.update(summarize_resources(resources))
    # Energy over the measured tasks: a counter (NVML, RAPL) or the trace's power samples; else empty, with why.
    summary.update(measured_energy(meter, reading, resources, summary["iterations"], batch_size))
    if summary["energy_source"]:
        log.info("energy %.3f mJ per inference (%s)", summary["energy_per_inference_mj"], summary["energy_source"])
    log.info("median %.3f ms [%.3f, %.3f], p99 %.3f ms [%.3f, %.3f] over %d tasks; %s",
             summary["latency_median_ms"], summary["latency_median_ci_low_ms"], summary["latency_median_ci_high_ms"],
             summary["latency_p99_ms"], summary["latency_p99_ci_low_ms"], summary["latency_p99_ci_high_ms"],
             summary["iterations"], reason)
    write_parquet(with_provenance(pd.DataFrame([summary]), provenance), summary_path)
    raw = pd.DataFrame({"iteration": np.arange(len(samples)), "latency_ms": samples * 1e3,
                        "wall_ms": np.asarray(wall if wall else samples, dtype=float) * 1e3})
    for key, value in labels.items():
        raw[key] = value
    write_parquet(with_provenance(raw, provenance), samples_path)
    for key, value in labels.items():
        resources[key] = value
    write_parquet(with_provenance(resources, provenance), resources_path)
    return summary
