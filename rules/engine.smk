rule build_engine:
    input:
        data_files,
        onnx="{results}/{device}/onnx/{dataset}_{size}px/{model}/model.onnx",
    output:
        engine=f"{{results}}/{{device}}/{{backend}}/{{dataset}}_{{size}}px/{{model}}/{{precision,fp32|fp16}}.{ENGINE_EXT}",
        build="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision,fp32|fp16}_build.parquet",
        resources="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision,fp32|fp16}_build_resources.parquet",
    params:
        data_dir=data_dir,
        calibration={},
        backend_options=backend_options,
        compression=config["compression"],
        interval_s=config["monitor"]["interval_s"],
        seed=config["seed"],
        provenance=provenance_params,
    # Timed stage: it takes every core so no other job disturbs the measurement.
    threads: workflow.cores
    log:
        "{results}/logs/build_engine/{device}/{backend}/{dataset}_{size}px/{model}/{precision}.log",
    conda:
        BACKEND_ENV
    script:
        "../workflow_scripts/shims/build_engine.py"


# INT8 has its own rule: it also writes the calibration table, and only it sees the
# calibration settings, so changing them reruns the INT8 builds and nothing else.
use rule build_engine as build_int8_engine with:
    output:
        engine=f"{{results}}/{{device}}/{{backend}}/{{dataset}}_{{size}}px/{{model}}/int8.{ENGINE_EXT}",
        build="{results}/{device}/{backend}/{dataset}_{size}px/{model}/int8_build.parquet",
        resources="{results}/{device}/{backend}/{dataset}_{size}px/{model}/int8_build_resources.parquet",
        calibration_json="{results}/{device}/{backend}/{dataset}_{size}px/{model}/int8_calibration.json",
        calibration_cache="{results}/{device}/{backend}/{dataset}_{size}px/{model}/int8_calibration.cache",
    params:
        data_dir=data_dir,
        calibration=config["calibration"],
        backend_options=backend_options,
        compression=config["compression"],
        interval_s=config["monitor"]["interval_s"],
        seed=config["seed"],
        provenance=provenance_params,
    log:
        "{results}/logs/build_engine/{device}/{backend}/{dataset}_{size}px/{model}/int8.log",
