import itertools
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The workflow's own package must import without installation too (plain clone, dry run).
sys.path.insert(0, str(Path(workflow.basedir)))

# Only light modules here: planning never imports pandas, scipy, TensorFlow or a runtime.
from workflow_scripts.core import paths, registry
from workflow_scripts.core.config import check_config, check_renamed_keys, coerce_cli_values
from workflow_scripts.core.config import settings_param as settings_param_of
from workflow_scripts.core.device import detect_device_tag
from workflow_scripts.fleet.placement import check_placement, probe_backends_while_planning, stage_placement
from workflow_scripts.core.errors import ConfigError
from workflow_scripts.core.config_checks import check_duplicate_keys, check_threads
from workflow_scripts.core.user_inputs import check_user_matrix, user_models_of


def schema_error_message(exc):
    """One readable line for a schema violation: the key, the value, the rule broken, the fix."""
    # snakemake.utils.validate raises WorkflowError while handling jsonschema's ValidationError.
    inner = exc.__cause__ or exc.__context__
    if not hasattr(inner, "absolute_path"):
        return f"invalid config: {exc}; config/schema.yaml lists every key, its allowed values and default"
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in inner.absolute_path).lstrip(".")
    if not key:
        return (
            f"invalid config: {inner.message}. Remove or correct that key in your config file or --config; "
            "config/schema.yaml lists every key, its allowed values and default"
        )
    return (
        f"invalid config: key '{key}' is {inner.instance!r}: {inner.message}. Set a valid value in your "
        "config file or with --config; config/schema.yaml lists every key, its allowed values and default"
    )


def check_results_dir(results_dir, writes=True):
    """The output folder must be creatable (always) and writable (when jobs may run): fail before planning,
    naming config key results_dir. A file in its way can never work, dry run or not."""
    folder = Path(results_dir)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"config key 'results_dir' is {results_dir!r}, but {existing} is a file, so the output folder "
            f"{folder} cannot be created; set results_dir to a folder you can write (e.g. --config "
            "results_dir=results) or move that file away"
        )
    if writes and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"config key 'results_dir' is {results_dir!r}, but the folder {existing} is not writable; "
            "fix its permissions or set results_dir to a folder you can write"
        )


# Commands that read results_dir and write nothing there (a dry run, a report written elsewhere, a
# lint, an unlock, listings): a read-only results_dir must not block them.
READ_ONLY_COMMANDS = {"--report", "--lint", "--unlock", "--list-rules", "--list", "-l", "--list-target-rules", "--lt",
                      "--dag", "--rulegraph", "--filegraph", "--d3dag", "--summary", "-S", "--detailed-summary", "-D",
                      "--list-changes", "--lc", "--list-code-changes", "--list-input-changes",
                      "--list-params-changes", "--containerize", "--cleanup-metadata", "--cm"}


def writes_results():
    """Whether this invocation may run jobs (and so write under results_dir)."""
    if workflow.output_settings is not None and workflow.output_settings.dryrun:
        return False
    return not READ_ONLY_COMMANDS & {arg.split("=", 1)[0] for arg in sys.argv[1:]}


# YAML keeps the last of a key given twice: refuse it, naming the key and the file (issue 25).
check_duplicate_keys(workflow.configfiles)
check_renamed_keys(config)
coerce_cli_values(config)
try:
    validate(config, "../config/schema.yaml", set_default=True)
except WorkflowError as exc:
    raise ConfigError(schema_error_message(exc)) from None
check_config(config)
check_results_dir(config["results_dir"], writes=writes_results())

RESULTS = config["results_dir"]
SIZE = config["input_size"]
DEVICE = detect_device_tag(config["device"])
check_placement(config["placement"])
# A declared device placed on other nodes: its backends are checked in each device job, on its node.
PROBE_BACKENDS = probe_backends_while_planning(config["device"], config["placement"])
BACKENDS = registry.resolve_backends(config["backends"], probe=PROBE_BACKENDS)
for _backend in BACKENDS:
    registry.check_backend_config(_backend, config, probe=PROBE_BACKENDS)
# The precisions each backend builds here: a (backend, precision) pair a backend cannot build or this
# hardware cannot run (bf16 without avx512_bf16/amx_bf16, or on a GPU older than Ampere) was refused
# above where backends are named; under backends: auto it is left out of the matrix, with a note.
ENGINE_PRECISIONS, _PRECISION_NOTES = registry.engine_precisions(BACKENDS, config, probe=PROBE_BACKENDS)
LEFT_OUT = {(b, p) for b in BACKENDS for p in config["precisions"] if p not in ENGINE_PRECISIONS[b]}
for _note in _PRECISION_NOTES:
    print(f"Note: {_note}", file=sys.stderr)
check_user_matrix(config, BACKENDS)  # user models and data: fit, and backends an ONNX file can feed
if PROBE_BACKENDS:
    check_threads(config)  # the measuring jobs run on this machine
for _backend in BACKENDS if PROBE_BACKENDS else []:
    # Options left to planning (ONNX Runtime's reduce_range: null) are resolved here, for the machine that
    # runs the jobs, so they are part of every row's settings (registry hook plan_options).
    _plan_options = registry.backend(_backend).hook("plan_options")
    if _plan_options is not None:
        _plan_options(config)
# The backend of the calibration study (registry.STUDY_BACKEND) where it runs, and its engine suffix.
BACKEND = registry.STUDY_BACKEND if registry.STUDY_BACKEND in BACKENDS else BACKENDS[0]
ENGINE_EXT = registry.ENGINE_SUFFIX[BACKEND]

# Where each rule's log goes: one folder, mirroring the artifact it explains.
LOGS = f"{RESULTS}/logs"


wildcard_constraints:
    dataset="|".join(list(registry.DATASETS) + list(config["user_datasets"])),
    model="|".join(list(registry.MODELS) + list(config["user_models"])),
    precision="|".join(registry.PRECISIONS),
    size=r"\d+",
    device=r"[a-z0-9][a-z0-9-]*",
    backend="|".join(registry.BACKENDS),


def job_cores(wildcards=None):
    """Every core of the run, for measuring jobs (they never run beside another job); 1 where the
    command gives no --cores and runs nothing (--report, --unlock)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def data_dir(w):
    return paths.data_dir(RESULTS, w.dataset, w.size)


def data_files(w):
    """The prepared split files a job reads."""
    names = [f"{split}_{kind}.npy" for split in paths.SPLITS for kind in ("images", "labels")] + ["meta.json"]
    return [paths.data_file(name).format(results=RESULTS, dataset=w.dataset, size=w.size) for name in names]


def settings_param(rule):
    """The ``settings`` param of ``rule``: the config values its job reads and its rows compare.

    ``rule`` is the logical rule of config.RULE_SETTINGS (build_engine_<backend> is build_engine);
    the dict also names it (``rule``) for the job."""

    def settings(w):
        return settings_param_of(config, rule, precision=w.get("precision"), backend=w.get("backend"),
                                 dataset=w.get("dataset"), model=w.get("model"))

    return settings


def engine_source(w):
    """What an engine is built from: the ONNX export, or the Keras model for Keras-native backends."""
    fields = dict(results=RESULTS, device=w.device, dataset=w.dataset, size=w.size, model=w.model)
    if registry.backend(w.backend).source == "keras":
        return paths.model_file("model.keras").format(**fields)
    return paths.onnx_file("model.onnx").format(**fields)


def engine_of(w):
    """The engine file of the job's backend and precision (its suffix comes from the registry)."""
    return paths.engine_file(RESULTS, w.device, w.backend, w.dataset, w.size, w.model, w.precision)


def engine_companions(w):
    """Files beside the engine that belong to it (OpenVINO's .bin weights), as inputs too."""
    engine = Path(engine_of(w))
    return [str(engine.with_suffix(f".{ext}")) for ext in registry.backend(w.backend).companions]


def backend_env(w):
    """The environment file of the job's backend (registry entry ``env``)."""
    return str(Path(workflow.basedir) / registry.backend(w.backend).env)


# Provenance params hold no config value (the settings param does): device and backend labels.
def provenance_params(w):
    return {"device": w.device, "backend": w.backend}


def export_provenance(w):
    return {"device": w.device, "backend": "tf2onnx"}


def backend_options(w):
    """Per-job facts a backend's build needs besides its settings (paths, shapes, the device): the
    backend's job_options hook (registry), as the on-device runner's."""
    job_options = registry.backend(w.backend).hook("job_options")
    return job_options(RESULTS, w.device, w.size, config) if job_options is not None else {}


def engine_labels(w):
    return {"dataset": w.dataset, "model": w.model, "precision": w.precision, "input_size": int(w.size)}


def runoff_engines(w):
    """The engines of one model the runoff measures: every backend x precision of the matrix."""
    return [
        {"backend": b, "precision": p,
         "path": paths.engine_file(RESULTS, w.device, b, w.dataset, w.size, w.model, p)}
        for b in BACKENDS
        for p in ENGINE_PRECISIONS[b]
    ]


def runoff_engine_files(w):
    """The runoff's engine files with their companions (OpenVINO's .bin)."""
    files = []
    for engine in runoff_engines(w):
        path = Path(engine["path"])
        files += [str(path)] + [str(path.with_suffix(f".{ext}")) for ext in registry.backend(engine["backend"]).companions]
    return files


def matrix(pattern, **extra):
    """Expand a path pattern over the configured models x datasets x backends (x precisions if named)."""
    fields = dict(
        results=RESULTS,
        device=DEVICE,
        backend=BACKENDS,
        size=SIZE,
        dataset=config["datasets"],
        model=config["models"],
        precision=config["precisions"],
    )
    fields.update(extra)
    if "{ext}" in pattern:
        # The suffix follows the backend: expand per backend.
        backends = fields.pop("backend")
        out = []
        for name in [backends] if isinstance(backends, str) else backends:
            out += expand(pattern, planned_product, backend=name, ext=registry.ENGINE_SUFFIX[name], **fields)
        return list(dict.fromkeys(out))
    # expand() takes the product over every list, used in the pattern or not: drop repeats.
    return list(dict.fromkeys(expand(pattern, planned_product, **fields)))


def planned_product(*wildcards):
    """expand()'s combinator: the product of the wildcard values without the (backend, precision) pairs
    left out of the matrix (LEFT_OUT: e.g. onnxruntime bf16 under backends: auto)."""
    for combination in itertools.product(*wildcards):
        values = dict(combination)
        if (values.get("backend"), values.get("precision")) not in LEFT_OUT:
            yield combination


ENGINE_DIR = paths.ENGINE_DIR


def summary_inputs():
    """Every per-engine table the summary reads, for the current matrix."""
    return {
        "export_files": matrix(paths.onnx_file("export.parquet")),
        "export_resource_files": matrix(paths.onnx_file("export_resources.parquet")),
        "build_files": matrix(paths.engine_table("build")),
        "build_resource_files": matrix(paths.engine_table("build_resources")),
        "latency_files": matrix(paths.engine_table("latency")),
        "accuracy_files": matrix(paths.engine_table("accuracy")),
        "prediction_files": matrix(paths.engine_table("predictions")),
        # An ONNX user model has no Keras model to evaluate.
        "keras_accuracy_files": matrix(paths.model_file("accuracy.parquet"),
                                       model=[m for m in config["models"] if m not in user_models_of(config, "onnx")]),
        # The latency runoff of each model (rules/runoff.smk), where enabled.
        "runoff_files": matrix(paths.onnx_file("latency_runoff.parquet")) if config["runoff"]["enabled"] else [],
    }


SUMMARY_DIR = f"{RESULTS}/summary"
# The summary covers every device and backend found under results/, so it lives beside the
# device folders, not inside one: results/summary/. The current config's per-engine tables are
# real inputs (built first); other devices' tables are read at run time, and a fingerprint of
# their paths, sizes and mtimes is a param, so the summary reruns when they arrive or change
# while Snakemake never tries to rebuild them here.
SUMMARY_TABLES = [
    "compression",
    "compression_stats",
    "latency",
    "accuracy",
    "size",
    "resources",
    "compression_resources",
    "claims",
    "runoff",
]
FIGURES = [
    "fig05_base_latency",
    "fig06_base_resources",
    "fig07_compression_time",
    "fig08_ptq_resources",
    "fig09_size_normalized",
    "fig10_accuracy",
    "fig11_resources_normalized",
    "fig12_latency_normalized",
    "fig13_int8_tradeoff",
    "fig14_pareto",
]
FIGURE_FORMATS = ["png", "svg"]


def summary_rule_inputs():
    """The current matrix's per-engine tables the summary reads, raw latency samples included."""
    return {
        **summary_inputs(),
        "latency_samples_files": matrix(paths.engine_table("latency_samples")),
    }


def summary_params():
    """What the summary job needs besides its inputs: where to look for other devices, the seed."""
    from workflow_scripts.core.discovery import results_fingerprint

    files = summary_rule_inputs()
    return {
        **files,
        "results_dir": RESULTS,
        "seed": config["seed"],
        "ignore_folders": config["summary"]["ignore_folders"],
        "other_results": results_fingerprint(RESULTS, files),
    }


def folder_of_first_output(wildcards, output):
    """The folder of a rule's first output (for params that name a folder)."""
    return str(Path(output[0]).parent)


def summary_dir_of_tables(wildcards, input):
    """The folder holding the summary tables a plotting job reads."""
    return str(Path(input.tables[0]).parent)


def calibration_prepared_of(w):
    """The calibration study's pre-processed graph of one model (one per model)."""
    return paths.calibration_file("prepared.onnx").format(**w)


def calibration_statistics_of(w):
    """The calibration study's statistics artifact of a variant's calibration image set."""
    from workflow_scripts.calibration_study.variants import parse_variant

    n = parse_variant(w.variant).num_images
    return paths.calibration_file(f"statistics-n{n}.npz").format(**w)


def study_log(name):
    """The log ``name`` of a calibration study step about one model (rules/calibration_study.smk)."""
    return paths.log_in("calibration_study", "engine_dir", name)


def calibration_study_enabled():
    """Whether config key calibration_study.enabled asks for the INT8 calibration study."""
    return bool(config.get("calibration_study", {}).get("enabled", False))


def engine_targets():
    """Every engine of the matrix with the files that belong to it (OpenVINO's .bin): what a user
    deploys, so the default run rebuilds a deleted one instead of treating it as an intermediate."""
    out = []
    for name in BACKENDS:
        for engine in matrix(paths.ENGINE, backend=name):
            out += [engine] + [str(Path(engine).with_suffix(f".{ext}")) for ext in registry.backend(name).companions]
    return out


def all_targets():
    return (
        engine_targets()
        + [f"{SUMMARY_DIR}/{table}.parquet" for table in SUMMARY_TABLES]
        + [f"{SUMMARY_DIR}/claims.md"]
        + [f"{SUMMARY_DIR}/figures/{figure}.{fmt}" for figure in FIGURES for fmt in FIGURE_FORMATS]
        # CALIBRATION_STUDY_TARGETS is defined in rules/calibration_study.smk.
        + (CALIBRATION_STUDY_TARGETS if calibration_study_enabled() else [])
    )


def placement(rule):
    """Scheduler resources (partition, constraint, ...) of ``rule`` from config key placement."""
    return stage_placement(config["placement"], rule)
