"""Training progress inside an epoch (issue 29): one log line at most every PROGRESS_EVERY_S seconds,
with batch i/n, the running loss, images/s and the epoch's ETA; the first batch (tracing) on its own."""

from __future__ import annotations

import re

from workflow_scripts.stages.train import PROGRESS_EVERY_S, TrainingProgress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def run_epochs(step_s: dict[int, float], steps: int, epochs: int = 2, batch_size: int = 32):
    """Feed ``epochs`` epochs of ``steps`` batches; batch b of the first epoch takes step_s.get(b, 1.0) s."""
    clock, lines = FakeClock(), []
    progress = TrainingProgress(epochs, batch_size, clock=clock, emit=lines.append)
    for epoch in range(epochs):
        progress.epoch_begin(epoch, steps)
        for batch in range(steps):
            clock.now += step_s.get(batch, 1.0) if epoch == 0 else 1.0
            progress.batch_end(batch, {"loss": 2.5 - 0.01 * batch, "accuracy": 0.1 + 0.001 * batch})
    return lines


def test_progress_lines_every_ten_seconds_with_rate_and_eta():
    assert PROGRESS_EVERY_S == 10.0
    # First batch 60 s (tracing), then 1 s per batch of 32 images: 32 images/s.
    lines = run_epochs({0: 60.0}, steps=40)
    assert lines[0] == "epoch 1/2: first batch 60.0 s (tracing and graph optimisation of the train step)"
    first_epoch = [line for line in lines[1:] if line.startswith("epoch 1/2")]
    # Batches 2..39 take 38 s after the first: a line at batch 11, 21, 31 (10 s apart), none at the last.
    assert [re.search(r"batch (\d+)/40", line).group(1) for line in first_epoch] == ["11", "21", "31"]
    assert first_epoch[0] == "epoch 1/2: batch 11/40, loss 2.4000, accuracy 0.1100, 32.0 images/s, ETA 29 s"
    # The second epoch has no tracing line, and its rate counts from the epoch's start.
    second = [line for line in lines if line.startswith("epoch 2/2")]
    assert [re.search(r"batch (\d+)/40", line).group(1) for line in second] == ["10", "20", "30"]
    assert "first batch" not in " ".join(second) and "32.0 images/s, ETA 30 s" in second[0]


def test_short_epochs_log_nothing_but_the_tracing_line():
    lines = run_epochs({}, steps=5)
    assert lines == ["epoch 1/2: first batch 1.0 s (tracing and graph optimisation of the train step)"]


# --- the first epoch: the train step is traced once ---------------------------------------------------


def _fit_counting_traces(prebuild: bool):
    """A small conv model fit for one epoch as train.py fits; returns (traces of the train step, weights)."""
    import keras
    import numpy as np

    from workflow_scripts.stages.train import build_training_state

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    traces = []
    train_step = model.train_step

    def counting_train_step(data):
        traces.append(1)  # Python runs here once per trace, never per step
        return train_step(data)

    model.train_step = counting_train_step
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 3, size=40)
    if prebuild:
        build_training_state(model, (images[:8], labels[:8]))
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return len(traces), model.get_weights()


def test_train_step_is_traced_once_and_the_weights_do_not_change():
    """Keras creates the optimizer's and metrics' variables while tracing the first train step, and
    TensorFlow then traces it again; built beforehand (build_training_state), it is traced once, and the
    trained weights are bit-identical."""
    import numpy as np

    deferred_traces, deferred = _fit_counting_traces(prebuild=False)
    built_traces, built = _fit_counting_traces(prebuild=True)
    assert deferred_traces == 2, deferred_traces  # what build_training_state removes
    assert built_traces == 1, built_traces
    assert len(built) == len(deferred)
    for a, b in zip(built, deferred):
        assert np.array_equal(a, b)
