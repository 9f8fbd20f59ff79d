"""Your model, your data through the real CLI (issue 23), tiny: a Keras checkpoint and an ONNX file on an
image folder and an .npz, to the summary and the decision; a folder without labels (accuracy not measured)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.cli import DEVICE, snakemake, tiny
from tests.user_fixtures import image_folder, tiny_onnx

pytestmark = pytest.mark.slow  # the real snakemake CLI


def small_keras(path, size=32, classes=10):
    """A real, untrained Keras CNN taking images scaled to 0..1 (family unit)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x)).save(path)
    return path


def user_config(tmp_path, models, datasets, **extra):
    return tiny(models=list(models), datasets=list(datasets), user_models=models, user_datasets=datasets,
                precisions=["fp32", "int8"], calibration={"num_images": 8, "batch_size": 4},
                runoff={"enabled": False}, **extra)


def test_a_keras_checkpoint_and_an_onnx_file_on_an_image_folder_and_an_npz(tmp_path):
    folder = image_folder(tmp_path / "imgs", classes=10, per_class=4)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (60, 8, 8, 3), dtype=np.uint8),
             labels=np.repeat(np.arange(10), 6))
    models = {"mine": {"path": str(small_keras(tmp_path / "m.keras")), "family": "unit"},
              "theirs": {"path": str(tiny_onnx(tmp_path / "t.onnx")), "family": "torch"}}
    datasets = {"imgs": {"path": str(folder)}, "npzd": {"path": str(tmp_path / "d.npz")}}
    snakemake(tmp_path, config=user_config(tmp_path, models, datasets,
                                           split={"val_fraction": 0.3, "test_fraction": 0.2}), timeout=1500)
    summary = tmp_path / "results" / "summary"
    accuracy = pd.read_parquet(summary / "accuracy.parquet")
    engines = accuracy[accuracy["backend"] == "onnxruntime"]
    assert set(zip(engines["model"], engines["dataset"])) == {(m, d) for m in models for d in datasets}
    assert engines["top1_accuracy"].notna().all() and (engines["images"] > 0).all()
    assert set(accuracy[accuracy["precision"] == "keras"]["model"]) == {"mine"}, "an ONNX file has no Keras row"
    record = json.loads((tmp_path / "results" / "models" / "imgs_32px" / "mine" / "source.json").read_text())
    assert record["how"] == "wrapped with its preprocessing" and len(record["source_sha256"]) == 64
    export = pd.read_parquet(tmp_path / "results" / DEVICE / "onnx" / "npzd_32px" / "theirs" / "export.parquet")
    assert export["stage"].tolist() == ["onnx_import"] and export["parity_max_abs_diff"].iloc[0] < 1e-4
    assert "mine" in (summary / "decision.md").read_text() and "theirs" in (summary / "decision.md").read_text()


def test_a_folder_without_labels_measures_latency_and_marks_accuracy_not_measured(tmp_path):
    folder = image_folder(tmp_path / "cal", classes=1, per_class=12, splits=None) / "0"
    models = {"mine": {"path": str(small_keras(tmp_path / "m.keras")), "family": "unit"}}
    snakemake(tmp_path, config=user_config(tmp_path, models, {"cal": {"path": str(folder)}}), timeout=1200)
    summary = tmp_path / "results" / "summary"
    latency = pd.read_parquet(summary / "latency.parquet")
    assert set(latency["precision"]) == {"fp32", "int8"} and latency["latency_ms_median"].notna().all() \
        if "latency_ms_median" in latency.columns else len(latency) == 2
    accuracy = pd.read_parquet(summary / "accuracy.parquet")
    engines = accuracy[accuracy["backend"] == "onnxruntime"]
    assert engines["top1_accuracy"].isna().all() and (engines["images"] == 0).all()
    assert engines["accuracy_note"].str.startswith("not measured: dataset 'cal' has no labels").all()
