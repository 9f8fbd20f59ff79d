rule prepare_dataset:
    output:
        images=expand("{{results}}/data/{{dataset}}_{{size}}px/{split}_images.npy", split=paths.SPLITS),
        labels=expand("{{results}}/data/{{dataset}}_{{size}}px/{split}_labels.npy", split=paths.SPLITS),
        meta="{results}/data/{dataset}_{size}px/meta.json",
    params:
        resources_dir=config["resources_dir"],
        verify_checksums=config["verify_checksums"],
        split=config["split"],
        seed=config["seed"],
    log:
        "{results}/logs/prepare_dataset/{dataset}_{size}px.log",
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/shims/prepare_dataset.py"
