"""Training time per epoch at the study's recipe on this CPU, and the full study extrapolated from it.

For each (model, dataset) a fresh child process (as every train_model job is) builds the model
with the workflow's own ``build_model`` (weights none: the cost of a step does not depend on the
initial values), compiles it as ``train.py`` does (Adam, sparse categorical cross-entropy,
accuracy), and fits it for two epochs of ``--steps`` steps each on random uint8-valued images
streamed by the workflow's own ``make_sequence`` from a memory-mapped split, like training does:

* epoch 1 includes tracing the train function (the first epoch of every real training run);
* epoch 2 is the steady state; steady seconds per step = epoch 2 / steps.

Validation runs after every real epoch, so the forward-only step is timed too (``evaluate`` twice
on the same batches, the second call timed). A full epoch is then extrapolated:

    train_steps x train_step_s + val_steps x eval_step_s     (+ the tracing overhead, once per run)

with the splits the workflow prepares: CIFAR-100 train 50,000 - 15 % val (split.val_fraction,
default 0.15) = 42,500, val 7,500; Oxford-102 flowers trnid 1,020, valid 1,020. The full study is
6 models x 2 datasets x ``--epochs`` epochs. Models not measured are estimated from their forward
FLOPs (counted here with TensorFlow's profiler) by interpolating the seconds per image between the
measured models, and reported as estimates.

    python benchmarks/epoch_time.py                                  # MobileNetV3Small, DenseNet201
    python benchmarks/epoch_time.py --models MobileNetV3Small --steps 10
    python benchmarks/epoch_time.py --steps 20 --cifar-steps 8   # what docs/training.md reports
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ALL_MODELS = ["MobileNetV3Small", "MobileNetV3Large", "EfficientNetB1", "EfficientNetB3", "DenseNet169", "DenseNet201"]
# The study's batch sizes (config/config.yaml) and the classes of each dataset.
BATCH = {"cifar100": 32, "oxford_flowers102": 4}
CLASSES = {"cifar100": 100, "oxford_flowers102": 102}


def split_sizes(val_fraction: float) -> dict[str, dict[str, int]]:
    """Images per split as the workflow prepares them (val carved from CIFAR's train, rounded up)."""
    cifar_val = math.ceil(val_fraction * 50_000)
    return {
        "cifar100": {"train": 50_000 - cifar_val, "val": cifar_val, "test": 10_000},
        "oxford_flowers102": {"train": 1_020, "val": 1_020, "test": 6_149},
    }


def write_split(folder: Path, n: int, size: int, num_classes: int, seed: int) -> None:
    """A prepared-data folder (train split only) of ``n`` random uint8 images, as datasets.py writes it."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = np.lib.format.open_memmap(folder / "train_images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for i in range(n):
        images[i] = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    images.flush()
    del images
    np.save(folder / "train_labels.npy", rng.integers(0, num_classes, size=n).astype(np.int64))
    meta = {"dataset": "synthetic", "input_size": size, "num_classes": num_classes, "counts": {"train": n}}
    (folder / "meta.json").write_text(json.dumps(meta))


def measure_one(model_name: str, dataset: str, steps: int, size: int, threads: int, seed: int) -> dict:
    """Child process: time two epochs of ``steps`` steps and the forward-only step."""
    from workflow_scripts.stages.train import build_training_state, configure_tensorflow, make_sequence

    configure_tensorflow(threads, seed)
    import keras

    from workflow_scripts.models.zoo import build_model

    batch = BATCH[dataset]
    with tempfile.TemporaryDirectory(prefix="epoch_time_") as tmp:
        data_dir = Path(tmp) / "data"
        write_split(data_dir, steps * batch, size, CLASSES[dataset], seed)
        started = time.perf_counter()
        model = build_model(model_name, CLASSES[dataset], size, "none", 0.9)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        build_s = time.perf_counter() - started
        epoch_s: list[float] = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                epoch_s.append(time.perf_counter() - self.t0)

        train_seq = make_sequence(data_dir, "train", batch, True, seed)
        # As train.py does: the optimizer's and metrics' variables exist before the first trace.
        build_training_state(model, train_seq[0])
        model.fit(train_seq, epochs=2, verbose=0, callbacks=[Clock()])
        eval_seq = make_sequence(data_dir, "train", batch, False, seed)
        t0 = time.perf_counter()
        model.evaluate(eval_seq, verbose=0)
        eval_first_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.evaluate(eval_seq, verbose=0)
        eval_s = time.perf_counter() - t0
    return {
        "model": model_name, "dataset": dataset, "batch_size": batch, "steps": steps, "threads": threads,
        "params": int(model.count_params()), "build_s": build_s,
        "first_epoch_s": epoch_s[0], "steady_epoch_s": epoch_s[1],
        "train_step_s": epoch_s[1] / steps, "first_epoch_overhead_s": epoch_s[0] - epoch_s[1],
        "eval_step_s": eval_s / steps, "eval_first_s": eval_first_s,
    }


def forward_flops(model_name: str, size: int) -> float:
    """Forward FLOPs of one image (TensorFlow profiler on the traced inference graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from workflow_scripts.models.zoo import build_model

    model = build_model(model_name, 100, size, "none", 0.9)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3], tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=graph, options=opts).total_float_ops)


def run_child(args: list[str], timeout: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def interpolate(x: float, points: list[tuple[float, float]]) -> float:
    """Piecewise-linear y(x) through sorted points, extended linearly past the ends."""
    points = sorted(points)
    if len(points) == 1:
        return points[0][1] * x / points[0][0]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1 or (x1, y1) == points[-1]:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["MobileNetV3Small", "DenseNet201"], choices=ALL_MODELS,
                        help="models to time (the others are estimated from FLOPs)")
    parser.add_argument("--datasets", nargs="+", default=list(BATCH), choices=list(BATCH))
    parser.add_argument("--steps", type=int, default=20, help="steps per timed epoch (default 20)")
    parser.add_argument("--cifar-steps", type=int, default=None,
                        help="steps per timed epoch for cifar100 (batch 32; default --steps)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2, help="train.threads (schema default 2)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the study (default 10)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOPs count and the estimate of unmeasured models")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--flops-of", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        print("RESULT " + json.dumps(measure_one(*args.one, args.steps, args.size, args.threads, seed=0)))
        return
    if args.flops_of:
        print("RESULT " + json.dumps({"flops": forward_flops(args.flops_of, args.size)}))
        return

    sizes = split_sizes(args.val_fraction)
    measured = []
    for model in args.models:
        for dataset in args.datasets:
            steps = args.cifar_steps if dataset == "cifar100" and args.cifar_steps else args.steps
            r = run_child(["--one", model, dataset, "--steps", str(steps), "--size", str(args.size),
                           "--threads", str(args.threads)], timeout=3600)
            n = sizes[dataset]
            r["train_steps_per_epoch"] = math.ceil(n["train"] / r["batch_size"])
            r["val_steps_per_epoch"] = math.ceil(n["val"] / r["batch_size"])
            r["full_epoch_train_s"] = r["train_steps_per_epoch"] * r["train_step_s"]
            r["full_epoch_val_s"] = r["val_steps_per_epoch"] * r["eval_step_s"]
            r["full_epoch_s"] = r["full_epoch_train_s"] + r["full_epoch_val_s"]
            r["training_run_s"] = args.epochs * r["full_epoch_s"] + max(r["first_epoch_overhead_s"], 0.0)
            r["test_forward_pass_s"] = math.ceil(n["test"] / r["batch_size"]) * r["eval_step_s"]
            measured.append(r)
            print(f"{model:18s} {dataset:18s} batch {r['batch_size']:2d}: first epoch ({steps} steps) "
                  f"{r['first_epoch_s']:.1f} s, steady {r['steady_epoch_s']:.1f} s = {r['train_step_s']:.3f} s/step "
                  f"({r['train_step_s'] / r['batch_size'] * 1000:.1f} ms/image), eval {r['eval_step_s']:.3f} s/step; "
                  f"full epoch {r['full_epoch_s'] / 3600:.2f} h ({r['train_steps_per_epoch']} train + "
                  f"{r['val_steps_per_epoch']} val steps)", flush=True)

    rows = {(r["model"], r["dataset"]): dict(r, source="measured") for r in measured}
    flops = {}
    if not args.no_flops:
        for model in ALL_MODELS:
            flops[model] = run_child(["--flops-of", model, "--size", str(args.size)], timeout=900)["flops"]
            print(f"{model:18s} forward {flops[model] / 1e9:.2f} GFLOPs per {args.size}x{args.size} image", flush=True)
        for dataset in args.datasets:
            ref = [r for r in measured if r["dataset"] == dataset]
            if not ref:
                continue
            batch = BATCH[dataset]
            n = sizes[dataset]
            per_image_train = [(flops[r["model"]], r["train_step_s"] / batch) for r in ref]
            per_image_eval = [(flops[r["model"]], r["eval_step_s"] / batch) for r in ref]
            for model in ALL_MODELS:
                if (model, dataset) in rows:
                    continue
                train_step_s = interpolate(flops[model], per_image_train) * batch
                eval_step_s = interpolate(flops[model], per_image_eval) * batch
                full = math.ceil(n["train"] / batch) * train_step_s + math.ceil(n["val"] / batch) * eval_step_s
                rows[(model, dataset)] = {
                    "model": model, "dataset": dataset, "batch_size": batch, "source": "FLOPs-interpolated",
                    "train_step_s": train_step_s, "eval_step_s": eval_step_s, "full_epoch_s": full,
                    "training_run_s": args.epochs * full,
                    "test_forward_pass_s": math.ceil(n["test"] / batch) * eval_step_s,
                }

    total_train = sum(r["training_run_s"] for r in rows.values())
    # Base accuracy (Keras) plus one evaluation per engine precision: about four forward passes over test.
    total_test = sum(4 * r["test_forward_pass_s"] for r in rows.values())
    complete = len(rows) == len(ALL_MODELS) * len(args.datasets)
    print()
    print(f"{'model':18s} {'dataset':18s} {'source':19s} {'s/step':>7s} {'epoch h':>8s} {'run h':>7s}")
    for (model, dataset), r in sorted(rows.items(), key=lambda kv: (kv[0][1], ALL_MODELS.index(kv[0][0]))):
        print(f"{model:18s} {dataset:18s} {r['source']:19s} {r['train_step_s']:7.3f} {r['full_epoch_s'] / 3600:8.2f} "
              f"{r['training_run_s'] / 3600:7.2f}")
    scope = "full study" if complete else f"{len(rows)} of {len(ALL_MODELS) * len(args.datasets)} cells"
    print(f"\n{scope}: training {args.epochs} epochs (with validation) {total_train / 3600:.1f} h "
          f"= {total_train / 86400:.1f} days of this CPU ({args.threads} threads); "
          f"test-set inference (Keras + 3 engines, Keras forward time as proxy) {total_test / 3600:.1f} h")
    report = {"steps": args.steps, "size": args.size, "threads": args.threads, "epochs": args.epochs,
              "split_sizes": sizes, "flops": flops, "cells": list(rows.values()),
              "total_training_s": total_train, "total_test_inference_s": total_test, "complete": complete}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
