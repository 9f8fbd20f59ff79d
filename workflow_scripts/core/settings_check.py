"""One set of settings per summary: rows measured under different settings are never mixed silently.

Each per-engine row carries ``settings`` (the compact JSON of ``config.comparable_settings`` for
its job, plus ``runtime``: what the job resolved when it ran, such as its threads).
:func:`check_settings` flattens each row's settings to dotted keys; a key with more than one value
among the rows that carry it is a conflict. Conflicts raise ConfigError before anything is
written, unless config key ``summary.allow_mixed_configs`` is true.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from workflow_scripts.core.config import PER_MODEL, flatten_settings, rules_reading
from workflow_scripts.core.errors import ConfigError

log = logging.getLogger("workflow_scripts.summary.summarize")
KEYS = ["device", "backend", "dataset", "model"]
CELL = KEYS + ["precision"]


# The per-engine tables whose rows feed the summary tables, with the keys their rows are
# de-duplicated on (keep_newest_config) and the table's name in messages. Latency samples and
# per-image predictions are not compared: they follow the latency and accuracy rows kept (one job
# writes a summary row and its samples/predictions with the same provenance).
CHECKED_TABLES = {
    "export_files": (["device", "dataset", "model", "stage"], "export"),
    "export_resource_files": (["device", "dataset", "model"], "export_resources"),
    "build_files": (CELL + ["stage"], "build"),
    "build_resource_files": (CELL, "build_resources"),
    "latency_files": (CELL, "latency"),
    "accuracy_files": (CELL, "accuracy"),
    "keras_accuracy_files": (["dataset", "model", "precision"], "keras_accuracy"),
}
PLACE = ["device", "backend", "dataset", "input_size", "model", "precision"]
# Settings the config may give per model (config.PER_MODEL; each row carries its model's entry) are
# compared within a model only, as 'weights[EfficientNetLite0]': two models with different weights
# are one study, not a conflict. (train.batch_size, per dataset, needs nothing: each row keeps its
# dataset's entry under its own key, train.batch_size.<dataset>.)
ALLOW_HINT = "--config summary='{allow_mixed_configs: true}'"


def _place(values: dict) -> str:
    """'device/backend/dataset_<size>px/model/precision' from the labels a row has."""
    parts = [str(values["device"]) if "device" in values else "?",
             str(values["backend"]) if "backend" in values else "?"]
    if "dataset" in values:
        size = values.get("input_size")
        parts.append(f"{values['dataset']}_{int(size)}px" if pd.notna(size) and size != "" else str(values["dataset"]))
    parts += [str(values[k]) for k in ("model", "precision") if k in values and pd.notna(values[k])]
    return "/".join(parts)


def settings_values(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, dict[str, set[str]]], set[str]]:
    """Every dotted setting's values across the rows of ``frames``, and the rows of unknown settings.

    Returns ``({dotted key: {value as JSON: {places}}}, {places without settings})``; a place is
    'device/backend/dataset_<size>px/model/precision' (the parts a table has).
    """
    values: dict[str, dict[str, set[str]]] = {}
    unknown: set[str] = set()
    flat_of: dict[str, dict | None] = {}
    for frame in frames.values():
        if not len(frame):
            continue
        cols = [c for c in PLACE if c in frame.columns]
        text = frame["settings"].fillna("").astype(str) if "settings" in frame.columns \
            else pd.Series("", index=frame.index)
        pairs = frame[cols].assign(_settings=text.to_numpy()).drop_duplicates()
        for record in pairs.to_dict("records"):
            settings = record.pop("_settings")
            place = _place(record)
            if settings not in flat_of:
                try:
                    parsed = json.loads(settings) if settings else None
                    flat_of[settings] = flatten_settings(parsed) if isinstance(parsed, dict) else None
                except ValueError:
                    flat_of[settings] = None
            flat = flat_of[settings]
            if flat is None:
                unknown.add(place)
                continue
            for key, value in flat.items():
                shown = json.dumps(value, sort_keys=True, default=str)
                if key in PER_MODEL and pd.notna(record.get("model")):
                    key = f"{key}[{record['model']}]"
                values.setdefault(key, {}).setdefault(shown, set()).add(place)
    return values, unknown


def settings_conflicts(frames: dict[str, pd.DataFrame]) -> dict[str, dict[str, set[str]]]:
    """The dotted settings with more than one value across the rows that carry them (see :func:`settings_values`)."""
    return _conflicting(settings_values(frames)[0])


def _conflicting(values: dict[str, dict[str, set[str]]]) -> dict[str, dict[str, set[str]]]:
    """The keys of :func:`settings_values`' first result that have more than one value, sorted."""
    return {key: found for key, found in sorted(values.items()) if len(found) > 1}


def _abbreviate(places: set[str], folders: int = 3, cells: int = 2) -> str:
    """'dev/backend (N cells: a, b, … and K more)' per device/backend folder, at most ``folders`` of them."""
    by_folder: dict[str, list[str]] = {}
    for place in sorted(places):
        head, _, rest = place.partition("/")
        backend, _, cell = rest.partition("/")
        by_folder.setdefault(f"{head}/{backend}", []).append(cell or "(all)")
    parts = []
    for folder, found in list(by_folder.items())[:folders]:
        shown = ", ".join(found[:cells]) + (f", … and {len(found) - cells} more" if len(found) > cells else "")
        parts.append(f"{folder} ({len(found)} cell{'s' if len(found) != 1 else ''}: {shown})")
    if len(by_folder) > folders:
        parts.append(f"… and {len(by_folder) - folders} more device/backend folders")
    return "; ".join(parts)


_UNSET = object()


def _current_value(current: dict, key: str):
    """The current config's value of a flattened key; a per-model one ('weights[M]') narrowed to model M."""
    if key in current:
        return current[key]
    base, bracket, model = key.partition("[")
    if not bracket or base not in PER_MODEL:
        return _UNSET
    model = model.rstrip("]")
    for candidate in (f"{base}.{model}", f"{base}.default", base):
        if candidate in current:
            return current[candidate]
    return PER_MODEL[base]


def conflicts_message(conflicts: dict[str, dict[str, set[str]]], current: dict | None = None,
                      results_dir: str | Path | None = None, max_keys: int = 8) -> str:
    """The refusal: each differing key with its values and where each comes from, then the three fixes."""
    lines = [(f"the summary would mix rows measured under different settings in {len(conflicts)} "
              f"key{'s' if len(conflicts) != 1 else ''}; config key summary.allow_mixed_configs is false, so "
              "nothing was written:")]
    for key, found in list(conflicts.items())[:max_keys]:
        now = ""
        if current is not None:
            value = _current_value(current, key)
            now = f" [current config: {json.dumps(value, sort_keys=True, default=str)}]" \
                if value is not _UNSET else " [not set by the current config]"
        lines.append(f"  - {key}{now}: " + " | ".join(f"{value} on {_abbreviate(places)}"
                                                    for value, places in sorted(found.items())))
    if len(conflicts) > max_keys:
        lines.append(f"  - … and {len(conflicts) - max_keys} more keys: " + ", ".join(list(conflicts)[max_keys:]))
    rules = sorted({rule for key in conflicts for rule in rules_reading(key.split(".")[0])})
    where = f"{results_dir}/" if results_dir else "the results folder"
    lines += [
        "Fix it in one of three ways:",
        ("  1. rerun the cells with the value you do not want under the config you want: on the machine that "
         "measured them, run snakemake with that config (it reruns jobs whose settings changed); for copied "
         f"results without Snakemake metadata add --forcerun {' '.join(rules) or '<rule>'} (reruns those jobs "
         "and everything after them), or delete those cells' tables and run snakemake again;"),
        f"  2. move the results you do not want to compare out of {where} (e.g. another device's folder);",
        ("  3. draw them together anyway: set summary.allow_mixed_configs: true in the config file or run with "
         f"{ALLOW_HINT}; every summary table then carries settings_hash (and the per-row tables settings) to "
         "tell the rows apart."),
    ]
    return "\n".join(lines)


def check_settings(frames: dict[str, pd.DataFrame], allow_mixed: bool = False, current: dict | None = None,
                   results_dir: str | Path | None = None) -> dict[str, dict[str, set[str]]]:
    """Refuse (ConfigError) rows of different comparable settings unless ``allow_mixed``; return the conflicts.

    ``frames`` are the de-duplicated per-engine tables feeding the summary; ``current`` the current
    config's flattened comparable settings (only to mark its values in the message). Rows without
    a ``settings`` column (older results) are logged as of unknown settings and never conflict.
    """
    values, unknown = settings_values(frames)
    if unknown:
        log.warning("%d cells have no settings column (results from before it existed): their settings are "
                    "unknown and not compared: %s", len(unknown), _abbreviate(unknown))
    conflicts = _conflicting(values)
    if not conflicts:
        return conflicts
    message = conflicts_message(conflicts, current, results_dir)
    if not allow_mixed:
        raise ConfigError(message)
    log.warning("summary.allow_mixed_configs is true: summarizing rows of different settings together; "
                "settings_hash in every table tells them apart. %s",
                message.split("\n", 1)[1].split("Fix it")[0].rstrip())
    return conflicts
