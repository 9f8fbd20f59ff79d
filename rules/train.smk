from workflow_scripts.core.user_inputs import user_model_param


# Your own Keras checkpoint (config key user_models) enters where a trained model would: no training.
rule import_user_model:
    input:
        data_files,
    output:
        model=paths.model_file("model.keras"),
        record=paths.model_file("source.json"),
    params:
        data_dir=data_dir,
        # Its checked path, preprocessing and a fingerprint of its files: a change reruns the import.
        entry=lambda w: user_model_param(config, w.model),
    wildcard_constraints:
        model="|".join(user_models_of(config, "keras")) or "^$",
    resources:
        mem_mb=config["resources"]["train_model"]["mem_mb"],
        runtime=config["resources"]["train_model"]["runtime"],
        **placement("train_model"),
    log:
        paths.log_file("import_user_model", "model"),
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/import_user_model.py"


rule train_model:
    input:
        data_files,
    output:
        model=paths.model_file("model.keras"),
        history=paths.model_file("history.parquet"),
    params:
        data_dir=data_dir,
        settings=settings_param("train_model"),
    wildcard_constraints:
        model="|".join(registry.MODELS),
    # Untimed: it claims one core, so jobs that measure nothing (the other model's training, Keras and
    # engine evaluations, the summary) run beside it, while a timed job (threads: job_cores, all of
    # them) still waits until it ends. TensorFlow still runs train.threads intra-op threads (the
    # shim passes that, not the claim): the weights depend on the thread count, not on the claim.
    threads: 1
    resources:
        mem_mb=config["resources"]["train_model"]["mem_mb"],
        runtime=config["resources"]["train_model"]["runtime"],
        **placement("train_model"),
    log:
        paths.log_file("train_model", "model"),
    benchmark:
        "{results}/benchmarks/train_model/{dataset}_{size}px/{model}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/train_model.py"


rule evaluate_keras:
    input:
        data_files,
        model=paths.model_file("model.keras"),
    output:
        accuracy=paths.model_file("accuracy.parquet"),
        predictions=paths.model_file("predictions.parquet"),
    params:
        data_dir=data_dir,
        settings=settings_param("evaluate_keras"),
    resources:
        mem_mb=config["resources"]["evaluate_keras"]["mem_mb"],
        runtime=config["resources"]["evaluate_keras"]["runtime"],
        **placement("evaluate_keras"),
    log:
        paths.log_file("evaluate_keras", "model"),
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/evaluate_keras.py"
