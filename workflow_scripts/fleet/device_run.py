"""On-device stages without Snakemake or TensorFlow: build, latency, accuracy (monitor and size included).

For a board whose Python and TensorRT come from JetPack (Python 3.8 with TensorRT 8.5 on
JetPack 5.1, Python 3.10 with TensorRT 8.6/10.3 on JetPack 6), where the workflow itself
(Snakemake >= 9, TensorFlow, tf2onnx) cannot be installed. The workstation trains and exports;
copy ``results/data/<dataset>_<size>px/`` and ``results/<workstation>/onnx/...`` to the board, then:

    python -m workflow_scripts.fleet.device_run --configfile config/my-board.yaml \\
        [--backend tensorrt] [--models M ...] [--datasets D ...] [--precisions P ...] \\
        [--stages build latency accuracy] [--onnx-device TAG] [--force] [--dry-run]

Each stage calls the function its rule's shim calls (``engine.build_engine_benchmark``,
``latency.benchmark_latency``, ``evaluate.evaluate``) with the same settings, and writes the
same files into the same ``results/<device>/<backend>/<dataset>_<size>px/<model>/`` layout
(:mod:`workflow_scripts.core.paths`), so copying ``results/<device>/`` back to the workstation lets
its summary merge the board's rows. Resource monitoring (psutil, tegrastats/NVML) runs inside the
build and latency stages; engine size is recorded in the build and latency tables. A stage whose
outputs exist is not run again unless ``--force``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from workflow_scripts.core import paths, registry

REPO = Path(__file__).resolve().parents[2]
STAGES = ("build", "latency", "accuracy")
LOG = logging.getLogger("edgeptq.device_run")


# --- config ------------------------------------------------------------------------------------


def _deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _schema_defaults(schema: Dict[str, Any]) -> Dict[str, Any]:
    """The defaults a JSON schema's object properties name, nested objects included."""
    out: Dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        if prop.get("type") == "object" and "properties" in prop:
            out[key] = _deep_merge(_schema_defaults(prop), prop.get("default") or {})
        elif "default" in prop:
            out[key] = copy.deepcopy(prop["default"])
    return out


def load_config(configfiles: List[Path]) -> Dict[str, Any]:
    """config/schema.yaml's defaults, then config/config.yaml, then each --configfile (as Snakemake merges)."""
    config = _schema_defaults(yaml.safe_load((REPO / "config" / "schema.yaml").read_text()))
    for path in [REPO / "config" / "config.yaml", *configfiles]:
        config = _deep_merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config


# --- paths (all from workflow_scripts.core.paths, as the rules') ----------------------------------


def find_onnx(results: str, device: str, dataset: str, size: int, model: str, onnx_device: Optional[str]) -> Path:
    """The exported model.onnx: under ``onnx_device`` if named, else this device, else the only one found."""
    def export_of(tag: str) -> Path:
        return Path(paths.onnx_file("model.onnx").format(results=results, device=tag, dataset=dataset, size=size,
                                                         model=model))

    rel = export_of("DEVICE").relative_to(Path(results) / "DEVICE")
    for tag in [t for t in (onnx_device, device) if t]:
        if export_of(tag).is_file():
            return export_of(tag)
    if onnx_device:
        raise FileNotFoundError(f"no {rel} under {results}/{onnx_device}/; copy the workstation's export there")
    found = sorted(Path(results).glob(f"*/{rel.as_posix()}"))
    if len(found) != 1:
        raise FileNotFoundError(
            f"{'no' if not found else len(found)} exported {rel} under {results}/*/ "
            f"({[str(f) for f in found]}); copy the workstation's results/<device>/onnx/ folder here, "
            "or name one with --onnx-device"
        )
    return found[0]


def job_paths(results: str, device: str, backend: str, dataset: str, size: int, model: str,
              precision: str) -> Dict[str, Path]:
    """The engine and every per-engine table of one job (and INT8's calibration files), as the rules name them."""
    fields = dict(results=results, device=device, backend=backend, dataset=dataset, size=size, model=model)
    files = {"engine": Path(paths.engine_file(results, device, backend, dataset, size, model, precision))}
    files.update({kind: Path(paths.engine_table(kind, precision).format(**fields)) for kind in paths.ENGINE_TABLES})
    if precision == "int8":
        for name in ("calibration.json", "calibration.cache"):
            files[f"calibration_{name.split('.')[1]}"] = Path(paths.engine_side_file(name, precision).format(**fields))
    return files


STAGE_OUTPUTS = {
    "build": ("engine", "build", "build_resources"),
    "latency": ("latency", "latency_samples", "latency_resources"),
    "accuracy": ("accuracy", "predictions"),
}
STAGE_RULES = {"build": "build_engine", "latency": "benchmark_latency", "accuracy": "evaluate_engine"}


def provenance_for(config: Dict[str, Any], rule: str, device: str, backend: str, wildcards: Dict[str, str],
                   threads: int, **extra: Any) -> Dict[str, Any]:
    """Provenance columns exactly as the rule's shim computes them: the same function
    (``core.provenance.job_provenance``) with the ``settings`` param the rule gets (``config.settings_param``)."""
    from workflow_scripts.core.config import settings_param
    from workflow_scripts.core.provenance import job_provenance

    if rule == "build_engine" and wildcards.get("precision") == "int8":
        rule = "build_int8_engine"
    settings = settings_param(config, rule, precision=wildcards.get("precision"), backend=backend,
                              dataset=wildcards.get("dataset"), model=wildcards.get("model"))
    return job_provenance(config, rule, threads, {"device": device, "backend": backend}, settings, **extra)


# --- stages ------------------------------------------------------------------------------------


def run_job(config: Dict[str, Any], stage: str, backend: str, device: str, dataset: str, model: str,
            precision: str, onnx_path: Path, threads: int) -> None:
    size = int(config["input_size"])
    results = config["results_dir"]
    files = job_paths(results, device, backend, dataset, size, model, precision)
    data_dir = Path(paths.data_dir(results, dataset, size))
    wildcards = {"dataset": dataset, "model": model, "precision": precision, "size": str(size),
                 "device": device, "backend": backend}
    labels = {"dataset": dataset, "model": model, "precision": precision, "input_size": size}
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    if stage == "build":
        from workflow_scripts.stages.engine import build_engine_benchmark

        backend_options: Dict[str, Any] = dict(config.get(backend) or {})
        job_options = registry.backend(backend).hook("job_options")
        if job_options is not None:  # as rules/common.smk's backend_options
            backend_options.update(job_options(results, device, size, config))
        build_engine_benchmark(
            backend=backend, source_path=onnx_path, engine_path=files["engine"], precision=precision,
            data_dir=data_dir, calibration=config["calibration"] if precision == "int8" else {},
            backend_options=backend_options, build_table=files["build"],
            resources_table=files["build_resources"], calibration_json=files.get("calibration_json"),
            calibration_cache=files.get("calibration_cache"), warmup=config["compression"]["warmup"],
            repeats=config["compression"]["repeats"], monitor_interval_s=config["monitor"]["interval_s"],
            seed=config["seed"], threads=threads,
            provenance=provenance_for(config, "build_engine", device, backend, wildcards, threads,
                                      dataset=dataset, model=model),
        )
    elif stage == "latency":
        from workflow_scripts.stages.latency import benchmark_latency

        bench = config["benchmark"]
        benchmark_latency(
            backend=backend, engine_path=files["engine"], data_dir=data_dir, batch_size=bench["batch_size"],
            warmup=bench["warmup"], iterations=bench["iterations"], min_duration_s=bench["min_duration_s"],
            threads=bench["threads"] or threads, monitor_interval_s=config["monitor"]["interval_s"],
            summary_path=files["latency"], samples_path=files["latency_samples"],
            resources_path=files["latency_resources"], labels=labels,
            provenance=provenance_for(config, "benchmark_latency", device, backend, wildcards, threads),
        )
    elif stage == "accuracy":
        from workflow_scripts.backends import get_backend
        from workflow_scripts.stages.evaluate import evaluate

        evaluate(
            get_backend(backend).load_runner(files["engine"], threads), data_dir,
            config["evaluate"]["batch_size"], config["evaluate"]["max_images"], files["accuracy"],
            files["predictions"], labels=labels,
            provenance=provenance_for(config, "evaluate_engine", device, backend, wildcards, threads),
        )
    else:
        raise ValueError(f"unknown stage {stage!r}; use one of {STAGES}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workflow_scripts.fleet.device_run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--configfile", type=Path, action="append", default=[])
    parser.add_argument("--backend", default=registry.GPU_BACKENDS[0])
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--precisions", nargs="+")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--onnx-device", help="device tag whose onnx/ folder holds the export (default: any)")
    parser.add_argument("--threads", type=int, default=0, help="threads for CPU backends (default: all cores)")
    parser.add_argument("--force", action="store_true", help="run stages whose outputs exist")
    parser.add_argument("--dry-run", action="store_true", help="print the jobs and their outputs only")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from workflow_scripts.core.device import detect_device_tag
    from workflow_scripts.core.errors import EdgePTQError

    config = load_config(args.configfile)
    entry = registry.BACKENDS.get(args.backend)
    check = entry.hook("check_config") if entry else None
    if check is not None:
        try:  # before any job: a config the backend cannot build is refused up front, naming the key
            check(config)
        except EdgePTQError as exc:
            LOG.error("%s", exc)
            return 2
    device = detect_device_tag(config.get("device", "auto"))
    threads = args.threads or __import__("os").cpu_count() or 1
    failures = 0
    for dataset in args.datasets or config["datasets"]:
        for model in args.models or config["models"]:
            for precision in args.precisions or config["precisions"]:
                for stage in args.stages:
                    files = job_paths(config["results_dir"], device, args.backend, dataset,
                                      int(config["input_size"]), model, precision)
                    outputs = [files[k] for k in STAGE_OUTPUTS[stage]]
                    name = f"{stage} {args.backend} {dataset} {model} {precision}"
                    if not args.force and all(p.is_file() for p in outputs):
                        print(f"done     {name}")
                        continue
                    print(f"{'would run' if args.dry_run else 'running'}  {name} -> "
                          + ", ".join(str(p) for p in outputs), flush=True)
                    if args.dry_run:
                        continue
                    try:
                        onnx_path = find_onnx(config["results_dir"], device, dataset, int(config["input_size"]),
                                              model, args.onnx_device)
                        run_job(config, stage, args.backend, device, dataset, model, precision, onnx_path, threads)
                    except (EdgePTQError, FileNotFoundError) as exc:
                        LOG.error("%s failed: %s", name, exc)
                        failures += 1
                        break  # the later stages of this engine need this one
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
