from workflow_scripts.core.user_inputs import user_model_param


rule export_onnx:
    input:
        data_files,
        model=paths.model_file("model.keras"),
    output:
        onnx=paths.onnx_file("model.onnx"),
        timings=paths.onnx_file("export.parquet"),
        resources=paths.onnx_file("export_resources.parquet"),
    params:
        data_dir=data_dir,
        settings=settings_param("export_onnx"),
        provenance=export_provenance,
    wildcard_constraints:
        model="|".join(m for m in list(registry.MODELS) + list(config["user_models"])
                       if m not in user_models_of(config, "onnx")),
    # Timed stage: it takes every core so no other job disturbs the measurement.
    threads: job_cores
    resources:
        mem_mb=config["resources"]["export_onnx"]["mem_mb"],
        runtime=config["resources"]["export_onnx"]["runtime"],
        **placement("export_onnx"),
    log:
        paths.log_file("export_onnx", "onnx"),
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/export_onnx.py"


# Your own ONNX file (config key user_models) enters after the export: copied, or with its
# preprocessing and layout transpose in front, and checked against the original.
rule import_user_onnx:
    input:
        data_files,
    output:
        onnx=paths.onnx_file("model.onnx"),
        timings=paths.onnx_file("export.parquet"),
        resources=paths.onnx_file("export_resources.parquet"),
        record=paths.onnx_file("source.json"),
    params:
        data_dir=data_dir,
        entry=lambda w: user_model_param(config, w.model),
        settings=settings_param("export_onnx"),
        provenance=lambda w: {"device": w.device, "backend": "onnx-import"},
    wildcard_constraints:
        model="|".join(user_models_of(config, "onnx")) or "^$",
    # As the export it stands for: its rows record runtime.export_onnx.threads, which the summary compares.
    threads: job_cores
    resources:
        mem_mb=config["resources"]["export_onnx"]["mem_mb"],
        runtime=config["resources"]["export_onnx"]["runtime"],
        **placement("export_onnx"),
    log:
        paths.log_file("import_user_onnx", "onnx"),
    # TensorFlow's env: a SavedModel folder is converted by tf2onnx in this job (user_models.savedmodel_to_onnx).
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/import_user_onnx.py"
