"""Keras models of the study: an application backbone, its preprocessing inside, a new head.

Every model takes float32 NHWC images in 0..255, so exported ONNX files and engines all take
the batches of ``workflow_scripts.data.data_io`` unchanged.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from workflow_scripts.core.errors import ConfigError, ModelLoadError

# DenseNet's Keras preprocessing ('torch' mode): 0..1, then ImageNet mean and std per channel.
from workflow_scripts.core.registry import IMAGENET_MEAN, IMAGENET_STD, MODELS, Preprocess, family_preprocess


def family_of(name: str) -> str:
    """The registry family of model ``name`` (preprocessing and constructor options follow it)."""
    return MODELS[name].family if name in MODELS else "none"


def backbone_kwargs(name: str, input_size: int, weights: str | None) -> dict:
    """Constructor arguments for a Keras application without its top."""
    kwargs = dict(include_top=False, weights=weights, input_shape=(input_size, input_size, 3), pooling="avg")
    if family_of(name) == "MobileNetV3":
        kwargs["include_preprocessing"] = True  # Rescaling to [-1, 1] inside the model
    return kwargs


def preprocessing_layers(x, preprocess: Preprocess, names: tuple[str, str, str] = ("to_bgr", "to_unit_range",
                                                                                     "imagenet_norm")):
    """Apply ``preprocess`` to the Keras tensor ``x`` (RGB 0..255) with layers safe mode loads: channel
    order as a fixed 3x3 permutation, scale/offset as Rescaling, mean/std as Normalization."""
    import keras
    import numpy as np

    if preprocess.channel_order == "bgr":
        layer = keras.layers.Dense(3, use_bias=False, trainable=False, name=names[0])
        x = layer(x)
        layer.set_weights([np.eye(3, dtype="float32")[::-1].copy()])
    if (preprocess.scale, preprocess.offset) != (1.0, 0.0):
        x = keras.layers.Rescaling(preprocess.scale, preprocess.offset, name=names[1])(x)
    if (tuple(preprocess.mean), tuple(preprocess.std)) != ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)):
        x = keras.layers.Normalization(mean=list(preprocess.mean), variance=[s * s for s in preprocess.std],
                                       name=names[2])(x)
    return x


def resolve_weights(weights: str) -> str | None:
    """Map config key 'weights' to Keras' argument; a path must exist."""
    if weights == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"config key 'weights' is {weights!r}, which is neither imagenet, none, nor an existing file")
    return str(path)


def build_model(name: str, num_classes: int, input_size: int, weights: str, batchnorm_momentum: float,
                dropout: float = 0.2, freeze_backbone: bool = False):
    """Backbone with preprocessing, global pooling and a softmax head of ``num_classes``
    (``freeze_backbone``: only the head trains)."""
    import keras

    from workflow_scripts.core.registry import model_builder

    builder = model_builder(name)
    if builder is not None:
        return builder(name, num_classes, input_size, weights, batchnorm_momentum, dropout,
                       freeze_backbone=freeze_backbone)
    constructor = getattr(keras.applications, name)
    resolved = resolve_weights(weights)
    try:
        backbone = constructor(**backbone_kwargs(name, input_size, resolved))
    except ConfigError:
        raise
    except Exception as exc:  # Keras raises several types when the weight download fails
        if weights == "imagenet":
            raise ModelLoadError(
                f"could not load ImageNet weights for {name} ({type(exc).__name__}: {exc}). Offline, use "
                "--config weights=none (train from scratch) or weights=<path to a .weights.h5 file>"
            ) from exc
        if resolved is not None:
            # Keras loads a local file with model.load_weights: a file of another architecture fails here.
            raise ModelLoadError(
                f"could not load the weights file {resolved} into {name} ({type(exc).__name__}: {str(exc)[:300]}). "
                f"config key 'weights' must name a .weights.h5 file saved from keras.applications.{name}"
                f"(include_top=False, pooling='avg'{', include_preprocessing=True' if family_of(name) == 'MobileNetV3' else ''})"
                " with model.save_weights(...)"
            ) from exc
        raise
    backbone.trainable = not freeze_backbone
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras' default 0.99-0.999 leaves moving statistics unconverged after a few epochs,
            # so inference-mode accuracy collapses although training accuracy looks fine.
            layer.momentum = batchnorm_momentum
    inputs = keras.Input((input_size, input_size, 3), name="images")
    # The family's preprocessing in the model (DenseNet: 'torch' mode); MobileNetV3 and EfficientNet hold theirs.
    x = preprocessing_layers(inputs, family_preprocess(family_of(name)))
    x = backbone(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{name}_classifier")


def load_keras_model(path: str | Path):
    """Load a .keras file in safe mode; errors name the file and the fix."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"Keras model {path} does not exist; run the train_model rule (snakemake {path})")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        # Keras would report a truncated archive as "File not found", which misleads.
        raise ModelLoadError(
            f"{path} is corrupt or truncated (not a complete .keras zip archive); "
            f"delete it and rerun its train_model rule (snakemake {path})"
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "Lambda" in str(exc):
            raise ModelLoadError(
                f"{path} holds a Lambda layer or other arbitrary code, which safe mode refuses because loading "
                "it would execute code from the file. Rebuild the model without Lambda layers."
            ) from exc
        raise ModelLoadError(f"{path} is not a loadable Keras model ({exc}); delete it and rerun its train_model rule") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is corrupt or truncated ({type(exc).__name__}: {exc}); delete it and rerun its train_model rule"
        ) from exc
