"""Top-1/top-5 accuracy on the test split, streamed in batches, for Keras models and engines."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.core.artifacts import write_parquet
from workflow_scripts.data.data_io import iter_batches, open_split

log = logging.getLogger(__name__)


class KerasRunner:
    """The base Keras model behind the backend Runner protocol."""

    input_name = "images"

    def __init__(self, model_path: str | Path):
        from workflow_scripts.models.zoo import load_keras_model

        self.model = load_keras_model(model_path)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.model(batch, training=False).numpy()

    def close(self) -> None:
        self.model = None


def predict(runner, data_dir: str | Path, batch_size: int, max_images: int = 0) -> pd.DataFrame:
    """One row per test image: label, top-1 prediction, whether the label is in the top 5, finiteness."""
    _, labels = open_split(data_dir, "test")
    total = min(len(labels), max_images) if max_images else len(labels)
    rows = []
    started = time.monotonic()
    index = 0
    for images, batch_labels in iter_batches(data_dir, "test", batch_size, limit=total):
        scores = np.asarray(runner.run(images), dtype=np.float64)
        finite = np.isfinite(scores).all(axis=1)
        safe = np.where(np.isfinite(scores), scores, -np.inf)
        top5 = np.argsort(-safe, axis=1)[:, :5]
        for k in range(len(batch_labels)):
            rows.append((index, int(batch_labels[k]), int(top5[k, 0]) if finite[k] else -1,
                         bool(finite[k] and batch_labels[k] in top5[k]), bool(finite[k])))
            index += 1
        if index % (batch_size * 20) == 0 or index == total:
            log.info("evaluated %d/%d images (%.0f s)", index, total, time.monotonic() - started)
    return pd.DataFrame(rows, columns=["image_index", "label", "prediction", "top5_correct", "finite_output"])


def accuracy_summary(predictions: pd.DataFrame) -> dict[str, float]:
    """Top-1, top-5, the image count and the number of images whose outputs were NaN/Inf."""
    correct = predictions["prediction"] == predictions["label"]
    return {
        "images": int(len(predictions)),
        "top1_accuracy": float(correct.mean()),
        "top5_accuracy": float(predictions["top5_correct"].mean()),
        "top1_correct": int(correct.sum()),
        "nonfinite_outputs": int((~predictions["finite_output"]).sum()),
    }


def evaluate(runner, data_dir: str | Path, batch_size: int, max_images: int, accuracy_path: str | Path,
             predictions_path: str | Path, labels: dict, provenance: dict) -> dict:
    """Evaluate ``runner`` on the test split; write per-image predictions and a one-row accuracy table."""
    from workflow_scripts.data.data_io import read_meta
    from workflow_scripts.core.provenance import with_provenance

    meta = read_meta(data_dir)
    if not meta.get("labelled", True):
        # A calibration-only dataset: latency, size and resources are measured, accuracy is not.
        runner.close()
        note = (f"not measured: dataset {meta['dataset']!r} has no labels (a calibration-only folder, "
                f"{meta.get('source_path', 'no source path')})")
        log.warning("accuracy %s", note)
        summary = {**labels, "images": 0, "top1_accuracy": np.nan, "top5_accuracy": np.nan, "top1_correct": np.nan,
                   "nonfinite_outputs": 0, "accuracy_note": note}
        empty = pd.DataFrame({"image_index": pd.Series(dtype="int64"), "label": pd.Series(dtype="int64"),
                              "prediction": pd.Series(dtype="int64"), "top5_correct": pd.Series(dtype=bool),
                              "finite_output": pd.Series(dtype=bool)})
        for key, value in labels.items():
            empty[key] = pd.Series([value] * 0, dtype=object if isinstance(value, str) else None)
        write_parquet(with_provenance(empty, provenance), predictions_path)
        write_parquet(with_provenance(pd.DataFrame([summary]), provenance), accuracy_path)
        return summary
    predictions = predict(runner, data_dir, batch_size, max_images)
    runner.close()
    summary = {**labels, **accuracy_summary(predictions)}
    if summary["nonfinite_outputs"]:
        log.warning("%d images gave NaN/Inf outputs; they count as wrong", summary["nonfinite_outputs"])
    log.info("top-1 %.4f, top-5 %.4f on %d images", summary["top1_accuracy"], summary["top5_accuracy"], summary["images"])
    for key, value in labels.items():
        predictions[key] = value
    write_parquet(with_provenance(predictions, provenance), predictions_path)
    write_parquet(with_provenance(pd.DataFrame([summary]), provenance), accuracy_path)
    return summary
