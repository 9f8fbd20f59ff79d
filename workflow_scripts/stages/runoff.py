"""The latency runoff: every engine of one (device, dataset, model) re-measured in interleaved rounds.

Single measurements of an engine move between runs (drift, clocks, noisy neighbours) by far more
than the within-run interval of their median. The runoff measures the candidates of one model in
``rounds`` rounds, each round visiting every engine once in a rotated order (A B C, B C A, C A B,
...) with a freshly loaded runner (Google Benchmark's repetitions, pyperf's several processes), so
drift hits every candidate alike and position in the round is balanced. Each visit measures until
the runoff's minimum task time and the 299 tasks p99 needs (:func:`statistics.tasks_needed`), bounded
by ``benchmark.max_duration_s``.

The per-round values are what :func:`round_statistics` turns into the latency uncertainty that holds
across runs: the median over rounds with its distribution-free 95% interval (order statistics of
the round values; 6 rounds give [min, max] at 96.9%), and the ratio to FP32 paired by round. The
decision (:mod:`workflow_scripts.decision.decide`) compares candidates paired by round.

The table ``<device>/onnx/<dataset>_<size>px/<model>/latency_runoff.parquet`` (the model's device
folder) holds one row per round and engine.
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
from workflow_scripts.stages.latency import WALL_CLOCK, measure_round, summarize_latency
from workflow_scripts.measure.noise import noise_reason
from workflow_scripts.core.progress import Progress
from workflow_scripts.core.provenance import with_provenance

log = logging.getLogger(__name__)
ENGINE_KEYS = ["device", "backend", "dataset", "model", "precision"]


def round_order(engines: list, round_index: int) -> list:
    """The engines of round ``round_index`` (0-based): rotated by the round, so each engine takes
    every position equally often (A B C, B C A, C A B; two engines: A B, B A)."""
    if not engines:
        return []
    shift = round_index % len(engines)
    return engines[shift:] + engines[:shift]


def run_runoff(engines: list[dict], data_dir: str | Path, batch_size: int, threads: int, rounds: int, warmup: int,
               min_duration_s: float, max_duration_s: float, out_path: str | Path, labels: dict,
               provenance: dict) -> pd.DataFrame:
    """Measure ``engines`` (dicts with backend, precision, path) in ``rounds`` interleaved rounds; write one row
    per round and engine to ``out_path``."""
    if not engines:
        raise ValueError("the runoff has no engines to measure")
    batch, _ = next(iter_batches(data_dir, "test", batch_size))
    if len(batch) < batch_size:
        raise ValueError(f"the test split has {len(batch)} images, fewer than benchmark.batch_size={batch_size}")
    needed = st.tasks_needed(0.99)
    rows = []
    started = time.perf_counter()
    progress = Progress(log, "latency runoff", total=rounds * len(engines), unit="measurements")
    for r in range(rounds):
        for position, engine in enumerate(round_order(list(engines), r)):
            timing: dict = {}  # latency_clock, wall_median_ms, wall_p99_ms
            # One clock for every backend (the wall time around Runner.run): the runoff ranks backends
            # against each other, and only some runtimes have a per-call timer of their own.
            samples, load_s, noise = measure_round(get_backend(engine["backend"]), engine["path"], threads, batch,
                                                   warmup, 1, min_duration_s, max_duration_s, needed, timing,
                                                   clock=WALL_CLOCK)
            summary = summarize_latency(samples, batch_size)
            noisy, reason = noise_reason(summary["latency_iqr_ratio"], noise["cpu_steal_percent"],
                                         noise["other_processes_cores"])
            rows.append({**labels, "backend": engine["backend"], "precision": engine["precision"], "round": r,
                         "position": position, "load_s": load_s, "tasks": summary["iterations"],
                         "nan_samples": summary["latency_nan_samples"],
                         "latency_median_ms": summary["latency_median_ms"],
                         "latency_p99_ms": summary["latency_p99_ms"],
                         "latency_p99_supported": summary["latency_p99_supported"],
                         "latency_iqr_ratio": summary["latency_iqr_ratio"],
                         "measured_duration_s": summary["measured_duration_s"], **timing, **noise,
                         "high_variation": noisy, "noise_reason": reason, "batch_size": batch_size,
                         "threads": threads, "rounds": rounds})
            # Every measurement goes to the job's log file; the console gets progress lines (every ~10 s or 10%).
            log.info("round %d/%d %s %s: median %.4f ms, p99 %.4f ms, %d tasks; %s", r + 1, rounds,
                     engine["backend"], engine["precision"], summary["latency_median_ms"], summary["latency_p99_ms"],
                     summary["iterations"], reason, extra={"console": False})
            progress.update(len(rows), f"round {r + 1}/{rounds}")
    log.info("runoff of %d engines x %d rounds took %.1f s", len(engines), rounds, time.perf_counter() - started)
    frame = pd.DataFrame(rows)
    # Provenance names the job's backend ('runoff'); each row keeps the backend of its engine.
    written = with_provenance(frame, provenance).assign(backend=frame["backend"].to_numpy())
    write_parquet(written, out_path)
    return written


def _by_round(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rounds x engines table of ``column`` (engines as (backend, precision) columns)."""
    return frame.pivot_table(index="round", columns=["backend", "precision"], values=column, aggfunc="first")


ROUND_COLUMNS = ["rounds", "latency_median_rounds_ms", "latency_median_rounds_ci_low_ms",
                 "latency_median_rounds_ci_high_ms", "latency_p99_rounds_ms", "latency_p99_rounds_ci_low_ms",
                 "latency_p99_rounds_ci_high_ms", "latency_median_vs_fp32_rounds",
                 "latency_median_vs_fp32_rounds_ci_low", "latency_median_vs_fp32_rounds_ci_high",
                 "runoff_cpu_steal_percent_mean", "runoff_other_processes_cores_mean", "runoff_noise_reason"]


def round_statistics(runoff: pd.DataFrame) -> pd.DataFrame:
    """Per engine: rounds, the median over rounds of its median and p99 with their order-statistic 95% CIs,
    its median / the same backend's FP32 median paired by round (median ratio and CI), and the noise seen."""
    if not len(runoff):
        return pd.DataFrame(columns=ENGINE_KEYS + ROUND_COLUMNS)
    group_keys = [k for k in ("device", "dataset", "input_size", "model") if k in runoff.columns]
    rows = []
    for key, model_rows in runoff.groupby(group_keys, dropna=False, sort=False):
        medians = _by_round(model_rows, "latency_median_ms")
        p99s = _by_round(model_rows, "latency_p99_ms")
        for (backend, precision), column in medians.items():
            med, med_low, med_high = st.rounds_interval(column)
            p99, p99_low, p99_high = st.rounds_interval(p99s[(backend, precision)]) \
                if (backend, precision) in p99s else (np.nan,) * 3
            ratio = (np.nan,) * 3
            if (backend, "fp32") in medians:
                ratio = st.rounds_interval(column / medians[(backend, "fp32")])
            mine = model_rows[(model_rows["backend"] == backend) & (model_rows["precision"] == precision)]
            steal = float(mine["cpu_steal_percent"].mean())
            other = float(mine["other_processes_cores"].mean())
            spread = (med_high - med_low) / med if np.isfinite(med_low) and med > 0 else np.nan
            noisy, reason = noise_reason(float(mine["latency_iqr_ratio"].median()), steal, other)
            rows.append({**dict(zip(group_keys, key if isinstance(key, tuple) else (key,))), "backend": backend,
                         "precision": precision, "rounds": int(column.notna().sum()),
                         "latency_median_rounds_ms": med, "latency_median_rounds_ci_low_ms": med_low,
                         "latency_median_rounds_ci_high_ms": med_high, "latency_p99_rounds_ms": p99,
                         "latency_p99_rounds_ci_low_ms": p99_low, "latency_p99_rounds_ci_high_ms": p99_high,
                         "latency_median_vs_fp32_rounds": ratio[0], "latency_median_vs_fp32_rounds_ci_low": ratio[1],
                         "latency_median_vs_fp32_rounds_ci_high": ratio[2], "runoff_cpu_steal_percent_mean": steal,
                         "runoff_other_processes_cores_mean": other,
                         "runoff_noise_reason": reason + (f"; median spread over rounds {spread:.0%}"
                                                          if np.isfinite(spread) else "")})
    return pd.DataFrame(rows)


def paired_rounds(runoff: pd.DataFrame, group: dict, column: str) -> pd.DataFrame:
    """Rounds x engines of ``column`` for one (device, dataset, [input_size,] model) group."""
    mask = pd.Series(True, index=runoff.index)
    for key, value in group.items():
        if key in runoff.columns:
            mask &= runoff[key] == value
    return _by_round(runoff[mask], column) if mask.any() else pd.DataFrame()


RUNOFF_FILE = "latency_runoff.parquet"


def find_runoff_files(results_dir: str | Path, current: list[str] | None = None,
                      ignore_folders: list[str] | None = None) -> list[str]:
    """The runoff tables of the current config plus every device's found under ``results_dir``."""
    from workflow_scripts.core.paths import RESERVED

    found = list(current or [])
    if results_dir is not None:
        found += sorted(str(p) for p in Path(results_dir).glob(f"*/onnx/*/*/{RUNOFF_FILE}")
                        if p.relative_to(results_dir).parts[0] not in set(RESERVED) | set(ignore_folders or []))
    seen, out = set(), []
    for path in found:
        key = str(Path(path).resolve())
        if key not in seen and Path(path).is_file():
            seen.add(key)
            out.append(path)
    return out


def read_runoff(files: list[str], results_dir: str | Path | None = None) -> pd.DataFrame:
    """The runoff rows of ``files``; the device is the folder each was found in (as for every table)."""
    from workflow_scripts.core.errors import CorruptArtifact

    frames = []
    for path in files:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 (pyarrow raises several types)
            raise CorruptArtifact(f"runoff table {path} is unreadable ({type(exc).__name__}); remake it with "
                                  f"snakemake --cores 2 --forcerun benchmark_latency_runoff") from exc
        if results_dir is not None:
            frame["device"] = Path(path).resolve().relative_to(Path(results_dir).resolve()).parts[0]
        if "backend" in frame.columns and (frame["backend"] == "runoff").any():
            # An early version labelled every row with the job's provenance backend: which engine a
            # row measured is unknown, so the rows are left out rather than guessed.
            log.warning("runoff table %s has rows without their engine's backend (written by an earlier version); "
                        "left out. Remeasure with: snakemake --cores 2 --forcerun benchmark_latency_runoff", path)
            frame = frame[frame["backend"] != "runoff"]
        frames.append(frame)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def merge_round_statistics(latency: pd.DataFrame, runoff: pd.DataFrame) -> pd.DataFrame:
    """``latency`` rows with the runoff's between-round columns (:data:`ROUND_COLUMNS`; NaN without a runoff)."""
    stats_ = round_statistics(runoff)
    on = [k for k in ("device", "backend", "dataset", "model", "precision", "input_size")
          if k in latency.columns and k in stats_.columns]
    out = latency.drop(columns=[c for c in ROUND_COLUMNS if c in latency.columns])
    if len(stats_) and len(out):
        stats_ = stats_.drop_duplicates(on, keep="last")
        for key in on:
            if key == "input_size":
                stats_[key] = pd.to_numeric(stats_[key], errors="coerce").astype("Int64")
                out[key] = pd.to_numeric(out[key], errors="coerce").astype("Int64")
        out = out.merge(stats_[on + ROUND_COLUMNS], on=on, how="left")
    for column in ROUND_COLUMNS:
        if column not in out.columns:
            out[column] = np.nan
    out["rounds"] = pd.to_numeric(out["rounds"], errors="coerce").fillna(0).astype(int)
    out["runoff_noise_reason"] = out["runoff_noise_reason"].astype("object").fillna("no runoff")
    return out
