def user_dataset_source(w):
    """A user dataset's folder or .npz and a fingerprint of its files (a change reruns the preparation);
    empty for a built-in dataset."""
    from workflow_scripts.user_inputs import fingerprint, user_dataset_path

    entry = config["user_datasets"].get(w.dataset)
    if entry is None:
        return {}
    path = user_dataset_path(w.dataset, entry)
    return {"path": str(path), "fingerprint": fingerprint(path)}


rule prepare_dataset:
    output:
        images=expand(paths.data_file("{split}_images.npy"), split=paths.SPLITS, allow_missing=True),
        labels=expand(paths.data_file("{split}_labels.npy"), split=paths.SPLITS, allow_missing=True),
        meta=paths.data_file("meta.json"),
    params:
        settings=settings_param("prepare_dataset"),
        resources_dir=config["resources_dir"],
        verify_checksums=config["verify_checksums"],
        user_source=user_dataset_source,
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
