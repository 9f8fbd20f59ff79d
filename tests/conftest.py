"""Shared fixtures: a real prepared digits dataset and a small real Keras model, made once per session."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# On a board (no TensorFlow) only the device-side test modules can be imported.
if importlib.util.find_spec("tensorflow") is None:
    collect_ignore_glob = [p.name for p in Path(__file__).parent.glob("test_*.py")
                           if not p.name.startswith(("test_tensorrt_", "test_gpu_", "test_device_side"))]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """scikit-learn's digits, split and stored at 32x32 like the quickstart does."""
    from workflow_scripts.data.datasets import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "digits_32px"
    prepare_dataset("digits", 32, out, tmp_path_factory.mktemp("resources"), True, 0.15, 0.15, seed=0)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, digits_dir):
    """MobileNetV3Small trained for two epochs on digits at 32x32 by the workflow's own train_model."""
    from workflow_scripts.stages.train import train_model

    folder = tmp_path_factory.mktemp("model")
    history = train_model(digits_dir, "MobileNetV3Small", folder / "model.keras", folder / "history.parquet",
                          epochs=2, batch_size=32, learning_rate=1e-3, batchnorm_momentum=0.9, weights="none",
                          threads=2, seed=0)
    return folder / "model.keras", history


@pytest.fixture(scope="session")
def keras_model_path(trained) -> Path:
    return trained[0]


@pytest.fixture(scope="session")
def onnx_path(tmp_path_factory, keras_model_path) -> Path:
    """The ONNX export of ``keras_model_path``."""
    from workflow_scripts.stages.export import convert_to_onnx
    from workflow_scripts.models.zoo import load_keras_model

    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    convert_to_onnx(load_keras_model(keras_model_path), path, opset=17)
    return path


# Fixtures that train a real model (about half a minute on 2 cores): a test using one is slow.
TRAINING_FIXTURES = {"trained", "keras_model_path", "onnx_path"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that trains a model (through the fixtures above) as slow, so the quick loop
    (pytest -m "not slow") stays quick without a hand-kept list."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
