"""Small user inputs made without TensorFlow: a .keras archive holding only its config (enough for
planning, which reads the config), an ONNX graph, an image folder and an .npz."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np


def fake_keras(path: Path, size: int = 32, channels: int = 3, classes: int = 10, softmax_layer: bool = False) -> Path:
    """A .keras archive whose config.json is what Keras writes for Input -> ... -> Dense(classes)."""
    dense = {"class_name": "Dense", "name": "scores", "config": {"name": "scores", "units": classes},
             "inbound_nodes": [{"args": [{"config": {"shape": [None, 8]}}]}]}
    layers = [{"class_name": "InputLayer", "name": "input",
               "config": {"batch_shape": [None, size, size, channels], "name": "input"}}, dense]
    out = "scores"
    if softmax_layer:
        layers.append({"class_name": "Softmax", "name": "softmax", "config": {"name": "softmax"},
                       "inbound_nodes": [{"args": [{"config": {"shape": [None, classes]}}]}]})
        out = "softmax"
    config = {"class_name": "Functional", "config": {"layers": layers, "output_layers": [[out, 0, 0]]}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
    return path


def tiny_onnx(path: Path, size: int = 32, classes: int = 10, layout: str = "NCHW", batch=None) -> Path:
    """A real ONNX classifier: global average pool of each channel, then a fixed 3 x classes MatMul."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shape = [batch or "N", 3, size, size] if layout == "NCHW" else [batch or "N", size, size, 3]
    axes = [2, 3] if layout == "NCHW" else [1, 2]
    weights = np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["pooled"], axes=axes, keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["scores"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch or "N", classes])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def image_folder(root: Path, classes: int = 10, per_class: int = 3, size: int = 8, splits=("train", "test")) -> Path:
    """Real digits as PNGs in class subfolders (under each of ``splits``; none: directly under root)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    for split in splits or ("",):
        for c in range(classes):
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            picks = np.flatnonzero(bunch.target == c)[:per_class] if split != "test" else \
                np.flatnonzero(bunch.target == c)[-per_class:]
            for i in picks:
                gray = np.clip(bunch.images[i] * 16, 0, 255).astype(np.uint8)
                Image.fromarray(gray).resize((size, size)).save(folder / f"{i}.png")
    return root
