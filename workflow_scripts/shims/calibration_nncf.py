from workflow_scripts.calibration_study.nncf_rescue import run_nncf_rescue
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
nncf = sm.params.nncf
run(sm, lambda: run_nncf_rescue(
    onnx_path=sm.input.onnx,
    data_dir=sm.params.data_dir,
    start_variant=sm.params.start,
    calibration_batch_size=sm.params.batch_size,
    max_drop_points=nncf.get("max_drop_points", 1.0),
    preset=nncf.get("preset", "mixed"),
    ranking_subset_size=nncf.get("ranking_subset_size", 300),
    val_images=sm.params.val_images,
    seed=sm.params.seed,
    engine_path=sm.output.engine,
    record_json=sm.output.record,
    bias_correction=nncf.get("bias_correction", True),
))
