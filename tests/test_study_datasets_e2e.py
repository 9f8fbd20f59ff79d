"""The study's datasets through the real ``snakemake`` CLI, on small archives in the official formats.

The archives are written by ``tests/archive_factory.py`` into ``<workdir>/resources/datasets/``
under their published names (the default ``resources_dir``, relative to the working directory,
exactly as a user lays them out). Their md5s differ from the published ones, so the config sets
``verify_checksums: false``. Every download is blocked (proxy on a closed local port), so the
tests never touch the network, even on a machine that has one.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.archive_factory import (
    flowers102_layout,
    make_cifar100_python_archive,
    make_flowers102_files,
    synthetic_cifar100,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
SIZE = 32
MODEL = "MobileNetV3Small"
DATASETS = ("cifar100", "oxford_flowers102")

# Small but valid: the CIFAR validation split is carved from train stratified over 100 classes,
# which needs at least 100 validation images (val_fraction 0.15 of 1000 = 150) and two images of
# every class (seed 0 gives each class at least 3). Flowers needs >= 16 train images (trnid is a
# quarter of the images) for the 16 calibration images, which come from the train split only.
CIFAR_TRAIN, CIFAR_TEST, CIFAR_SEED = 1000, 100, 0
FLOWERS_IMAGES, FLOWERS_SEED = 64, 0
VAL_FRACTION = 0.15  # schema default of split.val_fraction

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz"

# Every key config/config.yaml sets is set here too: --configfile merges onto it.
STUDY_CONFIG = {
    "models": [MODEL],
    "datasets": list(DATASETS),
    "precisions": ["fp32", "int8"],
    "backends": ["onnxruntime"],
    "weights": "none",
    "input_size": SIZE,
    "verify_checksums": False,
    "train": {"epochs": 1, "batch_size": {"cifar100": 32, "oxford_flowers102": 4}},
    "compression": {"warmup": 0, "repeats": 1},
    "calibration": {"num_images": 16, "batch_size": 8},
    "benchmark": {"iterations": 3, "min_duration_s": 0, "warmup": 1},
}


def device_tag() -> str:
    from workflow_scripts.core.device import detect_device_tag

    return detect_device_tag("auto")


def offline_env(workdir: Path) -> dict[str, str]:
    """The environment of the snakemake run: no download can reach the network, no ~/.keras writes."""
    env = dict(os.environ)
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[var] = closed
    env["NO_PROXY"] = env["no_proxy"] = ""
    env["KERAS_HOME"] = str(workdir / "keras_home")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def run_snakemake(workdir: Path, *targets: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``snakemake -s Snakefile --directory workdir --configfile workdir/config.yaml --cores 2 targets``."""
    # --configfile takes several values: the targets must not follow it directly.
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *targets]
    return subprocess.run(cmd, cwd=workdir, env=offline_env(workdir), capture_output=True, text=True, timeout=timeout)


def output_of(proc: subprocess.CompletedProcess, tail: int = 6000) -> str:
    return (proc.stdout + proc.stderr)[-tail:]


def make_workdir(root: Path, config: dict) -> Path:
    (root / "resources" / "datasets").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def engine_folder(dataset: str) -> str:
    return f"results/{device_tag()}/onnxruntime/{dataset}_{SIZE}px/{MODEL}"


def test_config_sets_every_key_of_the_study_config():
    study = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert set(study) <= set(STUDY_CONFIG), f"keys config/config.yaml sets that the test would inherit: {set(study) - set(STUDY_CONFIG)}"
    for key, value in study.items():
        if isinstance(value, dict):
            assert set(value) <= set(STUDY_CONFIG[key]), f"{key}: {set(value) - set(STUDY_CONFIG[key])} inherited"


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    """One snakemake run up to the INT8 accuracy of both datasets; returns (workdir, process)."""
    workdir = make_workdir(tmp_path_factory.mktemp("study"), STUDY_CONFIG)
    resources = workdir / "resources" / "datasets"
    make_cifar100_python_archive(resources / "cifar-100-python.tar.gz", CIFAR_TRAIN, CIFAR_TEST, CIFAR_SEED)
    make_flowers102_files(resources, FLOWERS_IMAGES, FLOWERS_SEED)
    targets = [f"{engine_folder(d)}/int8_accuracy.parquet" for d in DATASETS]
    proc = run_snakemake(workdir, *targets)
    return workdir, proc


def test_run_succeeds(study_run):
    workdir, proc = study_run
    assert proc.returncode == 0, output_of(proc)
    for dataset in DATASETS:
        assert (workdir / engine_folder(dataset) / "int8_accuracy.parquet").is_file()


def expected_test_images(dataset: str) -> int:
    if dataset == "cifar100":
        return CIFAR_TEST
    return len(flowers102_layout(FLOWERS_IMAGES, FLOWERS_SEED)["tstid"])


@pytest.mark.parametrize("dataset", DATASETS)
def test_int8_accuracy_covers_every_test_image(study_run, dataset):
    import pandas as pd

    workdir, proc = study_run
    assert proc.returncode == 0, output_of(proc)
    table = pd.read_parquet(workdir / engine_folder(dataset) / "int8_accuracy.parquet")
    assert len(table) == 1
    row = table.iloc[0]
    assert int(row["images"]) == expected_test_images(dataset)
    assert (row["dataset"], row["model"], row["precision"], int(row["input_size"])) == (dataset, MODEL, "int8", SIZE)
    assert row["backend"] == "onnxruntime"
    assert 0.0 <= row["top1_accuracy"] <= row["top5_accuracy"] <= 1.0
    assert int(row["nonfinite_outputs"]) == 0


def prepared(workdir: Path, dataset: str) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    folder = workdir / "results" / "data" / f"{dataset}_{SIZE}px"
    meta = json.loads((folder / "meta.json").read_text())
    images = {s: np.load(folder / f"{s}_images.npy", mmap_mode="r") for s in ("train", "val", "test")}
    labels = {s: np.load(folder / f"{s}_labels.npy") for s in ("train", "val", "test")}
    return meta, images, labels


def test_cifar100_keeps_the_official_split_and_carves_val_from_train(study_run):
    workdir, proc = study_run
    assert proc.returncode == 0, output_of(proc)
    meta, images, labels = prepared(workdir, "cifar100")
    n_val = math.ceil(VAL_FRACTION * CIFAR_TRAIN)  # scikit-learn rounds the held-out share up
    assert meta["counts"] == {"train": CIFAR_TRAIN - n_val, "val": n_val, "test": CIFAR_TEST}
    assert meta["num_classes"] == 100 and meta["input_size"] == SIZE
    for split, count in meta["counts"].items():
        assert images[split].shape == (count, SIZE, SIZE, 3) and images[split].dtype == np.uint8
        assert labels[split].shape == (count,)
    source = synthetic_cifar100(CIFAR_TRAIN, CIFAR_TEST, CIFAR_SEED)
    # test is the official test batch, untouched and in order; train + val partition the official train batch.
    np.testing.assert_array_equal(labels["test"], source["test"].fine)
    first = source["test"].data[0].reshape(3, SIZE, SIZE).transpose(1, 2, 0)
    np.testing.assert_array_equal(images["test"][0], first)
    np.testing.assert_array_equal(np.sort(np.concatenate([labels["train"], labels["val"]])), np.sort(source["train"].fine))


def test_flowers_keeps_the_official_trnid_valid_tstid_split(study_run):
    workdir, proc = study_run
    assert proc.returncode == 0, output_of(proc)
    meta, images, labels = prepared(workdir, "oxford_flowers102")
    layout = flowers102_layout(FLOWERS_IMAGES, FLOWERS_SEED)
    official = {"train": layout["trnid"], "val": layout["valid"], "test": layout["tstid"]}
    assert meta["counts"] == {split: len(ids) for split, ids in official.items()}
    assert meta["num_classes"] == 102
    for split, ids in official.items():
        assert images[split].shape == (len(ids), SIZE, SIZE, 3)
        np.testing.assert_array_equal(labels[split], layout["labels"][ids - 1] - 1)


@pytest.mark.parametrize("dataset", DATASETS)
def test_int8_calibration_table_exists(study_run, dataset):
    import pandas as pd

    workdir, proc = study_run
    assert proc.returncode == 0, output_of(proc)
    folder = workdir / engine_folder(dataset)
    for name in ("int8_calibration.json", "int8_calibration.cache"):
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "int8_calibration.json").read_text())  # one range per calibrated tensor
    build = pd.read_parquet(folder / "int8_build.parquet")
    assert set(build["calibration_images"]) == {STUDY_CONFIG["calibration"]["num_images"]}


# The archive left out, the file name the message must give, its URL.
MISSING = {
    "cifar100": ("cifar-100-python.tar.gz", CIFAR_URL),
    "oxford_flowers102": ("102flowers.tgz", FLOWERS_URL),
}


@pytest.mark.parametrize("dataset", DATASETS)
def test_missing_archive_fails_early_naming_file_folder_and_url(tmp_path, dataset):
    workdir = make_workdir(tmp_path, {**STUDY_CONFIG, "datasets": [dataset]})
    resources = workdir / "resources" / "datasets"
    if dataset == "oxford_flowers102":
        make_flowers102_files(resources, FLOWERS_IMAGES, FLOWERS_SEED)
        (resources / "102flowers.tgz").unlink()  # the labels and split files are there, the images are not
    name, url = MISSING[dataset]
    data_folder = workdir / "results" / "data" / f"{dataset}_{SIZE}px"

    started = time.monotonic()
    proc = run_snakemake(workdir, f"results/data/{dataset}_{SIZE}px/meta.json", timeout=300)
    elapsed = time.monotonic() - started

    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, output_of(proc)
    assert name in text and url in text, output_of(proc)
    assert str(resources.resolve()) in text, output_of(proc)
    assert "Traceback" not in text, output_of(proc)  # a clear error, not a crash
    assert elapsed < 120, f"failing took {elapsed:.0f} s"
    leftovers = sorted(p.name for p in data_folder.iterdir()) if data_folder.exists() else []
    assert leftovers == [], f"prepared data left behind: {leftovers}"
    assert not list(resources.glob(".*.part")), "a partial download was left behind"
    assert not (resources / name).exists()
