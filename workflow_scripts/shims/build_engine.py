from workflow_scripts.engine import build_engine_benchmark
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
precision = sm.wildcards.get("precision", "int8")
run(sm, lambda: build_engine_benchmark(
    backend=sm.wildcards.backend,
    onnx_path=sm.input.onnx,
    engine_path=sm.output.engine,
    precision=precision,
    data_dir=sm.params.data_dir,
    calibration=sm.params.calibration,
    backend_options=sm.params.backend_options,
    build_table=sm.output.build,
    resources_table=sm.output.resources,
    calibration_json=sm.output.get("calibration_json"),
    calibration_cache=sm.output.get("calibration_cache"),
    warmup=sm.params.compression["warmup"],
    repeats=sm.params.compression["repeats"],
    monitor_interval_s=sm.params.interval_s,
    seed=sm.params.seed,
    provenance=provenance_of(sm, dataset=sm.wildcards.dataset, model=sm.wildcards.model),
))
