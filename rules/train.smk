rule train_model:
    input:
        data_files,
    output:
        model="{results}/models/{dataset}_{size}px/{model}/model.keras",
        history="{results}/models/{dataset}_{size}px/{model}/history.parquet",
    params:
        data_dir=data_dir,
        train=config["train"],
        weights=config["weights"],
        seed=config["seed"],
    threads: config["train"]["threads"]
    log:
        "{results}/logs/train_model/{dataset}_{size}px/{model}.log",
    benchmark:
        "{results}/benchmarks/train_model/{dataset}_{size}px/{model}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/train_model.py"


rule evaluate_keras:
    input:
        data_files,
        model="{results}/models/{dataset}_{size}px/{model}/model.keras",
    output:
        accuracy="{results}/models/{dataset}_{size}px/{model}/accuracy.parquet",
        predictions="{results}/models/{dataset}_{size}px/{model}/predictions.parquet",
    params:
        data_dir=data_dir,
        evaluate=config["evaluate"],
    log:
        "{results}/logs/evaluate_keras/{dataset}_{size}px/{model}.log",
    conda:
        "../envs/tensorflow.yaml"
    script:
        "../workflow_scripts/shims/evaluate_keras.py"
