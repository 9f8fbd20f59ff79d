from workflow_scripts.calibration_study.study import build_variant
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: build_variant(
    onnx_path=sm.input.onnx,
    engine_path=sm.output.engine,
    variant_id=sm.wildcards.variant,
    data_dir=sm.params.data_dir,
    batch_size=sm.params.batch_size,
    build_table=sm.output.build,
    resources_table=sm.output.resources,
    calibration_json=sm.output.calibration_json,
    calibration_cache=sm.output.calibration_cache,
    float_nodes_json=sm.output.float_nodes,
    monitor_interval_s=sm.params.interval_s,
    seed=sm.params.seed,
    int8_options=sm.params.int8_options,
    labels=sm.params.labels,
    provenance=provenance_of(sm, dataset=sm.wildcards.dataset, model=sm.wildcards.model),
    prepared=sm.input.prepared,
    statistics=sm.input.statistics,
))
