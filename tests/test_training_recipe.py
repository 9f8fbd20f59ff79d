"""Initial weights of the training recipe: ImageNet offline fails clearly; a local weights file works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from workflow_scripts.core.errors import ConfigError, ModelLoadError
from workflow_scripts.models.zoo import build_model, resolve_weights

REPO = Path(__file__).resolve().parent.parent
SIZE = 32


def offline_env(keras_home: Path) -> dict[str, str]:
    """An empty Keras cache and every download refused at once (a proxy on a closed local port)."""
    env = dict(os.environ)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = "http://127.0.0.1:9"
    env["NO_PROXY"] = env["no_proxy"] = ""
    # Keras reads KERAS_HOME once, when it is imported: hence a fresh interpreter.
    env["KERAS_HOME"] = str(keras_home)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.slow  # renders every figure / converts or builds a real model
def test_imagenet_offline_suggests_weights_none_or_a_local_file(tmp_path):
    keras_home = tmp_path / "keras_home"
    keras_home.mkdir()
    script = textwrap.dedent("""
        import json
        from workflow_scripts.core.errors import ModelLoadError
        from workflow_scripts.models.zoo import build_model
        result = {}
        try:
            build_model("MobileNetV3Small", 10, 32, "imagenet", 0.9)
            result["error"] = None
        except ModelLoadError as exc:
            result["error"], result["message"] = "ModelLoadError", str(exc)
        except Exception as exc:
            result["error"], result["message"] = type(exc).__name__, str(exc)
        print("RESULT " + json.dumps(result))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=offline_env(keras_home),
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["error"] == "ModelLoadError", result
    message = result["message"]
    assert "MobileNetV3Small" in message
    assert "weights=none" in message
    assert ".weights.h5" in message
    # Nothing was fetched into the (empty) cache the subprocess used.
    assert not list(keras_home.rglob("*.h5"))


def mobilenet_backbone():
    import keras

    return keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3),
                                               pooling="avg", include_preprocessing=True)


@pytest.fixture(scope="module")
def saved_backbone(tmp_path_factory):
    """A MobileNetV3Small backbone with distinctive (seeded random) weights saved as .weights.h5."""
    source = mobilenet_backbone()
    rng = np.random.default_rng(7)
    source.set_weights([rng.normal(size=w.shape).astype(w.dtype) for w in source.get_weights()])
    path = tmp_path_factory.mktemp("weights") / "backbone.weights.h5"
    source.save_weights(str(path))
    return path, source.get_weights(), source.name


def test_local_weights_file_initializes_the_backbone(saved_backbone):
    path, expected, backbone_name = saved_backbone
    model = build_model("MobileNetV3Small", 10, SIZE, str(path), 0.9)
    loaded = model.get_layer(backbone_name).get_weights()
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected):
        np.testing.assert_array_equal(got, want)
    # The head is new: softmax over the dataset's classes.
    assert model.output_shape == (None, 10)


def test_local_weights_differ_from_a_fresh_initialization(saved_backbone):
    """Guards the test above: without the file the backbone does not hold these weights."""
    path, expected, backbone_name = saved_backbone
    fresh = build_model("MobileNetV3Small", 10, SIZE, "none", 0.9).get_layer(backbone_name).get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, expected))


def test_local_weights_keep_the_recipe_batchnorm_momentum(saved_backbone):
    import keras

    path, _, backbone_name = saved_backbone
    backbone = build_model("MobileNetV3Small", 10, SIZE, str(path), 0.9).get_layer(backbone_name)
    momenta = {layer.momentum for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras warns once per layer it cannot match
def test_weights_file_of_another_architecture_is_a_clear_error(tmp_path):
    import keras

    other = keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3),
                                                pooling="avg", include_preprocessing=True)
    path = tmp_path / "large.weights.h5"
    other.save_weights(str(path))
    with pytest.raises(ModelLoadError) as info:
        build_model("MobileNetV3Small", 10, SIZE, str(path), 0.9)
    assert str(path) in str(info.value)
    assert "MobileNetV3Small" in str(info.value)


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="weights"):
        resolve_weights(str(tmp_path / "absent.weights.h5"))
    assert resolve_weights("none") is None
    assert resolve_weights("imagenet") == "imagenet"
