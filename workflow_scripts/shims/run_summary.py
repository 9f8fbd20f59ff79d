from workflow_scripts.figures.run_summary import write_run_summary
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: write_run_summary(sm.params.summary_dir, sm.output.summary, sm.input.decision))
