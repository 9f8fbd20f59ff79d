"""Your model, your data (issue 23): contracts read from the files, refusals at planning naming both sides,
image folders and .npz prepared and checked, ONNX preprocessing and layout built into the graph."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.cli import output_of, snakemake, tiny
from tests.user_fixtures import fake_keras, image_folder, tiny_onnx
from workflow_scripts.core.errors import ConfigError, DatasetUnavailable
from workflow_scripts.core.registry import Preprocess
from workflow_scripts.core.user_inputs import read_data_contract, read_model_contract


def test_contracts_are_read_from_the_files(tmp_path):
    keras_file = read_model_contract(fake_keras(tmp_path / "m.keras", size=48, classes=7, softmax_layer=True))
    assert (keras_file.input_size, keras_file.channels, keras_file.num_classes) == (48, 3, 7)
    onnx_file = read_model_contract(tiny_onnx(tmp_path / "m.onnx", size=40, classes=5, layout="NCHW"))
    assert (onnx_file.layout, onnx_file.input_size, onnx_file.channels, onnx_file.num_classes) == ("NCHW", 40, 3, 5)
    assert read_model_contract(tiny_onnx(tmp_path / "h.onnx", layout="NHWC")).layout == "NHWC"
    folder = read_data_contract("d", image_folder(tmp_path / "f", classes=4, per_class=1))
    assert (folder.num_classes, folder.splits, folder.class_names) == (4, ("train", "test"), ("0", "1", "2", "3"))
    unlabelled = read_data_contract("u", image_folder(tmp_path / "u", classes=1, per_class=2, splits=None) / "0")
    assert unlabelled.num_classes is None


def test_an_empty_class_and_a_pickled_npz_are_refused_by_name(tmp_path):
    root = image_folder(tmp_path / "f", classes=3, per_class=1, splits=None)
    (root / "empty").mkdir()
    with pytest.raises(ConfigError, match="class folder .*empty holds no image files"):
        read_data_contract("d", root)
    from workflow_scripts.data.sources.files import load_user_source

    np.savez(tmp_path / "bad.npz", images=np.array([object()], dtype=object), labels=np.array([0]))
    with pytest.raises(DatasetUnavailable, match="not a readable .npz without pickles"):
        load_user_source("d", tmp_path / "bad.npz")
    np.savez(tmp_path / "bad_labels.npz", images=np.zeros((1, 8, 8), np.uint8), labels=np.array([object()]))
    with pytest.raises(ConfigError, match="not a readable .npz without pickles"):
        read_data_contract("d", tmp_path / "bad_labels.npz")


def test_an_unreadable_image_is_named_and_mixed_sizes_are_logged(tmp_path, caplog):
    from workflow_scripts.data.sources.files import load_user_source

    root = image_folder(tmp_path / "f", classes=2, per_class=2, splits=None)
    image_folder(tmp_path / "g", classes=1, per_class=1, size=12, splits=None)
    big = next((tmp_path / "g" / "0").iterdir())
    big.rename(root / "0" / "big.png")
    source = load_user_source("d", root)
    assert source.labelled and source.num_classes == 2 and len(source.splits["all"]) == 5
    assert "2 sizes" in caplog.text and "big.png" in caplog.text
    assert source.splits["all"].load_image(0).shape[2] == 3 and len(source.facts["source_sha256"]) == 64
    (root / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetUnavailable, match="cannot read image .*broken.png"):
        load_user_source("d", root)


def test_an_npz_and_an_unlabelled_folder_are_prepared_once_with_their_digest(tmp_path):
    from workflow_scripts.data.data_io import open_split, read_meta
    from workflow_scripts.data.datasets import prepare_dataset

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8),
             labels=np.repeat(np.arange(3), 20))
    meta = prepare_dataset("mine", 32, tmp_path / "p", tmp_path, True, 0.2, 0.2, 0, user_path=str(tmp_path / "d.npz"))
    assert meta["num_classes"] == 3 and meta["labelled"] and len(meta["source_sha256"]) == 64
    assert open_split(tmp_path / "p", "train")[0].shape[1:] == (32, 32, 3)
    folder = image_folder(tmp_path / "u", classes=1, per_class=4, splits=None) / "0"
    prepare_dataset("cal", 32, tmp_path / "q", tmp_path, True, 0.2, 0.2, 0, user_path=str(folder))
    assert read_meta(tmp_path / "q")["labelled"] is False
    assert (open_split(tmp_path / "q", "test")[1] == -1).all() and len(open_split(tmp_path / "q", "train")[1]) == 4


def test_onnx_preprocessing_and_layout_go_into_the_graph(tmp_path):
    import onnx
    import onnxruntime as ort

    from workflow_scripts.models.user_models import apply_preprocess, wrap_onnx

    source = tiny_onnx(tmp_path / "m.onnx", size=16, layout="NCHW")
    pre = Preprocess(scale=1 / 255, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), channel_order="bgr")
    wrapped = tmp_path / "w.onnx"
    onnx.save(wrap_onnx(onnx.load(str(source)), pre, "NCHW"), str(wrapped))
    images = np.random.default_rng(1).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    new = ort.InferenceSession(str(wrapped)).run(None, {"images": images})[0]
    reference = apply_preprocess(images, pre).transpose(0, 3, 1, 2).copy()
    old = ort.InferenceSession(str(source)).run(None, {"x": reference})[0]
    np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-5)


def _dry(tmp_path, **config):
    result = snakemake(tmp_path, "-n", config=tiny(**config), check=False, timeout=300)
    return result.returncode, output_of(result)


@pytest.mark.slow  # the real snakemake CLI (a dry run)
def test_a_user_keras_model_is_imported_not_trained_and_an_onnx_file_skips_the_export(tmp_path):
    image_folder(tmp_path / "imgs", classes=10, per_class=2)
    models = {"mine": {"path": str(fake_keras(tmp_path / "m.keras"))},
              "theirs": {"path": str(tiny_onnx(tmp_path / "m.onnx")), "family": "torch"}}
    code, out = _dry(tmp_path, models=["mine", "theirs"], datasets=["imgs"], user_models=models,
                     user_datasets={"imgs": {"path": str(tmp_path / "imgs")}},
                     calibration={"num_images": 8, "batch_size": 4})  # at most the folder's 20 train images
    assert code == 0, out
    assert "import_user_model " in out and "import_user_onnx " in out and "train_model" not in out
    assert "export_onnx " in out  # the Keras checkpoint is exported; the ONNX file is not
    assert "evaluate_keras " in out and "mine" in out


@pytest.mark.slow  # the real snakemake CLI (dry runs)
@pytest.mark.parametrize("case,needle", [
    ("size", r"takes 64x64 images, but the data are prepared at 32x32 \(config key 'input_size'\)"),
    ("classes", r"has 5 output classes, but dataset 'imgs' has 10"),
    ("channels", r"takes 1-channel images, but the data are prepared as 3-channel RGB"),
    ("litert", r"are ONNX files \(or SavedModels, which enter as ONNX\), but backend\(s\) \['litert'\] build from a Keras"),
    ("unlabelled", r"dataset 'imgs' has no labels .* \['MobileNetV3Small'\] cannot be trained"),
    ("missing", r"user_models.mine.path' is 'nowhere/m.keras', but .* does not exist"),
    ("calibration", r"'calibration.num_images' is 32, but the train split of dataset 'imgs' has 20 images"),
])
def test_a_model_that_does_not_fit_the_data_is_refused_at_planning_naming_both_sides(tmp_path, case, needle):
    imgs = image_folder(tmp_path / "imgs", classes=10, per_class=2 if case == "calibration" else 1,
                        splits=None if case == "unlabelled" else ("train", "test"))
    if case == "unlabelled":
        imgs = imgs / "0"
    model = {"size": lambda: fake_keras(tmp_path / "m.keras", size=64),
             "classes": lambda: fake_keras(tmp_path / "m.keras", classes=5),
             "channels": lambda: fake_keras(tmp_path / "m.keras", channels=1),
             "litert": lambda: tiny_onnx(tmp_path / "m.onnx"),
             "unlabelled": lambda: fake_keras(tmp_path / "m.keras"), "missing": lambda: "nowhere/m.keras",
             "calibration": lambda: fake_keras(tmp_path / "m.keras")}[case]()
    models = ["MobileNetV3Small", "mine"] if case == "unlabelled" else ["mine"]
    code, out = _dry(tmp_path, models=models, datasets=["imgs"], user_models={"mine": {"path": str(model)}},
                     user_datasets={"imgs": {"path": str(imgs)}},
                     train={"epochs": 1, "batch_size": {"digits": 32, "imgs": 4}},
                     backends=["onnxruntime", "litert"] if case == "litert" else ["onnxruntime"],
                     # The tiny folders hold 10 train images: only the calibration case asks for more.
                     calibration={"num_images": 32 if case == "calibration" else 8, "batch_size": 4})
    assert code != 0 and "Traceback" not in out, out
    import re
    assert re.search(needle, out), out


@pytest.mark.slow  # TensorFlow and tf2onnx
def test_a_savedmodel_enters_as_onnx_converted_by_tf2onnx_with_its_preprocessing(tmp_path):
    from dataclasses import asdict

    import keras
    import onnxruntime as ort

    from workflow_scripts.data.data_io import open_split
    from workflow_scripts.data.datasets import prepare_dataset
    from workflow_scripts.models.user_models import import_onnx_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (40, 8, 8), dtype=np.uint8), labels=np.repeat(np.arange(4), 10))
    prepare_dataset("mine", 32, tmp_path / "data", tmp_path, True, 0.25, 0.25, 0, user_path=str(tmp_path / "d.npz"))
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    model.export(str(tmp_path / "saved"))
    out = tmp_path / "onnx"
    out.mkdir()
    record = import_onnx_model("saved", tmp_path / "saved", out / "model.onnx", out / "source.json", out / "export.parquet",
                               out / "export_resources.parquet", asdict(Preprocess(scale=1 / 255)), tmp_path / "data",
                               4, 1e-4, 0.1, {"device": "x", "backend": "onnx-import"}, opset=17)
    assert record["kind"] == "savedmodel" and record["how"] == "wrapped with its preprocessing"
    assert [p.name for p in out.iterdir() if p.name.startswith(".tmp")] == []
    images = open_split(tmp_path / "data", "test")[0][:4].astype(np.float32)
    got = ort.InferenceSession(str(out / "model.onnx")).run(None, {"images": images})[0]
    np.testing.assert_allclose(got, model.predict(images / 255, verbose=0), atol=1e-5)
