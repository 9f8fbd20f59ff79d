from workflow_scripts.shims import provenance_of, run
from workflow_scripts.stages.train import train_model

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = sm.params.settings
train = settings["train"]
run(sm, lambda: train_model(
    data_dir=sm.params.data_dir,
    model_name=sm.wildcards.model,
    model_path=sm.output.model,
    history_path=sm.output.history,
    epochs=train["epochs"],
    batch_size=train["batch_size"][sm.wildcards.dataset],
    learning_rate=train["learning_rate"],
    batchnorm_momentum=train["batchnorm_momentum"],
    weights=settings["weights"],
    max_images=train["max_images"],
    freeze_backbone=train["freeze_backbone"],
    # TensorFlow's intra-op threads come from train.threads, not from the job's core claim (one core,
    # rules/train.smk): the weights depend on that count, so they stay the same whatever --cores is.
    threads=train["threads"],
    seed=settings["seed"],
    provenance=provenance_of(sm),
))
