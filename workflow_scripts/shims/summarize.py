from workflow_scripts.shims import run
from workflow_scripts.summary.summarize import summarize

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: summarize(sm.params.inputs, sm.params.out_dir, allow_mixed=sm.params.allow_mixed_configs,
                          config=sm.config))
