from workflow_scripts.figures.plots import make_figures
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: make_figures(sm.params.summary_dir, list(sm.output.figures)))
