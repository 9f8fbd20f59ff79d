from workflow_scripts.backends import get_backend
from workflow_scripts.stages.evaluate import evaluate
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
evaluate_settings = sm.params.settings["evaluate"]
run(sm, lambda: evaluate(
    get_backend(sm.wildcards.backend).load_runner(sm.input.engine, sm.threads),
    sm.params.data_dir, evaluate_settings["batch_size"], evaluate_settings["max_images"],
    sm.output.accuracy, sm.output.predictions, labels=sm.params.labels,
    provenance=provenance_of(sm),
))
