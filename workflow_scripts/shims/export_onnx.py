from workflow_scripts.stages.export import export_onnx
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = sm.params.settings
export, compression = settings["export"], settings["compression"]
run(sm, lambda: export_onnx(
    keras_path=sm.input.model,
    onnx_path=sm.output.onnx,
    timings_path=sm.output.timings,
    resources_path=sm.output.resources,
    data_dir=sm.params.data_dir,
    opset=export["opset"],
    # The parity gate is not a measured setting (config.NOT_MEASURED): read from the config.
    tolerance=sm.config["export"]["parity_tolerance"],
    parity_images=sm.config["export"]["parity_images"],
    warmup=compression["warmup"],
    repeats=compression["repeats"],
    monitor_interval_s=settings["monitor"]["interval_s"],
    provenance=provenance_of(sm, dataset=sm.wildcards.dataset, model=sm.wildcards.model),
))
