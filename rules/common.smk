import sys
from pathlib import Path

from snakemake.utils import validate

# The workflow's own package must import without installation too (plain clone, dry run).
sys.path.insert(0, str(Path(workflow.basedir)))

from workflow_scripts import paths  # noqa: E402
from workflow_scripts.backends import check_precisions, resolve_backend  # noqa: E402
from workflow_scripts.config import check_config  # noqa: E402
from workflow_scripts.device import detect_device_tag  # noqa: E402


validate(config, "../config/schema.yaml", set_default=True)
check_config(config)

RESULTS = config["results_dir"]
SIZE = config["input_size"]
DEVICE = detect_device_tag(config["device"])
BACKEND = resolve_backend(config["backend"])
check_precisions(BACKEND, config["precisions"])
ENGINE_EXT = paths.ENGINE_SUFFIX[BACKEND]

# Where each rule's log goes: one folder, mirroring the artifact it explains.
LOGS = f"{RESULTS}/logs"


wildcard_constraints:
    dataset="|".join(["digits", "cifar100", "oxford_flowers102"]),
    model="|".join(
        [
            "MobileNetV3Small",
            "MobileNetV3Large",
            "EfficientNetB1",
            "EfficientNetB3",
            "DenseNet169",
            "DenseNet201",
        ]
    ),
    precision="fp32|fp16|int8",
    size=r"\d+",
    device=r"[a-z0-9][a-z0-9-]*",
    backend="onnxruntime|tensorrt",


def data_dir(w):
    return paths.data_dir(RESULTS, w.dataset, w.size)


def data_files(w):
    """The prepared split files a job reads."""
    folder = data_dir(w)
    names = [f"{split}_{kind}.npy" for split in paths.SPLITS for kind in ("images", "labels")]
    return [f"{folder}/{name}" for name in names] + [f"{folder}/meta.json"]


# The config hash is not a param: a param change reruns a job, and the hash changes with every
# setting. Shims compute it from snakemake.config instead (workflow_scripts.shims.provenance_of).
def provenance_params(w):
    return {"device": w.device, "backend": w.backend}


def export_provenance(w):
    return {"device": w.device, "backend": "tf2onnx"}


def backend_options(w):
    """Backend build options; TensorRT's settings only reach TensorRT builds."""
    if w.backend != "tensorrt":
        return {}
    return {
        **config["tensorrt"],
        "device": w.device,
        # Timing caches are per device and TensorRT version: they live under the device.
        "timing_cache": f"{RESULTS}/{w.device}/tensorrt/timing.cache",
        "batch_size": config["benchmark"]["batch_size"],
        "input_shape": [int(w.size), int(w.size), 3],
    }


def engine_labels(w):
    return {"dataset": w.dataset, "model": w.model, "precision": w.precision, "input_size": int(w.size)}


def matrix(pattern, **extra):
    """Expand a path pattern over the configured models x datasets (x precisions if named)."""
    paths_ = expand(
        pattern,
        results=RESULTS,
        device=DEVICE,
        backend=BACKEND,
        size=SIZE,
        dataset=config["datasets"],
        model=config["models"],
        precision=config["precisions"],
        ext=ENGINE_EXT,
        **extra,
    )
    # expand() takes the product over every list, used in the pattern or not: drop repeats.
    return list(dict.fromkeys(paths_))


ENGINE_DIR = "{results}/{device}/{backend}/{dataset}_{size}px/{model}"


def summary_inputs():
    """Every per-engine table the summary reads, for the current matrix."""
    return {
        "export_files": matrix("{results}/{device}/onnx/{dataset}_{size}px/{model}/export.parquet"),
        "export_resource_files": matrix("{results}/{device}/onnx/{dataset}_{size}px/{model}/export_resources.parquet"),
        "build_files": matrix(f"{ENGINE_DIR}/{{precision}}_build.parquet"),
        "build_resource_files": matrix(f"{ENGINE_DIR}/{{precision}}_build_resources.parquet"),
        "latency_files": matrix(f"{ENGINE_DIR}/{{precision}}_latency.parquet"),
        "accuracy_files": matrix(f"{ENGINE_DIR}/{{precision}}_accuracy.parquet"),
        "prediction_files": matrix(f"{ENGINE_DIR}/{{precision}}_predictions.parquet"),
        "keras_accuracy_files": matrix("{results}/models/{dataset}_{size}px/{model}/accuracy.parquet"),
    }


SUMMARY_DIR = f"{RESULTS}/summary/{DEVICE}/{BACKEND}"
SUMMARY_TABLES = ["compression", "latency", "accuracy", "size", "resources", "compression_resources"]
FIGURES = [
    "fig05_base_latency",
    "fig07_compression_time",
    "fig09_size_normalized",
    "fig10_accuracy",
    "fig12_latency_normalized",
]


def folder_of_first_output(wildcards, output):
    """The folder of a rule's first output (for params that name a folder)."""
    return str(Path(output[0]).parent)


def summary_dir_of_tables(wildcards, input):
    """The folder holding the summary tables a plotting job reads."""
    return str(Path(input.tables[0]).parent)


def all_targets():
    return [f"{SUMMARY_DIR}/{table}.parquet" for table in SUMMARY_TABLES] + [
        f"{SUMMARY_DIR}/figures/{figure}.png" for figure in FIGURES
    ]
