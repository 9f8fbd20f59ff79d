rule evaluate_engine:
    input:
        data_files,
        engine=engine_of,
        beside=engine_companions,
    output:
        accuracy=paths.engine_table("accuracy"),
        predictions=paths.engine_table("predictions"),
    params:
        data_dir=data_dir,
        settings=settings_param("evaluate_engine"),
        labels=engine_labels,
        provenance=provenance_params,
    resources:
        mem_mb=config["resources"]["evaluate_engine"]["mem_mb"],
        runtime=config["resources"]["evaluate_engine"]["runtime"],
        **placement("evaluate_engine"),
    log:
        paths.log_file("evaluate_engine", "engine"),
    conda:
        backend_env
    script:
        "../workflow_scripts/shims/evaluate_engine.py"
