"""ONNX Runtime, LiteRT and OpenVINO side by side: INT8 latency ratios, INT8/FP32 speedups, top-1 per precision.

For each model (its ``.keras`` file and its ONNX export) this builds FP32, FP16 and INT8 engines with
the workflow's three CPU backends (ONNX Runtime and OpenVINO from the ONNX file, LiteRT from the
Keras file; INT8 calibrated on the same train images, drawn by ``workflow_scripts.stages.engine.
calibration_source``), evaluates top-1 on the whole test split, then measures latency
*interleaved*: every round runs ``--iterations`` inference tasks on each engine in turn (the order
rotates each round), all on the same in-memory batch and with the same thread count, so a slow
phase of the machine hits every engine alike. Reported per engine: median and p90 over all measured
tasks; per ratio: the ratio of medians and its range over the rounds' per-round medians. A task is
timed as the workflow times it (``workflow_scripts.stages.latency``): by the runtime's own per-call timer
where the runner has one (OpenVINO), else by the wall clock around ``run``.

Usage::

    python benchmarks/backends_side_by_side.py --data /tmp/edgeptq-bench/digits_32px \\
        /tmp/edgeptq-bench/MobileNetV3Small/model.keras:/tmp/edgeptq-bench/MobileNetV3Small/model.onnx \\
        /tmp/edgeptq-bench/DenseNet169/model.keras:/tmp/edgeptq-bench/DenseNet169/model.onnx

Engines go to a temporary folder that is deleted at the end. ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workflow_scripts.backends import litert as litert_backend, onnxruntime as onnxruntime_backend, openvino as openvino_backend
from workflow_scripts.data.data_io import iter_batches
from workflow_scripts.stages.engine import calibration_source

BACKENDS = {
    # name: (module, source kind, engine suffix, INT8 options)
    "ort": (onnxruntime_backend, "onnx", "onnx", {"method": "entropy", "per_channel": True}),
    "litert": (litert_backend, "keras", "tflite", {"method": "minmax", "per_channel": True}),
    "openvino": (openvino_backend, "onnx", "xml", {"method": "minmax", "per_channel": True}),
}


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown CPU", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    dot = [f for f in ("avx2", "avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "avx512_fp16") if f in flags]
    return f"{model} ({os.cpu_count()} logical CPUs; {' '.join(dot) or 'no AVX2/VNNI flags seen'})"


def top1(module, engine: Path, data: Path, threads: int) -> float:
    runner = module.load_runner(engine, threads)
    correct = total = 0
    try:
        for images, labels in iter_batches(data, "test", 32):
            correct += int((runner.run(images).argmax(1) == labels).sum())
            total += len(labels)
    finally:
        runner.close()
    return correct / total


def measure(runners: dict, batch: np.ndarray, warmup: int, rounds: int, iterations: int) -> dict[str, list[list[float]]]:
    """Interleaved latency: per engine, one list of task latencies (ms) per round."""
    for runner in runners.values():
        for _ in range(warmup):
            runner.run(batch)
    names = list(runners)
    samples: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            run, times = runners[name].run, []
            # The workflow's clock: the runtime's own per-call timer where the runner has one (OpenVINO's
            # InferRequest.latency, what benchmark_app reports), else the wall time around run().
            timer = getattr(runners[name], "runtime_latency_s", None)
            for _ in range(iterations):
                started = time.perf_counter()
                run(batch)
                elapsed = time.perf_counter() - started
                times.append((timer() if timer is not None else elapsed) * 1e3)
            samples[name].append(times)
    return samples


def ratio(samples, numerator: str, denominator: str) -> tuple[float, float, float]:
    """Ratio of overall medians, and the min/max of per-round median ratios."""
    overall = np.median(np.concatenate(samples[numerator])) / np.median(np.concatenate(samples[denominator]))
    per_round = [np.median(a) / np.median(b) for a, b in zip(samples[numerator], samples[denominator])]
    return float(overall), float(min(per_round)), float(max(per_round))


def run_model(keras_path: Path, onnx_path: Path, data: Path, args, work: Path) -> dict:
    name = keras_path.parent.name if keras_path.stem == "model" else keras_path.stem
    batches = calibration_source(data, args.calibration_images, 16, args.seed)
    engines, builds, accuracy = {}, {}, {}
    for backend, (module, source_kind, suffix, int8_options) in BACKENDS.items():
        source = keras_path if source_kind == "keras" else onnx_path
        for precision in args.precisions:
            engine = work / name / f"{backend}_{precision}.{suffix}"
            engine.parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            facts = module.build_engine(source, engine, precision, batches if precision == "int8" else None,
                                        dict(int8_options) if precision == "int8" else {})
            wall = time.perf_counter() - started
            size = engine.stat().st_size + (engine.with_suffix(".bin").stat().st_size if suffix == "xml" else 0)
            builds[f"{backend}_{precision}"] = {"build_s": wall, "size_mb": size / 1e6,
                                                **{k: v for k, v in facts.items() if not k.endswith("_text")}}
            engines[f"{backend}_{precision}"] = (module, engine)
            accuracy[f"{backend}_{precision}"] = top1(module, engine, data, args.threads)
            print(f"  built {name} {backend} {precision}: {wall:.1f} s, {size / 1e6:.2f} MB, "
                  f"top-1 {accuracy[f'{backend}_{precision}']:.4f}", flush=True)
    images, _ = next(iter_batches(data, "test", args.batch_size))
    runners = {key: module.load_runner(engine, args.threads) for key, (module, engine) in engines.items()}
    try:
        samples = measure(runners, images, args.warmup, args.rounds, args.iterations)
    finally:
        for runner in runners.values():
            runner.close()
    latency = {key: {"median_ms": float(np.median(np.concatenate(v))), "p90_ms": float(np.percentile(np.concatenate(v), 90)),
                     "tasks": int(sum(len(r) for r in v))} for key, v in samples.items()}
    ratios = {}
    if "int8" in args.precisions:
        ratios["LiteRT INT8 / ORT INT8"] = ratio(samples, "litert_int8", "ort_int8")
        ratios["OpenVINO INT8 / ORT INT8"] = ratio(samples, "openvino_int8", "ort_int8")
        if "fp32" in args.precisions:
            ratios["ORT FP32 / ORT INT8"] = ratio(samples, "ort_fp32", "ort_int8")
            for backend in BACKENDS:
                # Speedup = FP32 latency / INT8 latency (>1: INT8 is faster).
                ratios[f"{backend} INT8 speedup (FP32/INT8)"] = ratio(samples, f"{backend}_fp32", f"{backend}_int8")
    return {"model": name, "builds": builds, "accuracy": accuracy, "latency": latency, "ratios": ratios}


def print_model(result: dict, precisions: list[str]) -> None:
    print(f"\n== {result['model']}")
    print(f"{'engine':<16}{'build s':>9}{'MB':>8}{'median ms':>11}{'p90 ms':>9}{'top-1':>8}")
    for key, latency in result["latency"].items():
        build = result["builds"][key]
        print(f"{key:<16}{build['build_s']:>9.1f}{build['size_mb']:>8.2f}{latency['median_ms']:>11.3f}"
              f"{latency['p90_ms']:>9.3f}{result['accuracy'][key]:>8.4f}")
    print(f"{'ratio':<34}{'of medians':>11}{'per-round range':>20}")
    for label, (overall, low, high) in result["ratios"].items():
        print(f"{label:<34}{overall:>11.2f}{f'{low:.2f}-{high:.2f}':>20}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="KERAS_PATH:ONNX_PATH of each model")
    parser.add_argument("--data", type=Path, required=True, help="prepared data folder (train split calibrates, test split evaluates)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=40, help="measured tasks per engine per round")
    parser.add_argument("--calibration-images", type=int, default=256)
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    args.precisions = [p for p in args.precisions.split(",") if p]
    versions = {"onnxruntime": onnxruntime_backend.version(), "ai-edge-litert": litert_backend.version(),
                "openvino": openvino_backend.version(), "nncf": openvino_backend.nncf_version()}
    print(f"CPU: {cpu_description()}")
    print(f"versions: {versions}; threads {args.threads}, batch {args.batch_size}, {args.rounds} rounds x "
          f"{args.iterations} tasks per engine, {args.warmup} warm-up; {args.calibration_images} calibration images",
          flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeptq-side-by-side-") as work:
        for spec in args.models:
            keras_path, onnx_path = (Path(p) for p in spec.split(":", 1))
            result = run_model(keras_path, onnx_path, args.data, args, Path(work))
            print_model(result, args.precisions)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "versions": versions, "args": {
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "results": results},
            indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
