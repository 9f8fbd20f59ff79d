"""Your model, your data: config keys ``user_models`` and ``user_datasets``, read and checked at planning.

A user model is a trained Keras checkpoint (``.keras`` file or SavedModel folder) or an ONNX file; a
user dataset is an image folder in the class-subfolder layout (optionally with ``train``/``val``/
``test`` subfolders; image files directly in the folder mean no labels: calibration and latency
only) or an ``.npz`` of images and labels. Their names join config keys ``models`` and ``datasets``
and name their results folders. What the model expects (input size, channels, layout, classes) is
read from the file here, without TensorFlow or a runtime, so a mismatch with the data is refused
before anything runs, naming both sides.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from workflow_scripts.core import registry
from workflow_scripts.core.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_FOLDERS = ("train", "val", "test")
# Layers that keep their input's shape: the classes are read through them.
_SHAPE_KEEPING = ("Softmax", "Activation", "Dropout", "ReLU", "Identity", "GaussianNoise", "ActivityRegularization")


@dataclass(frozen=True)
class ModelContract:
    """What a model file says about its input and output (None where it cannot be read without loading)."""

    kind: str  # keras | savedmodel | onnx
    input_size: int | None
    channels: int | None
    layout: str  # NHWC | NCHW
    num_classes: int | None


@dataclass(frozen=True)
class DataContract:
    """What a dataset's files say before preparation: its classes (None: no labels) and splits."""

    kind: str  # folder | npz
    num_classes: int | None
    class_names: tuple[str, ...]
    splits: tuple[str, ...]


def model_kind(path: Path) -> str:
    if path.is_dir():
        return "savedmodel"
    return {".keras": "keras", ".onnx": "onnx"}.get(path.suffix.lower(), "")


def _existing_path(key: str, written: str, fix: str) -> tuple[str, Path]:
    """(as written, resolved) of config key ``key``'s path, refused naming the key and ``fix`` if it does not exist."""
    path = Path(os.path.expanduser(written)).resolve()
    if not path.exists():
        raise ConfigError(f"config key '{key}' is {written!r}, but {path} does not exist; {fix}")
    return written, path


def user_model_path(name: str, entry: dict) -> Path:
    """The checked path of user model ``name``: it exists and is a .keras, .onnx or SavedModel folder."""
    written, path = _existing_path(f"user_models.{name}.path", entry["path"],
                                   "give the path of your .keras file, SavedModel folder or .onnx file")
    if not model_kind(path):
        raise ConfigError(f"config key 'user_models.{name}.path' is {written!r}, which is neither a .keras file, a "
                          "SavedModel folder nor an .onnx file")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise ConfigError(f"config key 'user_models.{name}.path' is the folder {path}, which holds no saved_model.pb "
                          "(a SavedModel folder is what tf.saved_model.save or model.export writes)")
    return path


def read_model_contract(path: Path) -> ModelContract:
    """Input size, channels, layout and classes of a model file, read from its config (no TensorFlow)."""
    kind = model_kind(path)
    if kind == "keras":
        return _keras_contract(path)
    if kind == "onnx":
        return _onnx_contract(path)
    return ModelContract("savedmodel", None, None, "NHWC", None)  # read when the job loads it


def _keras_contract(path: Path) -> ModelContract:
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a readable .keras archive ({type(exc).__name__}: {exc}); save your model "
                          "with model.save('name.keras')") from None
    inner = config.get("config", {})
    layers = inner.get("layers", [])
    shape = inner.get("build_input_shape")
    for layer in layers:
        if layer.get("class_name") == "InputLayer":
            shape = layer["config"].get("batch_shape") or layer["config"].get("batch_input_shape")
            break
    classes = _keras_classes(config.get("class_name"), inner, layers)
    if not shape or len(shape) != 4:
        return ModelContract("keras", None, None, "NHWC", classes)
    _, height, width, channels = shape
    size = height if height == width else None
    return ModelContract("keras", size, channels, "NHWC", classes)


def _keras_classes(class_name: str | None, inner: dict, layers: list[dict]) -> int | None:
    by_name = {layer.get("name", layer.get("config", {}).get("name")): layer for layer in layers}
    if class_name == "Sequential":
        for layer in reversed(layers):
            units = layer.get("config", {}).get("units")
            if units:
                return int(units)
            if layer.get("class_name") not in _SHAPE_KEEPING:
                return None
        return None
    outputs = inner.get("output_layers") or []
    if len(outputs) != 1:
        return None
    layer = by_name.get(outputs[0][0])
    for _ in range(len(layers)):
        if layer is None:
            return None
        units = layer.get("config", {}).get("units")
        if units:
            return int(units)
        try:
            tensor = layer["inbound_nodes"][0]["args"][0]["config"]
        except (KeyError, IndexError, TypeError):
            return None
        if layer.get("class_name") in _SHAPE_KEEPING:
            return int(tensor["shape"][-1]) if tensor.get("shape") and tensor["shape"][-1] else None
        return None
    return None


def _onnx_contract(path: Path) -> ModelContract:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ConfigError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise ConfigError(f"{path} has {len(inputs)} inputs; the workflow feeds one image tensor")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    out = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.output[0].type.tensor_type.shape.dim]
    classes = out[-1] if out else None
    if len(dims) != 4:
        return ModelContract("onnx", None, None, "NHWC", classes)
    if dims[1] in (1, 3) and dims[3] not in (1, 3):
        _, channels, height, width = dims
        layout = "NCHW"
    else:
        _, height, width, channels = dims
        layout = "NHWC"
    return ModelContract("onnx", height if height == width else None, channels, layout, classes)


def model_preprocess(name: str, entry: dict) -> registry.Preprocess:
    """The preprocessing of user model ``name``: its family's, with the keys of ``preprocess`` replacing it."""
    base = registry.family_preprocess(entry.get("family", "none"))
    given = dict(entry.get("preprocess") or {})
    for key in ("mean", "std"):
        if key in given:
            given[key] = tuple(float(v) for v in given[key])
    if any(s == 0 for s in given.get("std", ())):
        raise ConfigError(f"config key 'user_models.{name}.preprocess.std' has a 0; every std must be non-zero")
    fields = {k: getattr(base, k) for k in ("scale", "offset", "mean", "std", "channel_order")}
    fields.update(given)
    return registry.Preprocess(**fields)


def user_dataset_path(name: str, entry: dict) -> Path:
    written, path = _existing_path(f"user_datasets.{name}.path", entry["path"],
                                   "give an image folder (one subfolder per class) or an .npz file")
    if path.is_file() and path.suffix.lower() != ".npz":
        raise ConfigError(f"config key 'user_datasets.{name}.path' is {written!r}, a file that is not .npz; give an "
                          "image folder (one subfolder per class) or an .npz of images and labels")
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_classes(folder: Path, what: str) -> list[str] | None:
    """The class names of a class-subfolder folder (sorted, as Keras and torchvision order them), or None
    when it holds images directly (no labels). An empty class is refused, naming its folder."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        if not _images_in(folder):
            raise ConfigError(f"{what}: {folder} holds neither class subfolders nor image files "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        return None
    for name in classes:
        if not _images_in(folder / name):
            raise ConfigError(f"{what}: class folder {folder / name} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                              "remove the empty class or add its images")
    return classes


def read_data_contract(name: str, path: Path) -> DataContract:
    """Classes and splits of user dataset ``name`` (its labels are not read for a folder: its subfolders are)."""
    what = f"user dataset {name!r}"
    if path.is_file():
        return _npz_contract(name, path)
    children = {p.name for p in path.iterdir() if p.is_dir()}
    splits = tuple(s for s in SPLIT_FOLDERS if s in children)
    if splits:
        missing = [s for s in ("train", "test") if s not in splits]
        if missing:
            raise ConfigError(f"{what}: {path} has split folders {list(splits)} but no {missing[0]}/; with split "
                              "folders, train/ and test/ are needed (val/ is optional)")
        classes = [folder_classes(path / s, what) for s in splits]
        if len({None if c is None else tuple(c) for c in classes}) != 1:
            raise ConfigError(f"{what}: the split folders of {path} hold different classes "
                              f"({dict(zip(splits, classes))}); each split needs the same class subfolders")
        names = classes[0]
    else:
        names = folder_classes(path, what)
    return DataContract("folder", None if names is None else len(names), tuple(names or ()), splits)


def _npz_contract(name: str, path: Path) -> DataContract:
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            label_keys = [k for k in ("labels", "train_labels", "test_labels", "val_labels") if k in keys]
            labels = [np.asarray(archive[k]) for k in label_keys]
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"user dataset {name!r}: {path} is not a readable .npz without pickles "
                          f"({type(exc).__name__}: {exc})") from None
    if "images" in keys:
        splits: tuple[str, ...] = ()
    elif {"train_images", "test_images"} <= keys:
        splits = tuple(s for s in SPLIT_FOLDERS if f"{s}_images" in keys)
    else:
        raise ConfigError(f"user dataset {name!r}: {path} holds {sorted(keys)}; it needs 'images' (and 'labels'), or "
                          "'train_images', 'test_images' (and their '_labels'; 'val_*' optional)")
    wanted = ["labels"] if not splits else [f"{s}_labels" for s in splits]
    if not labels:
        return DataContract("npz", None, (), splits)
    missing = [k for k in wanted if k not in label_keys]
    if missing:
        raise ConfigError(f"user dataset {name!r}: {path} has labels for some images but not {missing}")
    for key, values in zip(label_keys, labels):
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer) or (len(values) and values.min() < 0):
            raise ConfigError(f"user dataset {name!r}: {path}[{key!r}] is {values.dtype} {values.shape}; labels are "
                              "non-negative integers, one per image")
    classes = int(max(int(v.max()) for v in labels if len(v)) + 1)
    return DataContract("npz", classes, tuple(str(c) for c in range(classes)), splits)


def fingerprint(path: Path) -> str:
    """A cheap fingerprint of a file or folder tree (relative paths, sizes, mtimes) for Snakemake params:
    any change reruns the job that reads it. The content digest is recorded by the job itself."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in files:
        stat = item.stat()
        digest.update(f"{item.relative_to(path) if item != path else item.name}:{stat.st_size}:{stat.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()[:16]


def content_digest(path: Path) -> str:
    """SHA-256 over a file's bytes, or over a folder's relative paths and file bytes (sorted)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for item in files:
        if path.is_dir():
            digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        with open(item, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def user_models_of(config: dict, kind: str | None = None) -> list[str]:
    """Names in config key ``models`` that are user models (of ``kind``, where given): ``keras`` (a .keras file:
    it enters where a trained model would) or ``onnx`` (an ONNX file, or a SavedModel, which Keras' safe
    mode cannot load: both enter after the export)."""
    entries = config.get("user_models") or {}
    names = [m for m in config["models"] if m in entries]
    if kind is None:
        return names
    return [m for m in names if ("keras" if model_kind(Path(os.path.expanduser(entries[m]["path"]))) == "keras"
                                 else "onnx") == kind]


def dataset_classes(config: dict, dataset: str) -> int | None:
    """The number of classes of ``dataset`` known at planning (None: a dataset without labels)."""
    entries = config.get("user_datasets") or {}
    if dataset in entries:
        return read_data_contract(dataset, user_dataset_path(dataset, entries[dataset])).num_classes
    return registry.DATASETS[dataset].num_classes


def check_user_matrix(config: dict, backends: list[str] | None = None) -> None:
    """Refuse at planning what cannot run: unknown names, a model that does not fit the data (size,
    channels, classes: both sides named), a built-in model to train on data without labels, and a
    backend that needs Keras for an ONNX model."""
    models, datasets = config.get("user_models") or {}, config.get("user_datasets") or {}
    for key, entries, builtin in (("user_models", models, registry.MODELS), ("user_datasets", datasets,
                                                                               registry.DATASETS)):
        clash = sorted(set(entries) & set(builtin))
        if clash:
            raise ConfigError(f"config key '{key}' names {clash}, which are built-in names; give yours another name")
    for key, chosen, known in (("models", config["models"], list(registry.MODELS) + list(models)),
                               ("datasets", config["datasets"], list(registry.DATASETS) + list(datasets))):
        unknown = [n for n in chosen if n not in known]
        if unknown:
            raise ConfigError(f"config key '{key}' names {unknown}, which are neither built in nor in config key "
                              f"'user_{key}'; choose from {', '.join(known)} or add an entry under user_{key}")
    size = config["input_size"]
    contracts = {m: (user_model_path(m, models[m]), read_model_contract(user_model_path(m, models[m])))
                 for m in config["models"] if m in models}
    data = {d: dataset_classes(config, d) for d in config["datasets"]}
    for name, (path, contract) in contracts.items():
        model_preprocess(name, models[name])
        if contract.input_size is not None and contract.input_size != size:
            raise ConfigError(f"user model {name!r} ({path}) takes {contract.input_size}x{contract.input_size} images, "
                              f"but the data are prepared at {size}x{size} (config key 'input_size'); set "
                              f"input_size: {contract.input_size}")
        if contract.channels is not None and contract.channels != 3:
            raise ConfigError(f"user model {name!r} ({path}) takes {contract.channels}-channel images, but the data "
                              "are prepared as 3-channel RGB (gray images are repeated to RGB); give a model with a "
                              "3-channel input")
        for dataset, classes in data.items():
            if contract.num_classes is not None and classes is not None and contract.num_classes != classes:
                raise ConfigError(f"user model {name!r} ({path}) has {contract.num_classes} output classes, but "
                                  f"dataset {dataset!r} has {classes}; give the dataset the model was trained for")
    trained = [m for m in config["models"] if m not in models]
    unlabeled = [d for d, classes in data.items() if classes is None]
    if trained and unlabeled:
        raise ConfigError(f"dataset {unlabeled[0]!r} has no labels (a calibration-only folder), so models "
                          f"{trained} cannot be trained on it; measure your own trained model on it (user_models), "
                          "or give the images in class subfolders")
    onnx_models = user_models_of(config, "onnx")
    keras_only = [b for b in backends or [] if registry.BACKENDS[b].source == "keras"]
    if onnx_models and keras_only:
        raise ConfigError(f"user model(s) {onnx_models} are ONNX files (or SavedModels, which enter as ONNX), but "
                          f"backend(s) {keras_only} build from a Keras model (the TFLite converter reads Keras), which "
                          f"they do not give; name the "
                          f"others, e.g. backends: [{', '.join(b for b in backends if b not in keras_only)}]")
    wanted = (config.get("calibration") or {}).get("num_images", 0)
    if "int8" in config.get("precisions", []) and wanted:
        for dataset in (d for d in config["datasets"] if d in datasets):
            have = train_images(dataset, user_dataset_path(dataset, datasets[dataset]))
            if have is not None and wanted > have:
                raise ConfigError(f"config key 'calibration.num_images' is {wanted}, but the train split of dataset "
                                  f"{dataset!r} has {have} images; set calibration.num_images to at most {have}")


def user_dataset_param(config: dict, dataset: str) -> dict:
    """The prepare_dataset param of a user dataset: its checked path and a fingerprint of its files (a
    change reruns the preparation); empty for a built-in dataset."""
    entry = (config.get("user_datasets") or {}).get(dataset)
    if entry is None:
        return {}
    path = user_dataset_path(dataset, entry)
    return {"path": str(path), "fingerprint": fingerprint(path)}


def user_model_param(config: dict, model: str) -> dict:
    """The import rules' param of a user model: its checked path, its preprocessing (the family's with the
    keys given replacing it) and a fingerprint of its files; changing any of them reruns the import."""
    from dataclasses import asdict

    entry = config["user_models"][model]
    path = user_model_path(model, entry)
    return {"path": str(path), "fingerprint": fingerprint(path), "preprocess": asdict(model_preprocess(model, entry))}


def train_images(name: str, path: Path) -> int | None:
    """How many images the train split of a user dataset will hold, where that is known before preparation
    (a folder's train/ or a folder without labels, whose images all calibrate; an .npz's train_labels);
    None where the split is carved at preparation."""
    if path.is_file():
        import numpy as np

        with np.load(path, allow_pickle=False) as archive:
            return len(archive["train_labels"]) if "train_labels" in archive.files else None
    contract = read_data_contract(name, path)
    folder = path / "train" if "train" in contract.splits else path
    if contract.num_classes is None:
        return len(_images_in(folder))
    if "train" in contract.splits:
        return sum(len(_images_in(folder / c)) for c in contract.class_names)
    return None
