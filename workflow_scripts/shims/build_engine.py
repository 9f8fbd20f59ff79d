from workflow_scripts.stages.engine import build_engine_benchmark
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = sm.params.settings
precision = sm.wildcards.get("precision", "int8")
run(sm, lambda: build_engine_benchmark(
    backend=sm.wildcards.backend,
    source_path=sm.input.source,
    engine_path=sm.output.engine,
    precision=precision,
    data_dir=sm.params.data_dir,
    calibration=settings.get("calibration", {}),
    backend_options={**settings.get(sm.wildcards.backend, {}), **sm.params.backend_options},
    build_table=sm.output.build,
    resources_table=sm.output.resources,
    calibration_json=sm.output.get("calibration_json"),
    calibration_cache=sm.output.get("calibration_cache"),
    warmup=settings["compression"]["warmup"],
    repeats=settings["compression"]["repeats"],
    monitor_interval_s=settings["monitor"]["interval_s"],
    seed=settings["seed"],
    threads=sm.threads,
    provenance=provenance_of(sm, dataset=sm.wildcards.dataset, model=sm.wildcards.model),
))
