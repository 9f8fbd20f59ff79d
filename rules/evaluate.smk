rule evaluate_engine:
    input:
        data_files,
        engine=f"{{results}}/{{device}}/{{backend}}/{{dataset}}_{{size}}px/{{model}}/{{precision}}.{ENGINE_EXT}",
    output:
        accuracy="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision}_accuracy.parquet",
        predictions="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision}_predictions.parquet",
    params:
        data_dir=data_dir,
        evaluate=config["evaluate"],
        labels=engine_labels,
        provenance=provenance_params,
    log:
        "{results}/logs/evaluate_engine/{device}/{backend}/{dataset}_{size}px/{model}/{precision}.log",
    conda:
        BACKEND_ENV
    script:
        "../workflow_scripts/shims/evaluate_engine.py"
