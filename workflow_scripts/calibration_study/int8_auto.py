"""``int8-auto``: rescue an INT8 variant by keeping its most harmful nodes in float, judged on validation only.

From any named variant (``auto.start``, e.g. ``entropy-n256-pt-asym-none``, the per-tensor collapse)
and its sensitivity ranking (:mod:`workflow_scripts.calibration_study.sensitivity`), :func:`run_int8_auto` searches the
fewest float nodes meeting the target (:func:`workflow_scripts.calibration_study.rescue_search.search_float_groups`).

Every step is judged on the **validation** split (:class:`ValidationSet`, a seeded subset of it when
``auto.val_images`` is set): the step's top-1 drop versus FP32 on the same images, with its paired 95%
bootstrap interval; the criterion is the interval's upper bound (``upper_bound``, the default: the
same bound the test verdict uses) or the point drop (``point``) at most ``target_drop_points``. This
module never opens the test split; the workflow's evaluate rule reads it once, on the final engine,
and the study summary gives that engine's paired interval.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CRITERIA = ("upper_bound", "point")


class ValidationSet:
    """The images the search is judged on: the validation split (or a seeded subset of it), nothing else."""

    def __init__(self, data_dir: str | Path, num_images: int = 0, seed: int = 0):
        from workflow_scripts.data.data_io import open_split

        images, labels = open_split(data_dir, "val")
        order = np.arange(len(labels))
        if num_images and num_images < len(labels):
            order = np.sort(np.random.default_rng(seed).choice(len(labels), size=num_images, replace=False))
        self.indices = order
        self.images = np.asarray(images[order])
        self.labels = np.asarray(labels[order])

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int):
        """(float32 NHWC images, labels) batches."""
        from workflow_scripts.data.data_io import to_model_input

        for start in range(0, len(self), batch_size):
            yield to_model_input(self.images[start:start + batch_size]), self.labels[start:start + batch_size]

    def correctness(self, runner, batch_size: int) -> np.ndarray:
        """Per-image top-1 correctness (0/1) of ``runner``."""
        correct = []
        for images, labels in self.batches(batch_size):
            scores = np.asarray(runner.run(images), dtype=np.float64)
            ok = np.isfinite(scores).all(axis=1) & (np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=1) == labels)
            correct.append(ok)
        return np.concatenate(correct).astype(float) if correct else np.zeros(0)


def verdict(fp32: np.ndarray, correct: np.ndarray, target_points: float, criterion: str, n_resamples: int,
            seed: int) -> dict:
    """One search step's figures on validation and whether it meets the target."""
    from workflow_scripts.measure.statistics import paired_drop

    if criterion not in CRITERIA:
        raise ValueError(f"int8-auto criterion {criterion!r} is not one of {CRITERIA}")
    drop, low, high = paired_drop(fp32, correct, n_resamples=n_resamples, seed=seed)
    score = high if criterion == "upper_bound" else drop
    return {"meets": bool(score <= target_points), "val_drop_points": drop, "val_drop_low": low,
            "val_drop_high": high}


def run_int8_auto(onnx_path: str | Path, fp32_engine: str | Path, start_variant: str, sensitivity_table: str | Path,
                  data_dir: str | Path, calibration_batch_size: int, eval_batch_size: int, target_points: float,
                  budget: int | None, seed: int, engine_path: str | Path, record_json: str | Path,
                  steps_table: str | Path, labels: dict, provenance: dict, prepared: str | Path | None = None,
                  statistics: str | Path | None = None, int8_options: dict | None = None,
                  criterion: str = "upper_bound", val_images: int = 0, prune: bool = True,
                  n_resamples: int = 1000) -> dict:
    """``int8-auto`` from ``start_variant``: the fewest most-harmful nodes in float meeting the validation target.

    With ``prepared`` and ``statistics`` (the study's shared pre-processed model and the start variant's
    calibration statistics) every step reuses them instead of calibrating again. ``budget``: most
    nodes in float (``None``: no limit). Writes the engine, a JSON record (kept nodes, every step,
    search wall time) and the steps table.
    """
    import onnx

    from workflow_scripts.core.artifacts import atomic_path, write_parquet, write_text
    from workflow_scripts.backends import onnxruntime as ort_backend
    from workflow_scripts.calibration_study.presets import prepare_model, resolve_exclusions
    from workflow_scripts.calibration_study.study import train_split_size
    from workflow_scripts.calibration_study.variants import check_num_images, parse_variant, variant_options
    from workflow_scripts.stages.engine import calibration_source
    from workflow_scripts.core.provenance import with_provenance
    from workflow_scripts.calibration_study.rescue_search import search_float_groups
    from workflow_scripts.calibration_study.sensitivity import ranked_groups

    started = time.perf_counter()
    variant = parse_variant(start_variant)
    check_num_images(variant, train_split_size(data_dir))
    if criterion not in CRITERIA:
        raise ValueError(f"config key 'calibration_study.auto.criterion' is {criterion!r}; use one of {CRITERIA}")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgeptq-auto-", dir=engine_path.parent))
    try:
        shared = {}
        if prepared and statistics:
            shared = {"prepared_model": str(prepared), "calibration_statistics": str(statistics)}
        else:
            prepared = prepare_model(onnx_path, work / "prepared.onnx")
        prepared_proto = onnx.load(str(prepared), load_external_data=False)
        kinds = {n.name: n.op_type for n in prepared_proto.graph.node}
        op_types, preset_nodes = resolve_exclusions(prepared_proto, variant.exclude)
        ranking = ranked_groups(pd.read_parquet(sensitivity_table), exclude=preset_nodes)
        validation = ValidationSet(data_dir, val_images, seed)
        fp32 = validation.correctness(ort_backend.load_runner(fp32_engine), eval_batch_size)
        batches = calibration_source(data_dir, variant.num_images, calibration_batch_size, seed)
        built: dict[tuple, Path] = {}

        def judge(kept: list[str]) -> dict:
            path = work / f"auto-{len(built)}.onnx"
            options = {**variant_options(variant, op_types, preset_nodes + kept, calibration_batch_size), **shared,
                       **{k: v for k, v in (int8_options or {}).items() if v is not None}}
            t0 = time.perf_counter()
            ort_backend.build_engine(onnx_path, path, "int8", batches, options, None)
            t1 = time.perf_counter()
            built[tuple(kept)] = path
            correct = validation.correctness(ort_backend.load_runner(path), eval_batch_size)
            return {**verdict(fp32, correct, target_points, criterion, n_resamples, seed),
                    "build_s": t1 - t0, "val_eval_s": time.perf_counter() - t1}

        result = search_float_groups(ranking, judge, budget=budget, prune=prune)
        with atomic_path(engine_path) as tmp:
            shutil.copyfile(built[tuple(result["kept_nodes"])], tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    final = result["final_step"]
    record = {"start_variant": variant.id, "baseline_variant": variant.id, "target_drop_points": target_points,
              "criterion": criterion, "node_budget": budget, "prune": prune, "val_images": int(len(validation)),
              "val_split": "val", "fp32_val_top1": float(fp32.mean()), "preset_float_nodes": preset_nodes,
              "float_op_types": op_types, "final_val_drop_points": final["val_drop_points"],
              "final_val_drop_high": final["val_drop_high"], "search_s": time.perf_counter() - started,
              "kept_op_types": [kinds.get(n, "") for n in result["kept_nodes"]], **result}
    write_text(json.dumps(record, indent=2), record_json)
    steps = pd.DataFrame(result["steps"])
    for key, value in labels.items():
        steps[key] = value
    steps["start_variant"] = variant.id
    steps["target_drop_points"] = target_points
    steps["criterion"] = criterion
    write_parquet(with_provenance(steps, provenance), steps_table)
    return record
