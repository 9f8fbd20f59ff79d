from workflow_scripts.stages.runoff import run_runoff
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
bench, runoff = sm.params.benchmark, sm.params.runoff
run(sm, lambda: run_runoff(
    engines=list(sm.params.engines),
    data_dir=sm.params.data_dir,
    batch_size=bench["batch_size"],
    threads=bench["threads"] or sm.threads,
    rounds=runoff["rounds"],
    warmup=runoff["warmup"],
    min_duration_s=runoff["min_duration_s"],
    max_duration_s=bench["max_duration_s"],
    out_path=sm.output.runoff,
    labels={"device": sm.wildcards.device, **sm.params.labels},
    provenance=provenance_of(sm),
    max_rounds=runoff["max_rounds"],
    final_duration_s=runoff["final_duration_s"],
    final_budget_s=runoff["final_budget_s"],
    slice_s=runoff["slice_s"],
    final_max_s=runoff["final_max_s"],
    extra_rounds=runoff["extra_rounds"],
    objective=sm.params.decision["objective"],
    tie_margin=sm.params.decision["tie_margin"],
))
