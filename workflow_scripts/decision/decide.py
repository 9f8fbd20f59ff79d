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
RSS), ``energy``. Ties fall to the next objectives in the fixed order latency, size, accuracy.

:func:`decide` returns one row per candidate; :func:`decision_markdown` renders it. The CLI
``python -m workflow_scripts.decision.decide results/summary --p99-ms 5 --max-drop 1.0`` answers ad-hoc
budgets from a summary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.core import registry
from workflow_scripts.decision.ties import break_ties, broken_by

GROUP = ["device", "dataset", "input_size", "model"]
ENGINE = ["backend", "precision"]
PRECISION_ORDER = {p: i for i, p in enumerate(registry.PRECISIONS)}

# objective -> (column, ascending)
OBJECTIVES = {
    "latency": ("p99_ms", True),
    "p50": ("p50_ms", True),
    "throughput": ("throughput_images_per_s", False),
    "size": ("engine_mb", True),
    "accuracy": ("top1_percent", False),
    "memory": ("rss_peak_mb", True),
    "energy": ("energy_per_inference_mj", True),
}
TIE_BREAKERS = ("latency", "size", "accuracy")


@dataclass
class Budgets:
    """The constraints of a decision (None: unconstrained) and its objective."""

    p99_ms: float | None = None
    max_mb: float | None = None
    max_drop_points: float | None = None
    max_rss_mb: float | None = None
    max_energy_mj: float | None = None
    drop_bound: str = "ci_high"
    require_valid: bool = True
    objective: str = "latency"
    tie_margin: float = 0.05

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}; one of {list(OBJECTIVES)}")
        if self.drop_bound not in ("ci_high", "point"):
            raise ValueError(f"drop_bound is {self.drop_bound!r}; use ci_high or point")
        for name in ("p99_ms", "max_mb", "max_drop_points", "max_rss_mb", "max_energy_mj"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"budget {name} is {value!r}; give a finite number or leave it out")
            # A drop budget may be negative (demand an improvement); a latency, size, memory or
            # energy budget at or below zero rejects every engine and is a typo.
            if value is not None and name != "max_drop_points" and value <= 0:
                raise ValueError(f"budget {name} is {value!r}; it must be greater than 0 (or left out)")
        if not (isinstance(self.tie_margin, (int, float)) and math.isfinite(self.tie_margin)
                and 0 <= self.tie_margin < 1):
            raise ValueError(f"tie_margin is {self.tie_margin!r}; give a fraction in [0, 1), e.g. 0.05")

    @classmethod
    def from_config(cls, block: dict | None) -> "Budgets":
        """Budgets from config block ``decision`` (keys as in config/schema.yaml)."""
        block = dict(block or {})
        return cls(p99_ms=block.get("p99_ms"), max_mb=block.get("max_mb"),
                   max_drop_points=block.get("max_drop_points"), max_rss_mb=block.get("max_rss_mb"),
                   max_energy_mj=block.get("max_energy_mj"), drop_bound=block.get("drop_bound", "ci_high"),
                   require_valid=bool(block.get("require_valid", True)),
                   objective=block.get("objective", "latency"), tie_margin=block.get("tie_margin", 0.05))

    def describe(self) -> str:
        """The budgets in words, one clause each."""
        parts = []
        if self.p99_ms is not None:
            parts.append(f"p99 latency <= {self.p99_ms:g} ms")
        if self.max_mb is not None:
            parts.append(f"engine size <= {self.max_mb:g} MB")
        if self.max_drop_points is not None:
            how = "upper 95% bound of the" if self.drop_bound == "ci_high" else "point estimate of the"
            parts.append(f"{how} top-1 drop vs FP32 <= {self.max_drop_points:g} points")
        if self.max_rss_mb is not None:
            parts.append(f"peak process RSS <= {self.max_rss_mb:g} MB")
        if self.max_energy_mj is not None:
            parts.append(f"energy per inference <= {self.max_energy_mj:g} mJ (where measured)")
        if self.require_valid:
            parts.append("latency run valid")
        return "; ".join(parts) or "no budgets"


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
    out["noise_reason"] = _column(latency, "noise_reason", "").fillna("").astype(str)
    out["throughput_images_per_s"] = _column(latency, "throughput_images_per_s")
    out["engine_mb"] = _column(latency, "engine_mb")
    out["rss_peak_mb"] = _column(latency, "rss_mb_peak")
    out["energy_per_inference_mj"] = pd.to_numeric(_column(latency, "energy_per_inference_mj"), errors="coerce")
    out["energy_note"] = _column(latency, "energy_note", "energy not recorded by this version of the benchmark") \
        .fillna("").astype(str)
    out["valid"] = _column(latency, "valid", True).fillna(True).astype(bool)
    out["fp32_valid"] = _column(latency, "fp32_valid", True).astype("object").fillna(True).astype(bool)
    out["high_variation"] = _column(latency, "high_variation", False).fillna(False).astype(bool)
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
                                       "tie_broken_by", "pareto", "objective", "budgets"]
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
    engines["tie_broken_by"] = ""
    objective_column = OBJECTIVES[budgets.objective][0]
    runoff = tables.get("runoff")
    for key, group in engines.groupby(GROUP, sort=False, dropna=False):
        ok = group[group["feasible"] & pd.to_numeric(group[objective_column], errors="coerce").notna()]
        if not len(ok):
            continue
        ranked = _rank(ok, budgets.objective)
        engines.loc[ranked.index, "rank"] = np.arange(1, len(ranked) + 1)
        tied, chosen, note = break_ties(ranked, budgets.objective, runoff, dict(zip(GROUP, key)), budgets.tie_margin)
        engines.loc[chosen, "chosen"] = True
        if len(tied) > 1:
            engines.loc[tied, "tie"] = True
            engines.loc[chosen, "tie_note"] = note
            engines.loc[chosen, "tie_broken_by"] = broken_by(ranked.loc[tied], ranked.loc[chosen])
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


# --- rendering -----------------------------------------------------------------------------------

def _num(value, fmt: str = ".3g", suffix: str = "") -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{value:{fmt}}{suffix}" if np.isfinite(value) else "–"


def drop_text(row) -> str:
    """'0.37 [-0.4, 1.1]' (points, paired 95% CI) or '–'."""
    point = _num(row.get("drop_points"), ".2f")
    if point == "–":
        return point
    low, high = _num(row.get("drop_ci_low_points"), ".2f"), _num(row.get("drop_ci_high_points"), ".2f")
    return f"{point} [{low}, {high}]" if low != "–" else point


def flags_text(row) -> str:
    """The measurement flags of an engine row, comma-separated ('' when clean)."""
    flags = []
    if not bool(row.get("valid", True)):
        flags.append("invalid")
    if not bool(row.get("fp32_valid", True)) and row.get("precision") != "fp32":
        flags.append("fp32 invalid")
    if bool(row.get("high_variation", False)):
        flags.append(f"noisy ({row.get('noise_reason') or 'IQR/median > 0.10'})")
    return ", ".join(flags)


def interval_text(row, name: str) -> str:
    """'0.235 [0.231, 0.240]' (ms, 95% CI) for name p50 or p99; 'n/a (why)' where unsupported."""
    point = _num(row.get(f"{name}_ms"))
    if point == "–":
        note = row.get("p99_note") if name == "p99" else ""
        return f"n/a ({note})" if note else "–"
    low, high = _num(row.get(f"{name}_ci_low_ms")), _num(row.get(f"{name}_ci_high_ms"))
    return f"{point} [{low}, {high}]" if low != "–" and high != "–" else point


def _engine_name(row) -> str:
    return f"{row['backend']} {row['precision']}"


def _signed(value, fmt: str = ".2f") -> str:
    """'+0.37' / '-0.74' (a sign on every value, so a gain reads as one) or '–'."""
    text = _num(value, fmt)
    return text if text == "–" else f"{float(value):+{fmt}}"


def signed_drop_text(row) -> str:
    """'+0.37 [-0.74, +1.48]' (points, paired 95% CI) or '–'."""
    point = _signed(row.get("drop_points"))
    if point == "–":
        return point
    low, high = _signed(row.get("drop_ci_low_points")), _signed(row.get("drop_ci_high_points"))
    return f"{point} [{low}, {high}]" if low != "–" and high != "–" else point


def budgets_of(decision: pd.DataFrame) -> Budgets | None:
    """The budgets a decision table was made under (its ``budgets`` JSON column), or None."""
    if not len(decision) or "budgets" not in decision.columns:
        return None
    try:
        return Budgets(**json.loads(str(decision["budgets"].iloc[0])))
    except (TypeError, ValueError):
        return None


def _short_flags(row) -> str:
    flags = []
    if not bool(row.get("valid", True)):
        flags.append("invalid run")
    if not bool(row.get("fp32_valid", True)) and row.get("precision") != "fp32":
        flags.append("FP32 reference invalid")
    if bool(row.get("high_variation", False)):
        flags.append("noisy run")
    return ", ".join(flags)


def _latency_words(row, name: str) -> str:
    """'p99 0.27 ms [0.25, 0.29]' (95% CI), or 'p99 n/a (why)'."""
    point = _num(row.get(f"{name}_ms"))
    if point == "–":
        return f"{name} {interval_text(row, name)}"
    low, high = _num(row.get(f"{name}_ci_low_ms")), _num(row.get(f"{name}_ci_high_ms"))
    return f"{name} {point} ms" + (f" [{low}, {high}]" if low != "–" and high != "–" else "")


# What the one-line answer adds for objectives its fixed metrics (p99, drop, MB) do not show.
_OBJECTIVE_TEXT = {
    "p50": lambda r: _latency_words(r, "p50"),
    "throughput": lambda r: f"{_num(r.get('throughput_images_per_s'), '.4g')} img/s",
    "accuracy": lambda r: f"top-1 {_num(r.get('top1_percent'), '.2f')}%",
    "memory": lambda r: f"peak RSS {_num(r.get('rss_peak_mb'), '.0f')} MB",
    "energy": lambda r: f"{_num(r.get('energy_per_inference_mj'))} mJ per inference",
}


def _closest(group: pd.DataFrame, objective: str) -> pd.Series:
    """The rejected candidate nearest to acceptance: fewest budgets broken, then the best by the objective."""
    column, ascending = OBJECTIVES[objective]
    return (group.assign(_n=group["rejection"].str.count("; ") + 1)
            .sort_values(["_n", column], ascending=[True, ascending], na_position="last").iloc[0])


def answers(decision: pd.DataFrame) -> list[dict]:
    """The decision's answer per device, dataset, input size and model, one line each.

    Each item: the group's keys, ``deploy`` ('litert int8', '' when nothing is chosen), ``backend``,
    ``precision``, ``line`` ('MobileNetV3Small on digits: deploy litert int8 — p99 0.27 ms [0.25, 0.29],
    top-1 drop +0.37 [-0.74, +1.48] points, 1.1 MB') and ``tie`` (how a tie within measurement noise
    was broken, '' without one). The device is named in the line only when several were measured, the
    input size only when a model was measured at several.
    """
    if not len(decision):
        return []
    objective = str(decision["objective"].iloc[0]) if "objective" in decision.columns else "latency"
    if objective not in OBJECTIVES:
        objective = "latency"
    several_devices = decision["device"].nunique() > 1
    several_sizes = decision.groupby(["dataset", "model"])["input_size"].nunique().max() > 1
    out = []
    for (device, dataset, size, model), group in decision.groupby(GROUP, sort=False, dropna=False):
        label = f"{model} on {dataset}" + (f" {size} px" if several_sizes else "") + \
            (f" ({device})" if several_devices else "")
        item = {"device": device, "dataset": dataset, "input_size": size, "model": model, "deploy": "",
                "backend": "", "precision": "", "tie": ""}
        chosen = group[group["chosen"].astype(bool)]
        if len(chosen):
            row = chosen.iloc[0]
            parts = [_latency_words(row, "p99")]
            if row["precision"] == "fp32":
                parts.append(f"top-1 {_num(row.get('top1_percent'), '.2f')}% (the FP32 reference)")
            else:
                parts.append(f"top-1 drop {signed_drop_text(row)} points")
            parts.append(f"{_num(row.get('engine_mb'))} MB")
            if objective in _OBJECTIVE_TEXT:
                parts.append(_OBJECTIVE_TEXT[objective](row))
            flags = _short_flags(row)
            item.update(deploy=_engine_name(row), backend=row["backend"], precision=row["precision"],
                        line=f"{label}: deploy {_engine_name(row)} — " + ", ".join(parts)
                        + (f" (flags: {flags})" if flags else ""))
            if bool(row.get("tie", False)) and "tie" in group.columns:
                members = group[group["tie"].astype(bool)].sort_values("rank")
                others = [_engine_name(m) for _, m in members.iterrows() if _engine_name(m) != _engine_name(row)]
                by = row.get("tie_broken_by") or "the next objectives"
                item["tie"] = (f"tie within measurement noise with {', '.join(others)} (cannot be told apart at 95%); "
                               f"broken by {by}")
        elif group["feasible"].astype(bool).any():
            item["line"] = (f"{label}: no engine ranked — {OBJECTIVES[objective][0]} is unknown for every engine "
                            "within budget")
        else:
            closest = _closest(group, objective)
            item["line"] = (f"{label}: no engine meets every budget — closest {_engine_name(closest)} "
                            f"({closest['rejection']})")
        out.append(item)
    return out


def answer_markdown(decision: pd.DataFrame) -> list[str]:
    """The answers as a Markdown list (a tie's note indented under its line)."""
    lines = []
    for item in answers(decision):
        lines.append(f"- {item['line']}")
        if item["tie"]:
            lines.append(f"  - {item['tie']}")
    return lines


def test_set_notes(decision: pd.DataFrame, budgets: Budgets | None) -> list[str]:
    """Per dataset, the test-set size behind the accuracy budget ('270 test images: one image = 0.37 point'),
    and a warning where the drop budget is below two images' worth or narrower than the drops' intervals."""
    if not len(decision) or "test_images" not in decision.columns:
        return []
    notes = []
    for dataset, group in decision.groupby("dataset", sort=True):
        counts = sorted({int(n) for n in pd.to_numeric(group["test_images"], errors="coerce").dropna() if n > 0})
        if not counts:
            notes.append(f"{dataset}: the test-set size is unknown (no accuracy rows), so the top-1 drop was not "
                         "measured and an accuracy budget rejects every engine.")
            continue
        images = counts[-1]
        point = 100 / images
        text = (f"{dataset}: {images:,} test images" + (f" (also {', '.join(map(str, counts[:-1]))})"
                                                         if len(counts) > 1 else "")
                + f": one image = {point:.2g} point")
        budget = budgets.max_drop_points if budgets is not None else None
        if budget is not None:
            worth = budget / point
            text += f"; the drop budget of {budget:g} points is {worth:.1f} images' worth"
            quantized = group[group["precision"] != "fp32"]
            width = (pd.to_numeric(quantized["drop_ci_high_points"], errors="coerce")
                     - pd.to_numeric(quantized["drop_ci_low_points"], errors="coerce")).dropna()
            half = float(width.median()) / 2 if len(width) else float("nan")
            if np.isfinite(half):
                widest = float(width.max()) / 2
                text += (f"; the drops' paired 95% intervals reach ±{half:.2g} points (median), ±{widest:.2g} "
                         "(widest)")
            text += "."
            if worth < 2:
                text += (f" **Warning: the budget is below two test images' worth ({2 * point:.2g} points)**: one or "
                         "two images decide whether an engine passes. Test on more images (a larger test split) "
                         "or raise `decision.max_drop_points` (CLI `--max-drop`).")
            elif budgets.drop_bound == "ci_high" and np.isfinite(half) and half >= budget:
                text += (" **Warning: the intervals are at least as wide as the budget**: judged by their upper bound, "
                         "an engine with no real drop (even one that gained accuracy) can be rejected. Test on more "
                         "images, raise the budget, or judge the point value (`drop_bound: point`, CLI "
                         "`--drop-bound point`).")
        else:
            text += "."
        notes.append(text)
    return notes


def decision_markdown(decision: pd.DataFrame, budgets: Budgets) -> str:
    """decision.md: per device and model, the engine chosen and why every other one was not."""
    objective, ascending = OBJECTIVES[budgets.objective]
    answer = answer_markdown(decision)
    lines = ["# Deployment decision", ""]
    if answer:
        lines += ["## The answer", ""] + answer + [""]
    lines += [f"Budgets: {budgets.describe()}.  ",
              f"Objective: {budgets.objective} ({'lowest' if ascending else 'highest'} `{objective}`), "
              f"ties broken by {', '.join(o for o in TIE_BREAKERS if o != budgets.objective)}.", "",
              "Top-1 drop is against the FP32 engine of the same backend, with its paired bootstrap 95% interval "
              "in brackets. Candidates are every engine measured on the device (backend x precision).", "",
              "Latency: where the runoff measured a model's engines interleaved in rounds, p50 and p99 are medians "
              "over rounds with distribution-free 95% intervals over rounds (the uncertainty that holds across "
              "runs); else one run's, with order-statistic intervals over its tasks. Candidates whose latency "
              f"cannot be told apart from the best at 95% (paired by round; differences under "
              f"{100 * budgets.tie_margin:g}% count as ties) are a tie within measurement noise, decided by size, "
              "then accuracy. A p99 needs at least 299 tasks; with fewer it is n/a.", ""]
    notes = test_set_notes(decision, budgets)
    if notes:
        lines += ["Test sets behind the accuracy budget:", ""] + [f"- {n}" for n in notes] + [""]
    if not len(decision):
        return "\n".join(lines + ["No engine results were found."]) + "\n"
    for device, per_device in decision.groupby("device", sort=True):
        lines += [f"## {device}", ""]
        for (dataset, size, model), group in per_device.groupby(["dataset", "input_size", "model"], sort=False):
            lines += [f"### {model} on {dataset} ({size} px)", ""]
            chosen = group[group["chosen"]]
            if len(chosen):
                row = chosen.iloc[0]
                if row.get("tie_note"):
                    body = row["tie_note"].removeprefix("tie within measurement noise: ")
                    lines += [f"**Tie within measurement noise**: {body}.", ""]
                lines.append(f"**Deploy {_engine_name(row)}**: p99 {interval_text(row, 'p99')} ms, "
                             f"p50 {interval_text(row, 'p50')} ms ({row.get('latency_source', 'single run')}), "
                             f"{_num(row['engine_mb'])} MB, "
                             f"top-1 {_num(row['top1_percent'], '.2f')}%, drop {drop_text(row)} points"
                             + (f", peak RSS {_num(row['rss_peak_mb'], '.0f')} MB"
                                if _num(row["rss_peak_mb"]) != "–" else "")
                             + (f"; flags: {flags_text(row)}" if flags_text(row) else "") + ".")
            else:
                feasible = group[group["feasible"]]
                if len(feasible):
                    lines.append("**No engine ranked**: the objective's column is unknown for every feasible engine.")
                else:
                    # Fewest budgets broken, then the best by the objective (the smallest engine when
                    # size is the objective), not the first row.
                    closest = _closest(group, budgets.objective)
                    lines.append(f"**No engine meets every budget.** Closest: {_engine_name(closest)} "
                                 f"({closest['rejection']}).")
            lines += ["", "| engine | p50 ms [95% CI] | p99 ms [95% CI] | tasks / rounds | MB | top-1 % | "
                          "drop [95% CI] | peak RSS MB | status |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for _, row in group.iterrows():
                if row["chosen"]:
                    status = "**chosen**"
                elif row["feasible"]:
                    status = f"feasible, rank {row['rank']}" if pd.notna(row["rank"]) else "feasible"
                    if bool(row.get("tie", False)):
                        status += ", tied with the chosen engine"
                else:
                    status = "rejected: " + row["rejection"]
                if row["notes"]:
                    status += f" ({row['notes']})"
                if flags_text(row):
                    status += f" [flags: {flags_text(row)}]"
                lines.append(f"| {_engine_name(row)} | {interval_text(row, 'p50')} | {interval_text(row, 'p99')} | "
                             f"{_num(row.get('tasks'), '.0f')} / {int(row.get('rounds', 0) or 0)} | "
                             f"{_num(row['engine_mb'])} | {_num(row['top1_percent'], '.2f')} | {drop_text(row)} | "
                             f"{_num(row['rss_peak_mb'], '.0f')} | {status} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


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


# --- command line: workflow_scripts/decision/cli.py -----------------------------------------------

if __name__ == "__main__":
    from workflow_scripts.decision.cli import main

    sys.exit(main())
