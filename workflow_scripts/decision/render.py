"""The decision in words: the answer line per model, the budgets and test-set notes, and decision.md
(one section per device, dataset and model with its candidate table)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from workflow_scripts.decision.budgets import GROUP, OBJECTIVES, TIE_BREAKERS, Budgets
from workflow_scripts.decision.ties import OTHER_PERCENTILE


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
                "backend": "", "precision": "", "tie": "", "machine": ""}
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
            item["machine"] = str(row.get("machine_note") or "")
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
        for note in (item["tie"], item["machine"]):
            if note:
                lines.append(f"  - {note}")
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
    breakers = ", ".join(o for o in TIE_BREAKERS if o != budgets.objective)
    if budgets.objective in OTHER_PERCENTILE:  # a latency tie is narrowed by the other percentile first
        other = "median" if OTHER_PERCENTILE[budgets.objective] == "p50" else "p99"
        breakers = f"the {other} latency (paired by round), then {breakers}"
    lines += [f"Budgets: {budgets.describe()}.  ",
              f"Objective: {budgets.objective} ({'lowest' if ascending else 'highest'} `{objective}`), "
              f"ties broken by {breakers}.", "",
              "Top-1 drop is against the FP32 engine of the same backend, with its paired bootstrap 95% interval "
              "in brackets. Candidates are every engine measured on the device (backend x precision).", "",
              "Latency: where the runoff measured a model's engines interleaved in rounds, p50 and p99 are medians "
              "over rounds with distribution-free 95% intervals over rounds (the uncertainty that holds across "
              "runs); else one run's, with order-statistic intervals over its tasks. Candidates whose latency "
              f"cannot be told apart from the best at 95% (paired by round; differences under "
              f"{100 * budgets.tie_margin:g}% count as ties) are a tie within measurement noise; a member shown slower "
              "than another on the other latency percentile (the median for p99) is not picked, then size and "
              "accuracy decide. A p99 needs at least 299 tasks; with fewer it is n/a.", ""]
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
                if row.get("machine_note"):
                    lines += [f"**The machine**: {row['machine_note']}.", ""]
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
