from workflow_scripts.calibration_study.sensitivity import run_sensitivity
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: run_sensitivity(
    onnx_path=sm.input.onnx,
    qdq_engine=sm.input.engine,
    data_dir=sm.params.data_dir,
    num_images=sm.params.sensitivity["num_images"],
    batch_size=sm.params.batch_size,
    seed=sm.params.seed,
    out_table=sm.output.table,
    labels=sm.params.labels,
    provenance=provenance_of(sm),
    prepared=sm.input.prepared,
    rank_by=sm.params.sensitivity.get("rank_by", "degradation_db"),
))
