rule benchmark_latency:
    input:
        data_files,
        engine=engine_of,
        beside=engine_companions,
    output:
        summary=paths.engine_table("latency"),
        samples=paths.engine_table("latency_samples"),
        resources=paths.engine_table("latency_resources"),
    params:
        data_dir=data_dir,
        settings=settings_param("benchmark_latency"),
        labels=engine_labels,
        provenance=provenance_params,
    # A measuring job never runs beside another job.
    threads: job_cores
    resources:
        mem_mb=config["resources"]["benchmark_latency"]["mem_mb"],
        runtime=config["resources"]["benchmark_latency"]["runtime"],
        **placement("benchmark_latency"),
    log:
        paths.log_file("benchmark_latency", "engine"),
    conda:
        backend_env
    script:
        "../workflow_scripts/shims/benchmark_latency.py"
