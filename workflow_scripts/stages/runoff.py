"""The latency runoff: every engine of one (device, dataset, model) re-measured in interleaved rounds.

Single measurements of an engine move between runs (drift, clocks, noisy neighbours) by far more
than the within-run interval of their median. The runoff measures the candidates of one model in
``rounds`` rounds, each round visiting every engine once in a rotated order (A B C, B C A, C A B,
...) with a freshly loaded runner (Google Benchmark's repetitions, pyperf's several processes), so
drift hits every candidate alike and position in the round is balanced. Each visit measures until
the runoff's minimum task time and the 299 tasks p99 needs (:func:`statistics.tasks_needed`), bounded
by ``benchmark.max_duration_s``.

**Successive elimination.** After these base rounds, engines already shown slower than the best (or
than another engine at a Bonferroni level), paired by round on the decision's latency metric
(:func:`statistics.finalists`: the ratio's interval wholly above 1 + ``decision.tie_margin``, stricter than
the decision's tie test, so nothing the decision could call tied is retired), are retired. The finalists (usually
2-3) get ``max_rounds - rounds`` more rounds, each a longer measurement (``final_duration_s`` of task
time per finalist, at most ``final_budget_s`` over the whole final phase, and at least the 299 tasks
p99 needs; no final round starts after ``final_max_s`` of wall time) taken in short slices interleaved within the round (A B C A B C ... with the runners of
every finalist loaded fresh for the round; :data:`SWITCH_WARMUP` tasks discarded after each switch), so
a burst of load hits every finalist of the round alike and each round's p99 rests on several times
more tasks. More rounds let the order-statistic interval tolerate discordant rounds (at 95%: 9 rounds
allow 1, 12 allow 2); rows say which phase measured them.

The per-round values are what :func:`round_statistics` turns into the latency uncertainty that holds
across runs: the median over rounds with its distribution-free 95% interval (order statistics of
the round values; 6 rounds give [min, max] at 96.9%), and the ratio to FP32 paired by round. The
decision (:mod:`workflow_scripts.decision.decide`) compares candidates paired by round.

The table ``<device>/onnx/<dataset>_<size>px/<model>/latency_runoff.parquet`` (the model's device
folder) holds one row per round and engine.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.measure import statistics as st
from workflow_scripts.measure.noise import CpuNoise
from workflow_scripts.core.artifacts import write_parquet
from workflow_scripts.backends import get_backend
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.latency import WALL_CLOCK, measure_round, summarize_latency, timing_columns
from workflow_scripts.measure.noise import noise_reason
from workflow_scripts.core.progress import Progress
from workflow_scripts.core.provenance import with_provenance

log = logging.getLogger(__name__)
ENGINE_KEYS = ["device", "backend", "dataset", "model", "precision"]
# Tasks run and discarded each time a final round switches to another finalist (caches refilled by the
# other engine's weights), on top of the round's warm-up.
SWITCH_WARMUP = 2
BASE, FINAL, EXTRA = "base", "final", "extra"
CLOCK = time.perf_counter  # the final rounds' task clock (a test replaces it)


def round_order(engines: list, round_index: int) -> list:
    """The engines of round ``round_index`` (0-based): rotated by the round, so each engine takes
    every position equally often (A B C, B C A, C A B; two engines: A B, B A)."""
    if not engines:
        return []
    shift = round_index % len(engines)
    return engines[shift:] + engines[:shift]


@contextlib.contextmanager
def _compile_caches(engines: list[dict]):
    """Inside: every backend of ``engines`` that can cache compiled models between loads (``compile_cache`` of
    its module: OpenVINO) does so in one temporary folder for the job, so the runners loaded fresh in each
    round skip recompiling; the folder is removed at the end."""
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="runoff-compile-cache-"))
        for name in sorted({e["backend"] for e in engines}):
            cache = getattr(get_backend(name), "compile_cache", None)
            if cache is not None:
                stack.enter_context(cache(folder))
        yield


def run_runoff(engines: list[dict], data_dir: str | Path, batch_size: int, threads: int, rounds: int, warmup: int,
               min_duration_s: float, max_duration_s: float, out_path: str | Path, labels: dict,
               provenance: dict, max_rounds: int | None = None, final_duration_s: float = 1.0,
               final_budget_s: float = 12.0, slice_s: float = 0.1, objective: str = "latency",
               tie_margin: float = 0.05, final_max_s: float = 20.0, extra_rounds: int = 0) -> pd.DataFrame:
    """Measure ``engines`` (dicts with backend, precision, path) in ``rounds`` interleaved base rounds, then the
    finalists (:func:`statistics.finalists` on ``objective``'s metric) in rounds up to ``max_rounds``
    (:func:`final_round`); write one row per round and engine to ``out_path``."""
    with _compile_caches(engines):
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
                             "threads": threads, "rounds": rounds, "phase": BASE, "slices": 1})
                # Every measurement goes to the job's log file; the console gets progress lines (every ~10 s or 10%).
                log.info("round %d/%d %s %s: median %.4f ms, p99 %.4f ms, %d tasks; %s", r + 1, rounds,
                         engine["backend"], engine["precision"], summary["latency_median_ms"],
                         summary["latency_p99_ms"], summary["iterations"], reason, extra={"console": False})
                progress.update(len(rows), f"round {r + 1}/{rounds}")
        log.info("runoff of %d engines x %d rounds took %.1f s", len(engines), rounds, time.perf_counter() - started)
        metric = st.RUNOFF_METRIC.get(objective)
        max_rounds = rounds if max_rounds is None else max_rounds
        if metric and max_rounds > rounds and len(engines) > 1:
            keep, retired = st.finalists(st.by_round(pd.DataFrame(rows), metric), tie_margin)
            for (backend, precision), (by, med, low, high, n) in retired.items():
                log.info("retired %s %s: %s ratio to %s %s %.3f [%.3f, %.3f] over %d paired rounds", backend, precision,
                         metric, by[0], by[1], med, low, high, n, extra={"console": False})
            finals = [e for e in engines if (e["backend"], e["precision"]) in set(keep)]
            if len(finals) > 1:
                extra = max_rounds - rounds
                visit_s = max(min_duration_s, min(final_duration_s, final_budget_s / (extra * len(finals))))
                log.info("final rounds %d-%d: %s, %.2f s of tasks each per round", rounds + 1, max_rounds,
                         ", ".join(f"{e['backend']} {e['precision']}" for e in finals), visit_s)
                final_started = time.perf_counter()
                common = dict(labels=labels, batch=batch, batch_size=batch_size, threads=threads, rounds=rounds,
                              warmup=warmup, visit_s=visit_s, slice_s=slice_s, max_duration_s=max_duration_s,
                              needed=needed, started=final_started, final_max_s=final_max_s)
                done = _final_rounds(rows, finals, range(rounds, max_rounds), FINAL, **common)
                log.info("final rounds of %d finalists took %.1f s", len(finals), time.perf_counter() - final_started)
                if done and extra_rounds > 0:
                    # Sequential step: when a finalist looks slower than the reference by more than the tie margin
                    # but its interval still reaches 1, every finalist gets extra rounds (all of them: the decision
                    # may compare with another finalist tied with this reference, e.g. when a budget drops it).
                    table = st.by_round(pd.DataFrame(rows), metric)
                    best, open_ = st.undecided(table[[(e["backend"], e["precision"]) for e in finals]], tie_margin)
                    if open_:
                        log.info("extra rounds %d-%d: %s undecided against %s %s (ratio above 1 + tie_margin, interval "
                                 "reaching 1)", max_rounds + 1, max_rounds + extra_rounds,
                                 ", ".join(f"{b} {q}" for b, q in open_), best[0], best[1])
                        _final_rounds(rows, finals, range(max_rounds, max_rounds + extra_rounds), EXTRA, **common)
                        log.info("final and extra rounds took %.1f s", time.perf_counter() - final_started)
            else:
                log.info("%d finalists after %d rounds (%s): no final rounds", len(keep), rounds,
                         ", ".join(f"{b} {q}" for b, q in keep))
        frame = pd.DataFrame(rows)
        # Provenance names the job's backend ('runoff'); each row keeps the backend of its engine.
        written = with_provenance(frame, provenance).assign(backend=frame["backend"].to_numpy())
        write_parquet(written, out_path)
        return written


def _final_rounds(rows: list, engines: list[dict], round_indices, phase: str, labels: dict, batch: np.ndarray,
                  batch_size: int, threads: int, rounds: int, warmup: int, visit_s: float, slice_s: float,
                  max_duration_s: float, needed: int, started: float, final_max_s: float) -> bool:
    """Append the rows of :func:`final_round` for each of ``round_indices`` (engines rotated by round) to
    ``rows``, labelled ``phase``; False when ``final_max_s`` of wall time since ``started`` stopped them."""
    last = round_indices[-1] + 1 if len(round_indices) else 0
    for r in round_indices:
        if time.perf_counter() - started >= final_max_s:
            log.warning("%s rounds stopped after round %d: runoff.final_max_s=%g s of wall time spent", phase, r,
                        final_max_s)
            return False
        for row in final_round(round_order(engines, r), batch, threads, warmup, visit_s, slice_s, max_duration_s,
                               needed):
            rows.append({**labels, **row, "round": r, "phase": phase, "batch_size": batch_size, "threads": threads,
                         "rounds": rounds})
            log.info("round %d/%d %s %s: median %.4f ms, p99 %.4f ms, %d tasks in %d slices", r + 1, last,
                     row["backend"], row["precision"], row["latency_median_ms"], row["latency_p99_ms"], row["tasks"],
                     row["slices"], extra={"console": False})
    return True


def final_round(engines: list[dict], batch: np.ndarray, threads: int, warmup: int, visit_s: float, slice_s: float,
                max_duration_s: float, needed: int, clock=None) -> list[dict]:
    """One final round: a fresh runner of every engine in ``engines`` (in this order), each warmed up, then
    slices of about ``slice_s`` of task time visited in turn (A B C A B C ...; :data:`SWITCH_WARMUP`
    tasks discarded after each switch) until every engine has ``visit_s`` of task time and ``needed``
    tasks, bounded by ``max_duration_s`` of wall time per engine. One row per engine: its pooled tasks'
    median and p99 (wall clock around ``Runner.run``), and the round's CPU noise (shared: interleaved). The
    caller labels the rows' ``phase`` (final or extra)."""
    clock = clock or CLOCK
    runners, load_s = [], []
    try:
        for engine in engines:
            module = get_backend(engine["backend"])
            if hasattr(module, "check"):
                module.check(engine["path"])
            started = clock()
            runners.append(module.load_runner(engine["path"], threads))
            load_s.append(clock() - started)
            for _ in range(warmup):
                runners[-1].run(batch)
        samples = [[] for _ in engines]
        task_time = [0.0] * len(engines)
        slices = [0] * len(engines)
        n_slices = max(1, math.ceil(visit_s / slice_s)) if slice_s > 0 else 1
        per_slice = visit_s / n_slices
        started = clock()
        with CpuNoise() as noise:
            while True:
                # An engine with its task time and the tasks p99 needs sits out the rest of the round.
                active = [i for i in range(len(engines)) if task_time[i] < visit_s or len(samples[i]) < needed]
                if not active:
                    break
                if clock() - started >= max_duration_s * len(engines):
                    log.warning("final round stopped at %d x benchmark.max_duration_s=%g s", len(engines),
                                max_duration_s)
                    break
                for i in active:
                    runner = runners[i]
                    slices[i] += 1
                    for _ in range(SWITCH_WARMUP):
                        runner.run(batch)
                    spent = 0.0
                    while spent < per_slice:
                        t0 = clock()
                        runner.run(batch)
                        elapsed = clock() - t0
                        samples[i].append(elapsed)
                        spent += elapsed
                    task_time[i] += spent
    finally:
        for runner in runners:
            runner.close()
    rows = []
    for position, (engine, x, load, turns) in enumerate(zip(engines, samples, load_s, slices)):
        summary = summarize_latency(np.asarray(x), len(batch))
        noisy, reason = noise_reason(summary["latency_iqr_ratio"], noise.result["cpu_steal_percent"],
                                     noise.result["other_processes_cores"])
        rows.append({"backend": engine["backend"], "precision": engine["precision"], "position": position,
                     "load_s": load, "tasks": summary["iterations"], "nan_samples": summary["latency_nan_samples"],
                     "latency_median_ms": summary["latency_median_ms"], "latency_p99_ms": summary["latency_p99_ms"],
                     "latency_p99_supported": summary["latency_p99_supported"],
                     "latency_iqr_ratio": summary["latency_iqr_ratio"],
                     "measured_duration_s": summary["measured_duration_s"], **timing_columns(np.asarray(x), None),
                     **noise.result, "high_variation": noisy, "noise_reason": reason, "slices": turns})
    return rows


ROUND_COLUMNS = ["rounds", "latency_median_rounds_ms", "latency_median_rounds_ci_low_ms",
                 "latency_median_rounds_ci_high_ms", "latency_p99_rounds_ms", "latency_p99_rounds_ci_low_ms",
                 "latency_p99_rounds_ci_high_ms", "latency_median_vs_fp32_rounds",
                 "latency_median_vs_fp32_rounds_ci_low", "latency_median_vs_fp32_rounds_ci_high",
                 "runoff_cpu_steal_percent_mean", "runoff_other_processes_cores_mean", "runoff_high_variation",
                 "runoff_noise_reason"]


def round_statistics(runoff: pd.DataFrame) -> pd.DataFrame:
    """Per engine: rounds, the median over rounds of its median and p99 with their order-statistic 95% CIs,
    its median / the same backend's FP32 median paired by round (median ratio and CI), and the noise seen:
    ``runoff_high_variation`` when the median over rounds of each round's IQR/median exceeds 0.10, with the
    steal and other processes' CPU of its rounds in ``runoff_noise_reason``."""
    if not len(runoff):
        return pd.DataFrame(columns=ENGINE_KEYS + ROUND_COLUMNS)
    group_keys = [k for k in ("device", "dataset", "input_size", "model") if k in runoff.columns]
    rows = []
    for key, model_rows in runoff.groupby(group_keys, dropna=False, sort=False):
        medians = st.by_round(model_rows, "latency_median_ms")
        p99s = st.by_round(model_rows, "latency_p99_ms")
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
                         "runoff_other_processes_cores_mean": other, "runoff_high_variation": noisy,
                         "runoff_noise_reason": reason + (f"; median spread over rounds {spread:.0%}"
                                                          if np.isfinite(spread) else "")})
    return pd.DataFrame(rows)


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
    out["runoff_high_variation"] = out["runoff_high_variation"].astype("object").fillna(False).astype(bool)
    out["runoff_noise_reason"] = out["runoff_noise_reason"].astype("object").fillna("no runoff")
    return out
