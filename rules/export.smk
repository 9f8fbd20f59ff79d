rule export_onnx:
    input:
        data_files,
        model="{results}/models/{dataset}_{size}px/{model}/model.keras",
    output:
        onnx="{results}/{device}/onnx/{dataset}_{size}px/{model}/model.onnx",
        timings="{results}/{device}/onnx/{dataset}_{size}px/{model}/export.parquet",
        resources="{results}/{device}/onnx/{dataset}_{size}px/{model}/export_resources.parquet",
    params:
        data_dir=data_dir,
        export=config["export"],
        compression=config["compression"],
        interval_s=config["monitor"]["interval_s"],
        provenance=export_provenance,
    # Timed stage: it takes every core so no other job disturbs the measurement.
    threads: workflow.cores
    log:
        "{results}/logs/export_onnx/{device}/{dataset}_{size}px/{model}.log",
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/export_onnx.py"
