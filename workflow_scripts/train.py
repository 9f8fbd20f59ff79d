"""Fine-tune a Keras application on a prepared dataset; keep the epoch with the best validation accuracy."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .artifacts import atomic_path, write_parquet
from .data_io import open_split, read_meta, to_model_input
from .models import build_model
from .provenance import with_provenance

log = logging.getLogger(__name__)


def configure_tensorflow(threads: int, seed: int) -> None:
    """Fix seeds and thread pools before any TensorFlow work."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # TensorFlow was already initialized in this process (tests, notebooks): its pools stay.
        log.warning("TensorFlow already initialized; thread settings unchanged (%s intra-op)",
                    tf.config.threading.get_intra_op_parallelism_threads() or "all")
    keras.utils.set_random_seed(seed)
    # With fixed threads and seed, CPU training gave bit-identical weights across runs without
    # tf.config.experimental.enable_op_determinism() (docs/reliability.md), so it stays off.
    log.info("TensorFlow %s: %s intra-op threads, 1 inter-op thread, seed %d", tf.__version__, threads or "all", seed)


def training_subset(labels: np.ndarray, max_images: int, seed: int) -> np.ndarray | None:
    """Indices of a stratified, seeded subset of ``max_images`` train images (None: use them all)."""
    if not max_images or max_images >= len(labels):
        return None
    from .datasets import stratified_split

    _, chosen = stratified_split(labels, max_images / len(labels), seed, "the train split", "train.max_images")
    return chosen


def make_sequence(data_dir: Path, split: str, batch_size: int, shuffle: bool, seed: int,
                  indices: np.ndarray | None = None):
    """A keras PyDataset streaming a memory-mapped split (the float32 copy exists one batch at a time);
    ``indices`` restricts it to those images."""
    import keras

    images, labels = open_split(data_dir, split)
    base = np.arange(len(labels)) if indices is None else np.asarray(indices)

    class SplitSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=1, use_multiprocessing=False)
            self.rng = np.random.default_rng(seed)
            self.order = base.copy()
            if shuffle:
                self.rng.shuffle(self.order)

        def __len__(self):
            return int(np.ceil(len(self.order) / batch_size))

        def __getitem__(self, index):
            chosen = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
            return to_model_input(images[chosen]), labels[chosen]

        def on_epoch_end(self):
            if shuffle:
                self.rng.shuffle(self.order)

    return SplitSequence()


def train_model(data_dir: str | Path, model_name: str, model_path: str | Path, history_path: str | Path,
                epochs: int, batch_size: int, learning_rate: float, batchnorm_momentum: float,
                weights: str, threads: int, seed: int, provenance: dict | None = None, max_images: int = 0,
                freeze_backbone: bool = False) -> pd.DataFrame:
    """Train, restore the best-validation epoch, save ``model_path`` (.keras) and the history Parquet.

    ``max_images`` (config key train.max_images; 0 = all) trains on a stratified, seeded subset of
    the train split; ``freeze_backbone`` trains the new head only (transfer learning's first stage).
    """
    configure_tensorflow(threads, seed)
    import keras

    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    model = build_model(model_name, meta["num_classes"], meta["input_size"], weights, batchnorm_momentum,
                        freeze_backbone=freeze_backbone)
    subset = training_subset(open_split(data_dir, "train")[1], max_images, seed)
    if subset is not None:
        log.info("training on a stratified subset of %d train images (train.max_images)", len(subset))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    best = {"val_accuracy": -1.0, "epoch": -1, "weights": None}
    epoch_times: list[float] = []

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.started)
            if logs["val_accuracy"] > best["val_accuracy"]:
                best.update(val_accuracy=float(logs["val_accuracy"]), epoch=epoch + 1, weights=self.model.get_weights())
            log.info("epoch %d/%d: %.1f s, accuracy %.4f, val_accuracy %.4f", epoch + 1, epochs, epoch_times[-1],
                     logs["accuracy"], logs["val_accuracy"])

    fit = model.fit(
        make_sequence(data_dir, "train", batch_size, True, seed, subset),
        validation_data=make_sequence(data_dir, "val", batch_size, False, seed),
        epochs=epochs, verbose=0, callbacks=[KeepBest()],
    )
    model.set_weights(best["weights"])
    history = pd.DataFrame(fit.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    history["epoch_s"] = epoch_times
    history["kept"] = history["epoch"] == best["epoch"]
    history["model"] = model_name
    history["dataset"] = meta["dataset"]
    history["batch_size"] = batch_size
    if provenance:
        history = with_provenance(history, provenance)
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    write_parquet(history, history_path)
    log.info("kept epoch %d with val_accuracy %.4f", best["epoch"], best["val_accuracy"])
    return history
