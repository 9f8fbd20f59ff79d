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
