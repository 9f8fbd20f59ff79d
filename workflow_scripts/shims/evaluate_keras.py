from workflow_scripts.evaluate import KerasRunner, evaluate
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)


def job():
    from workflow_scripts.config import settings_hash
    from workflow_scripts.provenance import package_version

    evaluate(
        KerasRunner(sm.input.model), sm.params.data_dir, sm.params.evaluate["batch_size"],
        sm.params.evaluate["max_images"], sm.output.accuracy, sm.output.predictions,
        labels={"dataset": sm.wildcards.dataset, "model": sm.wildcards.model, "precision": "keras",
                "input_size": int(sm.wildcards.size)},
        provenance={"config_hash": settings_hash(sm.config), "backend": "keras",
                    "backend_version": package_version("keras")},
    )


run(sm, job)
