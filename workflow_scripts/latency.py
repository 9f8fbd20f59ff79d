"""The compressed-model latency benchmark (study Fig. 4), with trtexec-style statistics.

One inference task = one ``Runner.run`` call on a fixed batch of ``batch_size`` test images,
input already in memory; its wall time is the task latency and latency per image is that
divided by ``batch_size``. Warm-up tasks are discarded; measured tasks continue until both
``iterations`` and ``min_duration_s`` are reached (MLPerf LoadGen's minimum count and duration).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import write_parquet
from .backends import get_backend
from .data_io import iter_batches
from .energy import measured_energy, open_meter
from .monitor import make_monitor, summarize_resources
from .provenance import with_provenance

log = logging.getLogger(__name__)
CV_WARNING = 0.10


def engine_mb(backend: str, engine_path: str | Path) -> float:
    """The engine's size in MB, files beside it that belong to it included (OpenVINO's .bin weights)."""
    from .registry import backend as backend_entry

    path = Path(engine_path)
    files = [path] + [path.with_suffix(f".{ext}") for ext in backend_entry(backend).companions]
    return sum(f.stat().st_size for f in files if f.exists()) / 1e6


def measure(run, batch: np.ndarray, warmup: int, iterations: int, min_duration_s: float,
            max_iterations: int = 1_000_000, on_measure_start=None) -> np.ndarray:
    """Latency in seconds of each measured call of ``run(batch)`` (warm-ups excluded).

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
    while len(samples) < max_iterations:
        t0 = clock()
        run(batch)
        elapsed = clock() - t0
        samples.append(elapsed)
        measured += elapsed
        # The minimum duration counts task time, the same sum the validity rule checks.
        if len(samples) >= iterations and measured >= min_duration_s:
            break
    return np.asarray(samples)


def summarize_latency(samples_s: np.ndarray, batch_size: int) -> dict[str, float]:
    """Mean, median, p90, p99, min, max, std and CV of task latency (ms), per-image latency and throughput."""
    ms = np.asarray(samples_s, dtype=float) * 1e3
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if len(ms) > 1 else 0.0
    return {
        "iterations": int(len(ms)),
        "latency_mean_ms": mean,
        "latency_median_ms": float(np.median(ms)),
        "latency_p90_ms": float(np.percentile(ms, 90)),
        "latency_p99_ms": float(np.percentile(ms, 99)),
        "latency_min_ms": float(ms.min()),
        "latency_max_ms": float(ms.max()),
        "latency_std_ms": std,
        "latency_cv": std / mean if mean > 0 else float("nan"),
        "latency_per_image_median_ms": float(np.median(ms)) / batch_size,
        "throughput_images_per_s": batch_size * len(ms) / (ms.sum() / 1e3),
        "measured_duration_s": float(ms.sum() / 1e3),
    }


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
                      labels: dict, provenance: dict) -> dict:
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
    with monitor:
        samples = measure(runner.run, batch, warmup, iterations, min_duration_s, on_measure_start=meter.start)
        reading = meter.stop()
    breakdown = device_breakdown(runner, batch, iterations)
    runner.close()
    summary = summarize_latency(samples, batch_size)
    summary.update(breakdown)
    valid = summary["iterations"] >= iterations and summary["measured_duration_s"] >= min_duration_s
    summary.update(labels)
    summary.update({
        "batch_size": batch_size, "warmup": warmup, "min_iterations": iterations, "min_duration_s": min_duration_s,
        "threads": threads, "load_s": load_s, "valid": valid, "engine_mb": engine_mb(backend, engine_path),
        "high_variation": summary["latency_cv"] > CV_WARNING,
    })
    if summary["high_variation"]:
        log.warning("latency CV %.2f exceeds %.2f: the machine was busy or clocks varied", summary["latency_cv"], CV_WARNING)
    resources = monitor.frame()
    summary.update(summarize_resources(resources))
    # Energy over the measured tasks: a counter (NVML, RAPL) or the trace's power samples; else empty, with why.
    summary.update(measured_energy(meter, reading, resources, summary["iterations"], batch_size))
    if summary["energy_source"]:
        log.info("energy %.3f mJ per inference (%s)", summary["energy_per_inference_mj"], summary["energy_source"])
    log.info("median %.3f ms, p99 %.3f ms over %d tasks", summary["latency_median_ms"], summary["latency_p99_ms"],
             summary["iterations"])
    write_parquet(with_provenance(pd.DataFrame([summary]), provenance), summary_path)
    raw = pd.DataFrame({"iteration": np.arange(len(samples)), "latency_ms": samples * 1e3})
    for key, value in labels.items():
        raw[key] = value
    write_parquet(with_provenance(raw, provenance), samples_path)
    for key, value in labels.items():
        resources[key] = value
    write_parquet(with_provenance(resources, provenance), resources_path)
    return summary
