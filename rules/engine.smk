# One build rule per backend and precision kind (build_engine_<backend>, build_int8_engine_<backend>):
# an engine file carries its backend's suffix (registry), and Snakemake needs every output of a
# rule to share its wildcards, so the suffix cannot be a wildcard of its own.
for _name, _entry in registry.BACKENDS.items():
    _engine = paths.ENGINE.replace("{ext}", _entry.suffix)
    _int8 = _engine.replace("{precision}", "int8")
    # Files that belong to the engine (OpenVINO's .bin weights) are outputs too.
    _beside = {f"engine_{ext}": _engine.replace(f".{_entry.suffix}", f".{ext}") for ext in _entry.companions}
    _beside_int8 = {f"engine_{ext}": _int8.replace(f".{_entry.suffix}", f".{ext}") for ext in _entry.companions}

    rule:
        name:
            f"build_engine_{_name}"
        input:
            data_files,
            source=engine_source,
        output:
            engine=_engine,
            build=paths.engine_table("build"),
            resources=paths.engine_table("build_resources"),
            **_beside,
        wildcard_constraints:
            backend=_name,
            precision="|".join(p for p in registry.PRECISIONS if p != "int8"),
        params:
            data_dir=data_dir,
            settings=settings_param("build_engine"),
            backend_options=backend_options,
            provenance=provenance_params,
        # Timed stage: it takes every core so no other job disturbs the measurement.
        threads: job_cores
        resources:
            mem_mb=config["resources"]["build_engine"]["mem_mb"],
            runtime=config["resources"]["build_engine"]["runtime"],
            **placement(f"build_engine_{_name}"),
        log:
            paths.log_file("build_engine", "engine"),
        conda:
            f"../{_entry.env}"
        script:
            "../workflow_scripts/shims/build_engine.py"

    # INT8 has its own rule: it also writes the calibration table, and only it sees the
    # calibration settings, so changing them reruns the INT8 builds and nothing else.
    rule:
        name:
            f"build_int8_engine_{_name}"
        input:
            data_files,
            source=engine_source,
        output:
            engine=_int8,
            build=paths.engine_table("build", precision="int8"),
            resources=paths.engine_table("build_resources", precision="int8"),
            calibration_json=paths.engine_side_file("calibration.json", precision="int8"),
            calibration_cache=paths.engine_side_file("calibration.cache", precision="int8"),
            **_beside_int8,
        wildcard_constraints:
            backend=_name,
        params:
            data_dir=data_dir,
            settings=settings_param("build_int8_engine"),
            backend_options=backend_options,
            provenance=provenance_params,
        threads: job_cores
        resources:
            mem_mb=config["resources"]["build_engine"]["mem_mb"],
            runtime=config["resources"]["build_engine"]["runtime"],
            **placement(f"build_int8_engine_{_name}"),
        log:
            paths.log_file("build_engine", "engine", precision="int8"),
        conda:
            f"../{_entry.env}"
        script:
            "../workflow_scripts/shims/build_engine.py"
