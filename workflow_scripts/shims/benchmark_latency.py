from workflow_scripts.stages.latency import benchmark_latency
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = sm.params.settings
bench = settings["benchmark"]
run(sm, lambda: benchmark_latency(
    backend=sm.wildcards.backend,
    engine_path=sm.input.engine,
    data_dir=sm.params.data_dir,
    batch_size=bench["batch_size"],
    warmup=bench["warmup"],
    iterations=bench["iterations"],
    min_duration_s=bench["min_duration_s"],
    max_duration_s=bench["max_duration_s"],
    threads=bench["threads"] or sm.threads,
    monitor_interval_s=settings["monitor"]["interval_s"],
    summary_path=sm.output.summary,
    samples_path=sm.output.samples,
    resources_path=sm.output.resources,
    labels=sm.params.labels,
    provenance=provenance_of(sm),
))
