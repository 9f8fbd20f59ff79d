from workflow_scripts.stages.evaluate import KerasRunner, evaluate
from workflow_scripts.shims import provenance_of, run

sm = snakemake  # noqa: F821 (injected by Snakemake)
evaluate_settings = sm.params.settings["evaluate"]


def job():
    evaluate(
        KerasRunner(sm.input.model), sm.params.data_dir, evaluate_settings["batch_size"],
        evaluate_settings["max_images"], sm.output.accuracy, sm.output.predictions,
        labels={"dataset": sm.wildcards.dataset, "model": sm.wildcards.model, "precision": "keras",
                "input_size": int(sm.wildcards.size)},
        provenance=provenance_of(sm),
    )


run(sm, job)
