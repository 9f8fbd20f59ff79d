from workflow_scripts.backends import get_backend
from workflow_scripts.evaluate import evaluate
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: evaluate(
    get_backend(sm.wildcards.backend).load_runner(sm.input.engine, sm.threads),
    sm.params.data_dir, sm.params.evaluate["batch_size"], sm.params.evaluate["max_images"],
    sm.output.accuracy, sm.output.predictions, labels=sm.params.labels,
    provenance=provenance_of(sm),
))
