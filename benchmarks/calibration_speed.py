"""INT8 build time over FP32 forward time on the same calibration images: ONNX Runtime's calibrator vs ours.

For each exported ``model.onnx`` and its prepared data folder, in rounds that alternate the three
measurements (so load changes on a shared machine hit all of them alike):

- FP32 forward: the FP32 session (ORT_ENABLE_ALL, as the workflow's FP32 engine) run over the
  calibration batches, session creation excluded;
- before: the workflow's INT8 build with ONNX Runtime's own calibrator (``create_calibrator``,
  collect batch by batch) and quantize_static as shipped;
- after: the same build with :mod:`workflow_scripts.backends.onnxruntime.calibrate` (one pass, fixed-width histograms,
  vectorized KL search) and ``fast_quantize_static`` around quantize_static (vectorized per-channel weights, linear rewiring).

Both builds include pre-processing (quant_pre_process), calibration and quantize_static. A first,
untimed round pays the imports. Prints per model the medians and the ratios build / FP32 forward;
with ``--agreement`` also how far the entropy thresholds are from ONNX Runtime's (in ORT histogram
bins) and the test-split top-1 of both INT8 models.

Usage::

    python benchmarks/calibration_speed.py --rounds 3 \\
        /tmp/cal17/MobileNetV3Small_32/model.onnx:/tmp/cal17/digits_32px \\
        /tmp/cal17/DenseNet169_32/model.onnx:/tmp/cal17/digits_32px \\
        /tmp/cal17/MobileNetV3Small_224/model.onnx:/tmp/cal17/digits_224px
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.stages.engine import calibration_source

BEFORE = {"calibrator": "onnxruntime", "fast_rewrites": False}
AFTER = {"calibrator": "edgeptq", "fast_rewrites": True}


def forward_s(model: Path, batches) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), ort_backend.session_options(0), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = list(batches())
    session.run(None, {name: images[0]})
    started = time.perf_counter()
    for batch in images:
        session.run(None, {name: batch})
    return time.perf_counter() - started


def build(model: Path, out: Path, batches, method: str, extra: dict) -> dict:
    started = time.perf_counter()
    facts = ort_backend.build_engine(model, out, "int8", batches, {"method": method, **extra}, None)
    facts["wall_s"] = time.perf_counter() - started
    return facts


def top1(engine: Path, data: Path) -> tuple[float, np.ndarray]:
    from workflow_scripts.data.data_io import iter_batches

    runner = ort_backend.load_runner(engine)
    predicted, labels = [], []
    for images, batch_labels in iter_batches(data, "test", 64):
        predicted.append(np.argmax(runner.run(images), axis=1))
        labels.append(batch_labels)
    predicted, labels = np.concatenate(predicted), np.concatenate(labels)
    return float((predicted == labels).mean()), predicted


def agreement(model: Path, data: Path, batches, work: Path) -> str:
    """Entropy thresholds of ours vs ORT's collector on the same pre-processed model, in ORT's final bins."""
    import onnx
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    from workflow_scripts.backends.onnxruntime import calibrate

    prepared = ort_backend.prepare_for_quantization(model, work / "prepared.onnx")
    reference = create_calibrator(str(prepared), augmented_model_path=str(work / "augmented.onnx"),
                                  calibrate_method=CalibrationMethod.Entropy)
    input_name = onnx.load(str(prepared)).graph.input[0].name
    for batch in batches():
        reference.collect_data(ort_backend._BatchReader(input_name, iter([batch])))
    histograms = reference.collector.histogram_dict
    ort_ranges = reference.compute_data()
    ours = calibrate.tensor_ranges(calibrate.collect_statistics(prepared, batches), "entropy")
    in_bins = []
    for name, (low, high) in ours.items():
        edges = histograms[name][1]
        width = float(edges[1] - edges[0]) or 1.0
        ref_low, ref_high = (float(np.asarray(v).reshape(-1)[0]) for v in ort_ranges[name].range_value)
        in_bins.append(max(abs(float(low) - ref_low), abs(float(high) - ref_high)) / width)
    in_bins = np.array(in_bins)
    return (f"{len(in_bins)} tensors: identical {np.mean(in_bins < 1e-3):.1%}, within 1 bin {np.mean(in_bins <= 1.001):.1%}, "
            f"within 2 bins {np.mean(in_bins <= 2.001):.1%}, max {in_bins.max():.2f} bins")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model.onnx:data_dir pairs")
    parser.add_argument("--images", type=int, default=256, help="calibration images (train split)")
    parser.add_argument("--batch-size", type=int, default=16, help="calibration batch size")
    parser.add_argument("--method", default="entropy", choices=ort_backend.CALIBRATION_METHODS)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (after one untimed round)")
    parser.add_argument("--agreement", action="store_true", help="also threshold agreement and top-1")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for pair in args.models:
            model, data = (Path(p) for p in pair.split(":"))
            name = f"{model.parent.name} ({data.name})"
            batches = calibration_source(data, args.images, args.batch_size, 0)
            times = {"fp32": [], "before": [], "after": []}
            parts = {"before": [], "after": []}
            for round_ in range(args.rounds + 1):
                fp32 = forward_s(model, batches)
                before = build(model, tmp / "before.onnx", batches, args.method, BEFORE)
                after = build(model, tmp / "after.onnx", batches, args.method, AFTER)
                if round_ == 0:
                    continue  # imports, caches
                times["fp32"].append(fp32)
                times["before"].append(before["wall_s"])
                times["after"].append(after["wall_s"])
                parts["before"].append(before)
                parts["after"].append(after)
            med = {k: statistics.median(v) for k, v in times.items()}
            row = {"model": name, **med}
            for key in ("before", "after"):
                row[f"{key}_parts"] = {p: statistics.median(f[p] for f in parts[key])
                                       for p in ("preprocess_s", "calibration_s", "quantize_s")}
            if args.agreement:
                row["agreement"] = agreement(model, data, batches, tmp)
                row["top1_before"], pred_before = top1(tmp / "before.onnx", data)
                row["top1_after"], pred_after = top1(tmp / "after.onnx", data)
                row["same_predictions"] = float((pred_before == pred_after).mean())
            rows.append(row)
            print(f"done {name}", file=sys.stderr, flush=True)

    print(f"{args.method}, {args.images} images in batches of {args.batch_size}, medians of {args.rounds} "
          f"interleaved rounds\n")
    print("| model | FP32 forward s | INT8 build before s | after s | before / FP32 | after / FP32 | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['fp32']:.3f} | {r['before']:.2f} | {r['after']:.2f} | "
              f"{r['before'] / r['fp32']:.1f}x | {r['after'] / r['fp32']:.1f}x | {r['before'] / r['after']:.1f}x |")
    print("\n| model | build | pre-process s | calibration s | quantize_static s |")
    print("|---|---|---|---|---|")
    for r in rows:
        for key in ("before", "after"):
            p = r[f"{key}_parts"]
            print(f"| {r['model']} | {key} | {p['preprocess_s']:.2f} | {p['calibration_s']:.2f} | {p['quantize_s']:.2f} |")
    if args.agreement:
        print("\n| model | entropy thresholds vs ORT | top-1 ORT calibrator | top-1 ours | same prediction |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['model']} | {r['agreement']} | {100 * r['top1_before']:.2f} | {100 * r['top1_after']:.2f} | "
                  f"{100 * r['same_predictions']:.1f}% |")


if __name__ == "__main__":
    main()
