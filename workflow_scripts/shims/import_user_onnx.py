from workflow_scripts.shims import provenance_of, run
from workflow_scripts.models.user_models import import_onnx_model

sm = snakemake  # noqa: F821 (injected by Snakemake)
entry = dict(sm.params.entry)
run(sm, lambda: import_onnx_model(
    name=sm.wildcards.model,
    source=entry["path"],
    onnx_path=sm.output.onnx,
    record_path=sm.output.record,
    timings_path=sm.output.timings,
    resources_path=sm.output.resources,
    preprocess=dict(entry["preprocess"]),
    data_dir=sm.params.data_dir,
    # The parity gate is not a measured setting (config.NOT_MEASURED): read from the config.
    parity_images=sm.config["export"]["parity_images"],
    tolerance=sm.config["export"]["parity_tolerance"],
    monitor_interval_s=sm.params.settings["monitor"]["interval_s"],
    opset=sm.params.settings["export"]["opset"],
    provenance=provenance_of(sm, dataset=sm.wildcards.dataset, model=sm.wildcards.model),
))
