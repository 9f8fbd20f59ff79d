"""Wall time of the calibration study's INT8 builds, before (every variant calibrates) and after (calibrate once).

The study's other jobs (evaluation, latency) do not change; this measures the part that did, per model:

- before: every variant is a full INT8 build with ONNX Runtime's calibrator and its own pre-processing,
  as the study ran it;
- after: one pre-processed model per model, one statistics artifact per calibration image set
  (:func:`workflow_scripts.calibration_study.study.measure_statistics`), then every variant built from them
  (ranges + quantize_static within ``fast_quantize_static``), as the study's rules now run it.

The two alternate per round (``--rounds``), after one untimed warm-up variant. Default variants: the
quickstart study of docs/calibration.md (entropy and minmax at 64/256/1024 images plus seven extra
variants). Exclusion presets are resolved on the pre-processed model in both.

Usage::

    python benchmarks/calibration_study_builds.py \\
        /tmp/cal17/MobileNetV3Small_32/model.onnx:/tmp/cal17/digits_32px
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import onnx  # noqa: E402

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.calibration_study.presets import prepare_model, resolve_exclusions
from workflow_scripts.calibration_study.study import measure_statistics, prepare_study_model
from workflow_scripts.calibration_study.variants import expand_variants, parse_variant, variant_options
from workflow_scripts.stages.engine import calibration_source

QUICKSTART_STUDY = {
    "methods": ["entropy", "minmax"], "num_images": [64, 256, 1024],
    "variants": ["percentile99.999-n256-pc-asym-none", "minmax-n8-pt-asym-none", "entropy-n256-pt-asym-none",
                 "entropy-n256-pc-sym-none", "entropy-n256-pc-asym-swish", "entropy-n256-pc-asym-squeeze_excite",
                 "entropy-n256-pc-asym-first_conv+classifier"],
}


def before(model: Path, data: Path, variants: list[str], work: Path, batch_size: int) -> float:
    started = time.perf_counter()
    for variant_id in variants:
        variant = parse_variant(variant_id)
        op_types, nodes = [], []
        if variant.exclude:
            prepared = prepare_model(model, work / "excl.onnx")
            op_types, nodes = resolve_exclusions(onnx.load(str(prepared)), variant.exclude)
        options = {**variant_options(variant, op_types, nodes, batch_size), "calibrator": "onnxruntime",
                   "fast_rewrites": False}
        ort_backend.build_engine(model, work / "before.onnx", "int8",
                                 calibration_source(data, variant.num_images, batch_size, 0), options, None)
    return time.perf_counter() - started


def after(model: Path, data: Path, variants: list[str], work: Path, batch_size: int) -> float:
    started = time.perf_counter()
    prepared = prepare_study_model(model, work / "prepared.onnx")
    statistics_of = {}
    for n in sorted({parse_variant(v).num_images for v in variants}):
        statistics_of[n] = work / f"statistics-n{n}.npz"
        measure_statistics(prepared, data, n, batch_size, 0, statistics_of[n])
    for variant_id in variants:
        variant = parse_variant(variant_id)
        op_types, nodes = resolve_exclusions(onnx.load(str(prepared)), variant.exclude) if variant.exclude else ([], [])
        options = {**variant_options(variant, op_types, nodes, batch_size), "prepared_model": str(prepared),
                   "calibration_statistics": str(statistics_of[variant.num_images])}
        # The batches are not read: the ranges come from the statistics.
        ort_backend.build_engine(model, work / "after.onnx", "int8",
                                 calibration_source(data, variant.num_images, batch_size, 0), options, None)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model.onnx:data_dir pairs")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    variants = expand_variants({**QUICKSTART_STUDY, "baseline": "entropy-n256-pc-asym-none"})
    print(f"{len(variants)} variants: {', '.join(variants)}\n")
    print("| model | study INT8 builds before s | after s | speed-up |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for pair in args.models:
            model, data = (Path(p) for p in pair.split(":"))
            before(model, data, variants[:1], work, args.batch_size)  # imports, caches
            times = {"before": [], "after": []}
            for _ in range(args.rounds):
                times["before"].append(before(model, data, variants, work, args.batch_size))
                times["after"].append(after(model, data, variants, work, args.batch_size))
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"| {model.parent.name} ({data.name}) | {b:.1f} | {a:.1f} | {b / a:.1f}x |", flush=True)


if __name__ == "__main__":
    main()
