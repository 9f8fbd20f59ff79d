"""Fine-tune a Keras application on a prepared dataset; keep the epoch with the best validation accuracy."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workflow_scripts.core.artifacts import atomic_path, write_parquet
from workflow_scripts.data.data_io import open_split, read_meta, to_model_input
from workflow_scripts.models.zoo import build_model
from workflow_scripts.core.provenance import with_provenance

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
    from workflow_scripts.data.datasets import stratified_split

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


def build_training_state(model, batch) -> None:
    """Create the optimizer's slots and the loss and metric variables before ``fit``, from one batch's shapes.

    Without a distribution strategy Keras defers creating them to the tracing of the first train step,
    and a ``tf.function`` whose first trace creates variables is traced a second time: for DenseNet169
    that doubled the Python tracing of the first epoch (docs/training.md, "The first epoch"). Built here,
    the train step is traced once. The variables, their initial values (zeros) and the traced graph are
    the same, so the trained weights are bit-identical."""
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None:  # a Keras without it: the optimizer's slots at least
        model.optimizer.build(model.trainable_variables)
        return
    symbolic_build(data_batch=tuple(batch))


# Seconds between two progress lines inside an epoch (the job's log; one line per epoch besides).
PROGRESS_EVERY_S = 10.0


class TrainingProgress:
    """Progress inside an epoch for the job's log, at most one line every ``every_s`` seconds: batch
    i/n, the epoch's running loss and accuracy, images/s and the epoch's ETA. The first batch of a run
    (tracing and graph optimisation of the train function) gets its own line, and the rate and ETA
    leave it out. Clock reads only, nothing on the training path: no extra synchronisation and no
    change to the weights."""

    def __init__(self, epochs: int, batch_size: int, every_s: float = PROGRESS_EVERY_S, clock=time.perf_counter,
                 emit=None):
        self.epochs, self.batch_size, self.every_s, self.clock = epochs, batch_size, every_s, clock
        self.emit = emit or log.info
        self.steps = 0
        self.traced = False
        # Keras may run two batch hooks at once in its helper threads.
        self.lock = threading.Lock()

    def epoch_begin(self, epoch: int, steps: int | None) -> None:
        with self.lock:
            self.epoch, self.steps = epoch, steps or 0
            self.started = self.last_line = self.clock()
            self.rate_from, self.rate_batches = self.started, 0

    def batch_end(self, batch: int, logs: dict | None) -> None:
        with self.lock:
            self._batch_end(batch, logs)

    def _batch_end(self, batch: int, logs: dict | None) -> None:
        now = self.clock()
        done = batch + 1
        if not self.traced:
            # The first call traces and optimises the train function: minutes for a large model.
            self.traced = True
            self.emit("epoch %d/%d: first batch %.1f s (tracing and graph optimisation of the train step)"
                      % (self.epoch + 1, self.epochs, now - self.started))
            self.rate_from, self.rate_batches, self.last_line = now, done, now
            return
        if now - self.last_line < self.every_s or done >= self.steps:
            return
        self.last_line = now
        logs = logs or {}
        timed = done - self.rate_batches
        per_batch = (now - self.rate_from) / timed if timed > 0 else float("nan")
        images_s = self.batch_size / per_batch if per_batch > 0 else float("nan")
        eta = per_batch * (self.steps - done) if self.steps else float("nan")
        metrics = ", ".join(f"{key} {float(logs[key]):.4f}" for key in ("loss", "accuracy") if key in logs)
        self.emit("epoch %d/%d: batch %d/%s, %s, %.1f images/s, ETA %.0f s"
                  % (self.epoch + 1, self.epochs, done, self.steps or "?", metrics or "no metrics", images_s, eta))


def progress_callback(epochs: int, batch_size: int, every_s: float = PROGRESS_EVERY_S):
    """A Keras callback logging :class:`TrainingProgress`; dispatched off the training thread (async_safe)."""
    import keras

    progress = TrainingProgress(epochs, batch_size, every_s)

    class Progress(keras.callbacks.Callback):
        # Keras runs batch hooks of async-safe callbacks in a helper thread, as it runs its own
        # (History): the training loop never waits for a log line.
        async_safe = True

        def __init__(self):
            super().__init__()
            self.progress = progress

        def on_epoch_begin(self, epoch, logs=None):
            progress.epoch_begin(epoch, self.params.get("steps"))

        def on_train_batch_end(self, batch, logs=None):
            progress.batch_end(batch, logs)

    return Progress()


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

    train_batches = make_sequence(data_dir, "train", batch_size, True, seed, subset)
    build_training_state(model, train_batches[0])
    fit = model.fit(
        train_batches,
        validation_data=make_sequence(data_dir, "val", batch_size, False, seed),
        epochs=epochs, verbose=0, callbacks=[KeepBest(), progress_callback(epochs, batch_size)],
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
