from workflow_scripts.calibration_study.study import prepare_study_model
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: prepare_study_model(sm.input.onnx, sm.output.prepared))
