from workflow_scripts.decision.budgets import Budgets
from workflow_scripts.decision.decide import write_decision
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: write_decision(sm.params.summary_dir, Budgets.from_config(dict(sm.params.budgets)),
                               sm.output.markdown, sm.output.table))
