from workflow_scripts.calibration_study.int8_auto import run_int8_auto
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
auto = sm.params.auto
run(sm, lambda: run_int8_auto(
    onnx_path=sm.input.onnx,
    fp32_engine=sm.input.fp32,
    start_variant=sm.params.start,
    sensitivity_table=sm.input.sensitivity,
    data_dir=sm.params.data_dir,
    calibration_batch_size=sm.params.batch_size,
    eval_batch_size=sm.params.eval_batch_size,
    target_points=auto.get("target_drop_points", 1.0),
    budget=auto.get("node_budget"),
    criterion=auto.get("criterion", "upper_bound"),
    val_images=auto.get("val_images", 0),
    prune=auto.get("prune", True),
    seed=sm.params.seed,
    int8_options=sm.params.int8_options,
    engine_path=sm.output.engine,
    record_json=sm.output.record,
    steps_table=sm.output.steps,
    labels=sm.params.labels,
    provenance=provenance_of(sm),
    prepared=sm.input.prepared,
    statistics=sm.input.statistics,
))
