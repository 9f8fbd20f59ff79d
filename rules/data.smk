from workflow_scripts.core.user_inputs import user_dataset_param


rule prepare_dataset:
    output:
        images=expand(paths.data_file("{split}_images.npy"), split=paths.SPLITS, allow_missing=True),
        labels=expand(paths.data_file("{split}_labels.npy"), split=paths.SPLITS, allow_missing=True),
        meta=paths.data_file("meta.json"),
    params:
        settings=settings_param("prepare_dataset"),
        resources_dir=config["resources_dir"],
        verify_checksums=config["verify_checksums"],
        # A user dataset's folder or .npz and a fingerprint of its files (a change reruns this job).
        user_source=lambda w: user_dataset_param(config, w.dataset),
    resources:
        mem_mb=config["resources"]["prepare_dataset"]["mem_mb"],
        runtime=config["resources"]["prepare_dataset"]["runtime"],
        **placement("prepare_dataset"),
    log:
        paths.log_file("prepare_dataset", "data"),
    conda:
        "../envs/data.yaml"
    script:
        "../workflow_scripts/shims/prepare_dataset.py"
