"""The INT8 calibration study: calibration choices as axes, one INT8 engine per variant.

This module builds one variant and summarizes the study. The variant grammar (the readable ids
such as ``entropy-n256-pc-asym-none`` and the axis columns every row carries) is in
:mod:`workflow_scripts.calibration_study.variants`, the exclusion presets in
:mod:`workflow_scripts.calibration_study.presets`, the figures in :mod:`workflow_scripts.calibration_study.plots`
and the paired bootstrap in :mod:`workflow_scripts.measure.statistics`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.calibration_study.plots import plot_study
from workflow_scripts.calibration_study.presets import PRESET_FUNCTIONS, prepare_model, resolve_exclusions  # noqa: F401 (re-exported)
from workflow_scripts.calibration_study.variants import (  # noqa: F401 (re-exported)
    AUTO_VARIANT,
    METHODS,
    PRESETS,
    VARIANT_REGEX,
    Variant,
    check_num_images,
    expand_variants,
    format_number,
    parse_variant,
    variant_labels,
    variant_options,
)
from workflow_scripts.core.errors import ConfigError
from workflow_scripts.measure.statistics import paired_drop

log = logging.getLogger(__name__)

# --- building one variant ---------------------------------------------------------------------------

def train_split_size(data_dir: str | Path) -> int:
    from workflow_scripts.data.data_io import open_split

    return len(open_split(data_dir, "train")[1])


def prepare_study_model(onnx_path: str | Path, out: str | Path) -> Path:
    """The pre-processed model every variant of one model quantizes (and its statistics are measured on)."""
    from workflow_scripts.core.artifacts import atomic_path

    with atomic_path(out) as tmp:
        prepare_model(onnx_path, tmp)
    return Path(out)


def measure_statistics(prepared: str | Path, data_dir: str | Path, num_images: int, batch_size: int, seed: int,
                       out: str | Path) -> dict:
    """Calibrate once: ranges and histograms of one model on one calibration image set, for every variant.

    The images are the ones a variant with ``n<num_images>`` calibrates on (same seeded sample and
    batches as the workflow's INT8 build). Returns the timings (also stored in the artifact).
    """
    import time

    from workflow_scripts.backends.onnxruntime.calibrate import collect_statistics, save_statistics
    from workflow_scripts.stages.engine import calibration_source

    if num_images > train_split_size(data_dir):
        raise ConfigError(f"calibration statistics for {num_images} images, but the train split of {data_dir} has "
                          f"only {train_split_size(data_dir)}; lower config key 'calibration_study.num_images'")
    started = time.perf_counter()
    stats = collect_statistics(prepared, calibration_source(data_dir, num_images, batch_size, seed))
    stats.timings["total_s"] = time.perf_counter() - started
    save_statistics(stats, out)
    log.info("calibration statistics of %d tensors on %d images in %.2f s", len(stats.tensors), stats.images,
             stats.timings["total_s"])
    return stats.timings


def build_variant(onnx_path: str | Path, engine_path: str | Path, variant_id: str, data_dir: str | Path,
                  batch_size: int, build_table: str | Path, resources_table: str | Path,
                  calibration_json: str | Path, calibration_cache: str | Path, float_nodes_json: str | Path,
                  monitor_interval_s: float, seed: int, labels: dict, provenance: dict,
                  prepared: str | Path | None = None, statistics: str | Path | None = None,
                  int8_options: dict | None = None) -> pd.DataFrame:
    """Build one variant's INT8 engine with the workflow's timed INT8 build; add the axes to its build row.

    With ``prepared`` and ``statistics`` (:func:`prepare_study_model`, :func:`measure_statistics`) the
    build reuses the shared pre-processed model and calibration statistics: its timed build is then
    ranges + quantize_static, and the row's ``statistics_s`` is the shared calibration's cost.
    ``int8_options``: the ONNX Runtime INT8 type settings (``int8_cpu_policy``, ``reduce_range``, ...).
    """
    import tempfile

    import onnx

    from workflow_scripts.core.artifacts import write_parquet, write_text
    from workflow_scripts.stages.engine import build_engine_benchmark

    variant = parse_variant(variant_id)
    check_num_images(variant, train_split_size(data_dir))
    op_types, nodes = [], []
    if variant.exclude:
        with tempfile.TemporaryDirectory(prefix="edgeptq-prep-", dir=Path(engine_path).parent) as tmp:
            model = Path(prepared) if prepared else prepare_model(onnx_path, Path(tmp) / "prepared.onnx")
            op_types, nodes = resolve_exclusions(onnx.load(str(model), load_external_data=False), variant.exclude)
    log.info("variant %s: %d nodes and op types %s kept in float", variant.id, len(nodes), op_types)
    options = variant_options(variant, op_types, nodes, batch_size)
    shared = {}
    if prepared and statistics:
        from workflow_scripts.backends.onnxruntime.calibrate import load_statistics

        stats = load_statistics(statistics, prepared)
        if stats.images != variant.num_images:
            raise ConfigError(f"{statistics} holds {stats.images} calibration images; variant {variant.id} needs "
                              f"{variant.num_images}")
        options.update(prepared_model=str(prepared), calibration_statistics=str(statistics))
        shared = {"shared_statistics": True, "statistics_s": float(stats.timings.get("total_s", float("nan")))}
    backend_options = {k: v for k, v in (int8_options or {}).items() if v is not None}
    from workflow_scripts.core.registry import STUDY_BACKEND

    runs = build_engine_benchmark(STUDY_BACKEND, onnx_path, engine_path, "int8", data_dir, options, backend_options,
                                  build_table, resources_table, calibration_json, calibration_cache,
                                  warmup=0, repeats=1, monitor_interval_s=monitor_interval_s, seed=seed,
                                  provenance=provenance)
    for key, value in {**labels, **shared, "float_nodes": len(nodes), "float_op_types": ",".join(op_types)}.items():
        runs[key] = value
    write_parquet(runs, build_table)
    write_text(json.dumps({"variant": variant.id, "exclude_op_types": op_types, "exclude_nodes": nodes}, indent=2),
               float_nodes_json)
    return runs


# --- accuracy helpers -------------------------------------------------------------------------------

def split_correctness(runner, data_dir: str | Path, split: str, batch_size: int) -> np.ndarray:
    """Per-image top-1 correctness (0/1) of ``runner`` on one split, streamed in batches."""
    from workflow_scripts.data.data_io import iter_batches

    correct = []
    for images, labels in iter_batches(data_dir, split, batch_size):
        scores = np.asarray(runner.run(images), dtype=np.float64)
        ok = np.isfinite(scores).all(axis=1) & (np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1) == labels)
        correct.append(ok)
    return np.concatenate(correct).astype(float) if correct else np.zeros(0)


def correctness_of(predictions: pd.DataFrame) -> np.ndarray:
    """0/1 top-1 correctness per image, ordered by image_index."""
    frame = predictions.sort_values("image_index")
    return (frame["prediction"].to_numpy() == frame["label"].to_numpy()).astype(float)


# --- the study summary: one Parquet, the best configuration per model, figures ----------------------

def _read(path) -> pd.DataFrame | None:
    return pd.read_parquet(path) if path and Path(path).is_file() else None


def _latency_ms(path) -> float:
    frame = _read(path)
    return float(frame["latency_median_ms"].iloc[0]) if frame is not None else float("nan")


def study_rows(cell: dict, variants: list[str], with_auto: bool, with_fp16: bool, n_resamples: int,
               seed: int) -> pd.DataFrame:
    """One row per engine of one model: fp16, every variant and int8-auto, each with its paired drop vs FP32.

    ``cell`` names ``dataset``, ``model``, ``input_size`` and ``engine_dir`` (the model's engine folder).
    """
    folder = Path(cell["engine_dir"])
    fp32 = correctness_of(pd.read_parquet(folder / "fp32_predictions.parquet"))
    fp32_latency = _latency_ms(folder / "fp32_latency.parquet")
    engines = [("fp16", folder / "fp16")] if with_fp16 else []
    engines += [(v, folder / "calibration" / v) for v in variants]
    if with_auto:
        engines.append((AUTO_VARIANT, folder / "calibration" / AUTO_VARIANT))
    rows = []
    for name, stem in engines:
        predictions = pd.read_parquet(f"{stem}_predictions.parquet")
        correct = correctness_of(predictions)
        drop, low, high = paired_drop(fp32, correct, n_resamples=n_resamples, seed=seed)
        labels = ({"variant": "fp16", "method": "", "percentile": float("nan"), "num_images": 0, "per_channel": False,
                   "symmetric_activations": False, "exclude": "", "precision": "fp16"}
                  if name == "fp16" else {k: v for k, v in variant_labels(name, cell["dataset"], cell["model"],
                                                                            cell["input_size"]).items()})
        build = _read(f"{stem}_build.parquet") if name != "fp16" else None
        latency = _latency_ms(f"{stem}_latency.parquet")
        row = {"dataset": cell["dataset"], "model": cell["model"], "input_size": int(cell["input_size"]), **labels,
               "images": int(len(correct)), "fp32_top1": float(fp32.mean()), "top1": float(correct.mean()),
               "drop_points": drop, "drop_ci_low": low, "drop_ci_high": high,
               "flipped_images": int((fp32 != correct).sum()),
               "latency_median_ms": latency, "fp32_latency_median_ms": fp32_latency,
               "latency_vs_fp32": latency / fp32_latency if fp32_latency else float("nan"),
               "float_nodes": int(build["float_nodes"].iloc[0]) if build is not None and "float_nodes" in build else 0,
               "build_s": float(build["duration_s"].iloc[-1]) if build is not None and "duration_s" in build else float("nan")}
        if name == AUTO_VARIANT:
            record = json.loads((folder / "calibration" / f"{AUTO_VARIANT}.json").read_text())
            row["float_nodes"] = len(record["kept_nodes"]) + len(record.get("preset_float_nodes", []))
            row["auto_baseline"] = record["baseline_variant"]
            row["auto_reached_target"] = bool(record["reached_target"])
            row["auto_val_drop_points"] = float(record["steps"][-1]["val_drop_points"])
        rows.append(row)
    frame = pd.DataFrame(rows)
    baseline = frame[frame["variant"] == cell.get("baseline")]
    base_ms = float(baseline["latency_median_ms"].iloc[0]) if len(baseline) else float("nan")
    frame["latency_vs_baseline_int8"] = frame["latency_median_ms"] / base_ms
    return frame


def best_per_model(study: pd.DataFrame, target_points: float) -> pd.DataFrame:
    """Per model, the INT8 engine with the smallest drop; ties: fewest float nodes, then lowest latency."""
    int8 = study[study["precision"] == "int8"]
    picks = []
    for _, group in int8.groupby(["dataset", "model"], sort=True):
        ordered = group.assign(_drop=group["drop_points"].round(6)).sort_values(
            ["_drop", "float_nodes", "latency_median_ms"], kind="stable")
        picks.append(ordered.iloc[0].drop(labels="_drop"))
    best = pd.DataFrame(picks).reset_index(drop=True)
    if len(best):
        best["within_target"] = best["drop_points"] <= target_points
    return best


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in frame.iterrows():
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_markdown(study: pd.DataFrame, best: pd.DataFrame, int8_target: float, fp16_target: float) -> str:
    """The best configuration per model, and FP16's drop, against the targets."""
    text = [f"# Best INT8 configuration per model (target: INT8 drop <= {int8_target:g} point, "
            f"FP16 drop <= {fp16_target:g} point)\n",
            "Drop = FP32 top-1 minus engine top-1 on the test split, in points; 95% CI: paired bootstrap "
            "over the same test images. Best = smallest drop, then fewest float nodes, then lowest latency.\n"]
    rows = []
    for _, pick in best.iterrows():
        fp16 = study[(study["model"] == pick["model"]) & (study["dataset"] == pick["dataset"])
                     & (study["precision"] == "fp16")]
        fp16_txt = (f"{fp16['drop_points'].iloc[0]:+.2f} [{fp16['drop_ci_low'].iloc[0]:+.2f}, "
                    f"{fp16['drop_ci_high'].iloc[0]:+.2f}]" if len(fp16) else "n/a")
        fp16_ok = bool(len(fp16)) and fp16["drop_points"].iloc[0] <= fp16_target
        rows.append({"dataset": pick["dataset"], "model": pick["model"], "best INT8": pick["variant"],
                     "images": int(pick["images"]), "FP32 top-1": f"{100 * pick['fp32_top1']:.2f}",
                     "INT8 drop [95% CI]": f"{pick['drop_points']:+.2f} [{pick['drop_ci_low']:+.2f}, "
                                           f"{pick['drop_ci_high']:+.2f}]",
                     "INT8 within target": "yes" if pick["drop_points"] <= int8_target else "no",
                     "float nodes": int(pick["float_nodes"]),
                     "latency vs FP32": f"{pick['latency_vs_fp32']:.2f}",
                     "FP16 drop [95% CI]": fp16_txt, "FP16 within target": "yes" if fp16_ok else "no"})
    text.append(_markdown(pd.DataFrame(rows)))
    return "\n".join(text)


def summarize_study(cells: list[dict], variants: list[str], with_auto: bool, with_fp16: bool,
                    sensitivity_tables: list[str], int8_target: float, fp16_target: float, top_k: int,
                    n_resamples: int, seed: int, out: dict, start_variant: str | None = None,
                    with_nncf: bool = False) -> pd.DataFrame:
    """Write the study Parquet, the best-configuration Markdown, the worst-layer tables and the figures.

    With ``int8-auto`` and ``out["rescue"]``: the rescue table (start variant, int8-auto and, with
    ``with_nncf``, NNCF's accuracy control; each cell's ``nncf_dir`` names NNCF's folder) and
    ``out["sensitivity_figure"]``.
    """
    from workflow_scripts.core.artifacts import atomic_path, write_parquet, write_text

    study = pd.concat([study_rows(c, variants, with_auto, with_fp16, n_resamples, seed) for c in cells],
                      ignore_index=True)
    study["target_drop_points"] = np.where(study["precision"] == "fp16", fp16_target, int8_target)
    study["within_target"] = study["drop_points"] <= study["target_drop_points"]
    write_parquet(study, out["study"])
    best = best_per_model(study, int8_target)
    write_text(best_markdown(study, best, int8_target, fp16_target), out["best"])
    worst = [pd.read_parquet(p).sort_values("rank").head(top_k) for p in sensitivity_tables]
    worst = pd.concat(worst, ignore_index=True) if worst else pd.DataFrame()
    write_parquet(worst, out["sensitivity"])
    lines = [f"# Worst {top_k} layers per model (score: SQNR lost across the node, or its INT8 weight's own loss "
             f"if larger, dB; higher = more sensitive)\n"]
    for (dataset, model), group in (worst.groupby(["dataset", "model"]) if len(worst) else []):
        lines.append(f"## {model} on {dataset}\n")
        columns = ["rank", "node", "op_type", "group_size", "degradation_db", "xmodel_sqnr_db", "weight_sqnr_db",
                   "score_db"]
        lines.append(_markdown(group[[c for c in columns if c in group]]))
    write_text("\n".join(lines), out["sensitivity_md"])
    with atomic_path(out["drop_figure"]) as drop_tmp, atomic_path(out["fallback_figure"]) as fb_tmp:
        plot_study(study, drop_tmp, fb_tmp)
    if "rescue" in out:
        write_rescue(cells, sensitivity_tables, start_variant or cells[0]["baseline"], with_auto, with_nncf,
                     n_resamples, seed, out)
    return study


def write_rescue(cells: list[dict], sensitivity_tables: list[str], start_variant: str, with_auto: bool,
                 with_nncf: bool, n_resamples: int, seed: int, out: dict) -> pd.DataFrame:
    """The rescue table (Parquet beside the Markdown) and the sensitivity figure per model."""
    from workflow_scripts.core.artifacts import atomic_path, write_parquet, write_text
    from workflow_scripts.core.device import cpu_model
    from workflow_scripts.calibration_study.rescue_report import plot_sensitivity, rescue_markdown, rescue_rows

    tables, figures = [], []
    by_model = {}
    for path in sensitivity_tables:
        frame = pd.read_parquet(path)
        by_model[(frame["dataset"].iloc[0], frame["model"].iloc[0])] = frame
    for cell in cells:
        if with_auto:
            tables.append(rescue_rows(cell, start_variant, with_nncf, n_resamples, seed, cell.get("nncf_dir")))
        frame = by_model.get((cell["dataset"], cell["model"]))
        if frame is None:
            continue
        cal = Path(cell["engine_dir"]) / "calibration"
        ours = set(json.loads((cal / f"{AUTO_VARIANT}.json").read_text())["kept_nodes"]) if with_auto else set()
        nncf_record = Path(cell.get("nncf_dir") or cal) / "nncf-ac.json"
        nncf = set(json.loads(nncf_record.read_text()).get("reverted_names", [])) if with_nncf and nncf_record.is_file() else set()
        figures.append((f"{cell['model']} on {cell['dataset']}: {start_variant}", frame, ours, nncf))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    write_parquet(table, out["rescue_table"])
    write_text(rescue_markdown(table, cpu_model()) if len(table) else "(int8-auto disabled)\n", out["rescue"])
    with atomic_path(out["sensitivity_figure"]) as tmp:
        plot_sensitivity(figures, tmp)
    return table
