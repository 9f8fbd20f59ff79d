rule benchmark_latency:
    input:
        data_files,
        engine=f"{{results}}/{{device}}/{{backend}}/{{dataset}}_{{size}}px/{{model}}/{{precision}}.{ENGINE_EXT}",
    output:
        summary="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision}_latency.parquet",
        samples="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision}_latency_samples.parquet",
        resources="{results}/{device}/{backend}/{dataset}_{size}px/{model}/{precision}_latency_resources.parquet",
    params:
        data_dir=data_dir,
        benchmark=config["benchmark"],
        interval_s=config["monitor"]["interval_s"],
        labels=engine_labels,
        provenance=provenance_params,
    # A measuring job never runs beside another job.
    threads: workflow.cores
    log:
        "{results}/logs/benchmark_latency/{device}/{backend}/{dataset}_{size}px/{model}/{precision}.log",
    conda:
        BACKEND_ENV
    script:
        "../workflow_scripts/shims/benchmark_latency.py"
