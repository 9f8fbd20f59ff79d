"""Which engine to deploy: budgets (constraints) and an objective over every measured engine.

Modelled on Triton Model Analyzer's *constraints* and *objectives*: every engine (backend x
precision) of a device, dataset and model is a candidate; a candidate that breaks any budget is
rejected, naming each budget it breaks and by how much; among the rest the objective picks one.

Budgets (all optional; ``None`` means not constrained):

- ``p99_ms``: 99th percentile task latency (ms) at most this.
- ``max_mb``: engine file size (MB) at most this.
- ``max_drop_points``: top-1 drop versus the FP32 engine of the same backend, in points, judged by
  its paired bootstrap 95% interval: by default the *upper* bound must be at most the budget
  (``drop_bound="ci_high"``), so a drop that might exceed the budget is rejected; ``"point"``
  judges the point estimate only.
- ``max_rss_mb``: peak process RSS (MB) during the latency run.
- ``max_energy_mj``: energy per inference task (mJ), only where energy was measured; elsewhere the
  budget is reported as not checked, with the reason, and never rejects.
- ``require_valid``: reject latency runs that missed their minimum task count or duration.

Objectives (``objective``): ``latency`` (lowest p99, the default), ``p50`` (lowest median),
``throughput``, ``size`` (smallest engine), ``accuracy`` (highest top-1), ``memory`` (lowest peak
RSS), ``energy``. A tie within measurement noise on a latency objective is narrowed by the other latency
percentile (the median for p99), then falls to size, then accuracy (:mod:`workflow_scripts.decision.ties`).

:func:`decide` returns one row per candidate; :func:`decision_markdown` renders it. The CLI
``python -m workflow_scripts.cli results/summary --p99-ms 5 --max-drop 1.0`` answers ad-hoc
budgets from a summary folder.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.decision.ties import break_ties, machine_note
from workflow_scripts.decision.budgets import (  # noqa: F401 (re-exported: the decision's public names)
    ENGINE,
    GROUP,
    OBJECTIVES,
    PRECISION_ORDER,
    TIE_BREAKERS,
    Budgets,
)
from workflow_scripts.decision.render import decision_markdown


def _column(frame: pd.DataFrame, name: str, default=np.nan) -> pd.Series:
    return frame[name] if name in frame.columns else pd.Series(default, index=frame.index)


def engine_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per engine (device, backend, dataset, input size, model, precision) with what a decision needs.

    Columns: p50_ms, p99_ms (and their sources' CIs), throughput_images_per_s, engine_mb,
    top1_percent with its Wilson interval, drop_points with its paired interval, rss_peak_mb,
    energy_per_inference_mj and energy_note, valid, high_variation, latency_cv, fp32_valid.
    """
    latency = tables.get("latency", pd.DataFrame())
    if not len(latency):
        return pd.DataFrame(columns=GROUP + ENGINE)
    latency = latency[latency["precision"].isin(PRECISION_ORDER)]
    keys = [k for k in GROUP + ENGINE if k in latency.columns]
    out = pd.DataFrame({k: latency[k] for k in keys})
    if "input_size" not in out.columns:
        out["input_size"] = 0
    # Where the runoff measured the model's engines interleaved in rounds, its medians over rounds and
    # their between-round 95% intervals are the values ranked; else the single run's, with its
    # order-statistic intervals (latency_source says which).
    rounds = pd.to_numeric(_column(latency, "rounds", 0), errors="coerce").fillna(0).astype(int)
    runoff = (rounds > 0) & pd.to_numeric(_column(latency, "latency_median_rounds_ms"), errors="coerce").notna()
    for name, single, across in (("p50_ms", "latency_median_ms", "latency_median_rounds_ms"),
                                 ("p50_ci_low_ms", "latency_median_ci_low_ms", "latency_median_rounds_ci_low_ms"),
                                 ("p50_ci_high_ms", "latency_median_ci_high_ms", "latency_median_rounds_ci_high_ms"),
                                 ("p99_ms", "latency_p99_ms", "latency_p99_rounds_ms"),
                                 ("p99_ci_low_ms", "latency_p99_ci_low_ms", "latency_p99_rounds_ci_low_ms"),
                                 ("p99_ci_high_ms", "latency_p99_ci_high_ms", "latency_p99_rounds_ci_high_ms")):
        out[name] = pd.to_numeric(_column(latency, across), errors="coerce").where(
            runoff, pd.to_numeric(_column(latency, single), errors="coerce"))
    out["rounds"] = rounds
    out["latency_source"] = np.where(runoff, rounds.astype(str) + " interleaved rounds", "single run")
    out["tasks"] = pd.to_numeric(_column(latency, "latency_samples", np.nan), errors="coerce")
    out["p99_note"] = _column(latency, "latency_p99_note", "").fillna("").astype(str)
    # The noise flag and its reason describe the measurement the latency values come from: the runoff's
    # rounds where it ran (the median over rounds of each round's IQR/median), else the single run.
    out["noise_reason"] = _column(latency, "runoff_noise_reason", "").astype("object").fillna("").astype(str).where(
        runoff, _column(latency, "noise_reason", "").fillna("").astype(str))
    out["throughput_images_per_s"] = _column(latency, "throughput_images_per_s")
    out["engine_mb"] = _column(latency, "engine_mb")
    out["rss_peak_mb"] = _column(latency, "rss_mb_peak")
    out["energy_per_inference_mj"] = pd.to_numeric(_column(latency, "energy_per_inference_mj"), errors="coerce")
    out["energy_note"] = _column(latency, "energy_note", "energy not recorded by this version of the benchmark") \
        .fillna("").astype(str)
    out["valid"] = _column(latency, "valid", True).fillna(True).astype(bool)
    out["fp32_valid"] = _column(latency, "fp32_valid", True).astype("object").fillna(True).astype(bool)
    out["high_variation"] = _column(latency, "runoff_high_variation", False).astype("object").fillna(False) \
        .astype(bool).where(runoff, _column(latency, "high_variation", False).fillna(False).astype(bool))
    out["latency_cv"] = _column(latency, "latency_cv")
    accuracy = tables.get("accuracy", pd.DataFrame())
    acc_cols = {"top1_accuracy": "top1", "top1_ci_low": "top1_low", "top1_ci_high": "top1_high",
                "top1_drop_vs_fp32_points": "drop_points", "top1_drop_ci_low_points": "drop_ci_low_points",
                "top1_drop_ci_high_points": "drop_ci_high_points", "images": "test_images"}
    if len(accuracy):
        on = [k for k in keys if k in accuracy.columns]
        acc = accuracy[accuracy["precision"].isin(PRECISION_ORDER)]
        acc = acc[on + [c for c in acc_cols if c in acc.columns]].drop_duplicates(on).rename(columns=acc_cols)
        out = out.merge(acc, on=on, how="left")
    for name in acc_cols.values():
        if name not in out.columns:
            out[name] = np.nan
    for name in ("top1", "top1_low", "top1_high"):
        out[f"{name}_percent"] = 100 * pd.to_numeric(out.pop(name), errors="coerce")
    order = out["precision"].map(PRECISION_ORDER)
    return out.assign(_order=order).sort_values(GROUP + ["backend", "_order"]).drop(columns="_order") \
        .reset_index(drop=True)


def _excess(value: float, limit: float, unit: str, what: str) -> str:
    over = value - limit
    share = f", {100 * over / limit:.0f}%" if limit > 0 else ""
    return f"{what} {value:.3g} {unit} > {limit:g} {unit} (over by {over:.3g} {unit}{share})"


def check(row: pd.Series, budgets: Budgets) -> tuple[list[str], list[str]]:
    """The budgets ``row`` breaks (each with how much) and the notes on budgets that could not be checked."""
    broken, notes = [], []

    def limit(value, bound, unit, what, missing):
        if bound is None:
            return
        if value is None or not np.isfinite(value):
            broken.append(f"{what} unknown ({missing})")
        elif value > bound:
            broken.append(_excess(float(value), bound, unit, what))

    limit(row.get("p99_ms"), budgets.p99_ms, "ms", "p99 latency",
          row.get("p99_note") or "no latency row")
    limit(row.get("engine_mb"), budgets.max_mb, "MB", "engine size", "no size")
    if budgets.max_drop_points is not None:
        point, high = row.get("drop_points"), row.get("drop_ci_high_points")
        if budgets.drop_bound == "ci_high" and high is not None and np.isfinite(high):
            if high > budgets.max_drop_points:
                broken.append(f"top-1 drop {point:.2f} points, 95% CI upper bound {high:.2f} > "
                              f"{budgets.max_drop_points:g} points (over by {high - budgets.max_drop_points:.2f})")
        elif point is not None and np.isfinite(point):
            if budgets.drop_bound == "ci_high":
                notes.append("top-1 drop has no interval (no per-image predictions): judged by its point value")
            if point > budgets.max_drop_points:
                broken.append(_excess(float(point), budgets.max_drop_points, "points", "top-1 drop"))
        else:
            broken.append("top-1 drop unknown (no accuracy row or no FP32 reference)")
    limit(row.get("rss_peak_mb"), budgets.max_rss_mb, "MB", "peak process RSS", "no resource samples")
    if budgets.max_energy_mj is not None:
        energy = row.get("energy_per_inference_mj")
        if energy is None or not np.isfinite(energy):
            notes.append(f"energy budget not checked: {row.get('energy_note') or 'energy not measured'}")
        elif energy > budgets.max_energy_mj:
            broken.append(_excess(float(energy), budgets.max_energy_mj, "mJ", "energy per inference"))
    if budgets.require_valid and not bool(row.get("valid", True)):
        broken.append("latency run invalid (fewer tasks or a shorter duration than configured, or NaN samples)")
    median = pd.to_numeric(pd.Series([row.get("p50_ms")]), errors="coerce").iloc[0]
    if budgets.require_valid and "p50_ms" in row and not np.isfinite(median):
        broken.append("latency median unknown (NaN): the run measured nothing usable")
    return broken, notes


def _rank(frame: pd.DataFrame, objective: str) -> pd.DataFrame:
    names = [objective] + [o for o in TIE_BREAKERS if o != objective]
    columns = [OBJECTIVES[o][0] for o in names]
    ascending = [OBJECTIVES[o][1] for o in names]
    keyed = frame.assign(**{f"_k{i}": pd.to_numeric(frame[c], errors="coerce") for i, c in enumerate(columns)})
    keyed = keyed.sort_values([f"_k{i}" for i in range(len(columns))] + ENGINE, ascending=ascending + [True, True],
                              na_position="last", kind="mergesort")
    return keyed.drop(columns=[f"_k{i}" for i in range(len(columns))])


def decide(tables: dict[str, pd.DataFrame], budgets: Budgets) -> pd.DataFrame:
    """One row per candidate engine: feasible, chosen, rank among the feasible, and every rejection reason."""
    engines = engine_table(tables)
    columns = list(engines.columns) + ["feasible", "chosen", "rank", "rejection", "notes", "tie", "tie_note",
                                       "tie_broken_by", "machine_note", "pareto", "objective", "budgets"]
    if not len(engines):
        return pd.DataFrame(columns=columns)
    broken, notes = zip(*(check(row, budgets) for _, row in engines.iterrows()))
    engines["feasible"] = [not b for b in broken]
    engines["rejection"] = ["; ".join(b) for b in broken]
    engines["notes"] = ["; ".join(n) for n in notes]
    engines["rank"] = pd.array([pd.NA] * len(engines), dtype="Int64")
    engines["chosen"] = False
    engines["tie"] = False
    engines["tie_note"] = ""
    engines["machine_note"] = ""
    engines["tie_broken_by"] = ""
    objective_column = OBJECTIVES[budgets.objective][0]
    runoff = tables.get("runoff")
    for key, group in engines.groupby(GROUP, sort=False, dropna=False):
        ok = group[group["feasible"] & pd.to_numeric(group[objective_column], errors="coerce").notna()]
        if not len(ok):
            continue
        ranked = _rank(ok, budgets.objective)
        engines.loc[ranked.index, "rank"] = np.arange(1, len(ranked) + 1)
        tie = break_ties(ranked, budgets.objective, runoff, dict(zip(GROUP, key)), budgets.tie_margin)
        engines.loc[tie.chosen, "chosen"] = True
        engines.loc[tie.chosen, "machine_note"] = machine_note(runoff, dict(zip(GROUP, key)))
        if len(tie.tied) > 1:
            engines.loc[tie.tied, "tie"] = True
            engines.loc[tie.chosen, "tie_note"] = tie.note
            engines.loc[tie.chosen, "tie_broken_by"] = tie.broken_by
            for label, why in tie.left_out.items():
                note = f"in the tie, not picked: {why}"
                engines.loc[label, "notes"] = f"{engines.loc[label, 'notes']}; {note}" if engines.loc[label, "notes"] else note
    no_objective = engines["feasible"] & engines["rank"].isna()
    engines.loc[no_objective, "notes"] = engines.loc[no_objective, "notes"].where(
        engines.loc[no_objective, "notes"] == "", engines.loc[no_objective, "notes"] + "; ") + \
        f"not ranked: {objective_column} unknown"
    engines["pareto"] = False
    for _, group in engines.groupby(GROUP, sort=False, dropna=False):
        engines.loc[group.index, "pareto"] = pareto_front(group["p99_ms"], group["top1_percent"])
    engines["objective"] = budgets.objective
    engines["budgets"] = json.dumps(asdict(budgets), sort_keys=True)
    return engines[columns]


def pareto_front(latency, accuracy) -> np.ndarray:
    """True for points no other point dominates (latency no higher and accuracy no lower, one strictly).

    NaN points are never on the front.
    """
    x = np.asarray(latency, dtype=float)
    y = np.asarray(accuracy, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    front = np.zeros(len(x), bool)
    for i in np.flatnonzero(ok):
        others = ok & (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        front[i] = not others.any()
    return front


class UnreadableTable(ValueError):
    """A summary table that exists but cannot be read (truncated, not Parquet)."""


def read_tables(summary_dir: str | Path, names=("latency", "accuracy", "runoff")) -> dict[str, pd.DataFrame]:
    """The summary tables a decision reads (a missing table is empty; an unreadable one raises
    :class:`UnreadableTable` naming it and the command that rewrites it)."""
    out = {}
    for name in names:
        path = Path(summary_dir) / f"{name}.parquet"
        try:
            out[name] = pd.read_parquet(path) if path.is_file() else pd.DataFrame()
        except Exception as exc:  # noqa: BLE001 (pyarrow raises several types for a damaged file)
            raise UnreadableTable(f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); rewrite the "
                                  "summary with: snakemake --cores 2 --forcerun summarize") from exc
    return out


def write_decision(summary_dir: str | Path, budgets: Budgets, markdown_path: str | Path,
                   parquet_path: str | Path) -> pd.DataFrame:
    """Decide from the summary tables in ``summary_dir``; write decision.md and decision.parquet."""
    from workflow_scripts.core.artifacts import write_parquet, write_text

    decision = decide(read_tables(summary_dir), budgets)
    write_parquet(decision, parquet_path)
    write_text(decision_markdown(decision, budgets), markdown_path)
    return decision
