from workflow_scripts.shims import run
from workflow_scripts.models.user_models import import_keras_model

sm = snakemake  # noqa: F821 (injected by Snakemake)
entry = dict(sm.params.entry)
run(sm, lambda: import_keras_model(
    name=sm.wildcards.model,
    source=entry["path"],
    model_path=sm.output.model,
    record_path=sm.output.record,
    preprocess=dict(entry["preprocess"]),
    data_dir=sm.params.data_dir,
))
