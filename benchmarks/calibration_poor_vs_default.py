"""Does a deliberately poor INT8 calibration lose more top-1 than the default? Measure it per model.

For each exported ``model.onnx`` (the FP32 graph the workflow builds engines from) and its prepared
data folder, build INT8 engines for the given calibration variants with the workflow's own ONNX
Runtime INT8 build, then report on the val and test splits: top-1 drop versus FP32 in points with a
paired bootstrap 95% interval, the number of images whose correctness flipped, and the class-score
SQNR against FP32 (dB; higher is closer to FP32).

Usage (after a run that exported the models, e.g. the quickstart)::

    python benchmarks/calibration_poor_vs_default.py \
        results/intel-xeon-processor/onnx/digits_32px/*/model.onnx

The data folder defaults to ``results/data/<dataset>_<size>px`` taken from the model's path
(``--data`` overrides it). Engines are written to a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.calibration_study.study import paired_drop, parse_variant, variant_options
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.engine import calibration_source

DEFAULT_VARIANTS = ["entropy-n256-pc-asym-none", "minmax-n8-pt-asym-none", "minmax-n8-pt-sym-none"]


def scores_and_labels(path: Path, data_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Class scores of every image of one split, and the labels."""
    runner = ort_backend.load_runner(path)
    scores, labels = [], []
    for images, batch_labels in iter_batches(data_dir, split, 64):
        scores.append(np.asarray(runner.run(images), dtype=np.float64))
        labels.append(batch_labels)
    return np.concatenate(scores), np.concatenate(labels)


def sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(((reference - other) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((reference ** 2).sum()) / noise)


def data_dir_of(model: Path) -> Path:
    """results/<device>/onnx/<dataset>_<size>px/<model>/model.onnx -> results/data/<dataset>_<size>px."""
    return model.parents[4] / "data" / model.parents[1].name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path, help="exported FP32 model.onnx files")
    parser.add_argument("--data", type=Path, help="prepared data folder (default: from each model's path)")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, help="calibration variant ids")
    parser.add_argument("--seed", type=int, default=0, help="calibration sample and bootstrap seed")
    args = parser.parse_args(argv)

    print("| model | input | variant | split | FP32 top-1 % | drop (points) | paired 95% CI | flipped | SQNR dB |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            data_dir = args.data or data_dir_of(model)
            name, size = model.parent.name, model.parents[1].name
            reference = {split: scores_and_labels(model, data_dir, split) for split in ("val", "test")}
            for variant_id in args.variants:
                variant = parse_variant(variant_id)
                engine = Path(tmp) / f"{name}-{variant_id}.onnx"
                start = time.perf_counter()
                # ONNX Runtime's calibrator prints progress to stdout; keep the table clean.
                with contextlib.redirect_stdout(sys.stderr):
                    ort_backend.build_engine(model, engine, "int8",
                                             calibration_source(data_dir, variant.num_images, 16, args.seed),
                                             variant_options(variant, [], [], 16), None)
                build_s = time.perf_counter() - start
                for split, (ref_scores, labels) in reference.items():
                    scores, _ = scores_and_labels(engine, data_dir, split)
                    fp32_ok = (ref_scores.argmax(1) == labels).astype(float)
                    int8_ok = (scores.argmax(1) == labels).astype(float)
                    drop, low, high = paired_drop(fp32_ok, int8_ok, seed=args.seed)
                    print(f"| {name} | {size} | {variant_id} | {split} | {100 * fp32_ok.mean():.2f} | {drop:+.2f} | "
                          f"[{low:+.2f}, {high:+.2f}] | {int((fp32_ok != int8_ok).sum())} | "
                          f"{sqnr_db(ref_scores, scores):.1f} |", flush=True)
                print(f"<!-- {name} {variant_id}: build {build_s:.1f} s -->", file=sys.stderr)


if __name__ == "__main__":
    main()
