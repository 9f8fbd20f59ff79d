# The INT8 calibration study (config key calibration_study; docs/calibration.md): one INT8 engine
# per variant of the calibration axes, each evaluated and benchmarked with the workflow's own
# rules, per-layer sensitivity, the int8-auto mixed-precision fallback, and a summary.
# Calibrate once, reuse: per model one pre-processed graph (prepared.onnx) and per model x calibration
# image set one statistics artifact (ranges + histograms), which every variant of that set reads.
from workflow_scripts.calibration_study.variants import AUTO_VARIANT, NNCF_VARIANT, VARIANT_REGEX, expand_variants, parse_variant, study_cells, variant_labels

STUDY = config.get("calibration_study", {})
STUDY_DIR = f"{RESULTS}/{DEVICE}/{BACKEND}/calibration_study"
# One model's study folder (paths.CALIBRATION_DIR), under the study's backend and, for the NNCF rescue,
# under registry.RESCUE_BACKEND's; and its export. Each step's log: study_log (common.smk).
CAL_DIR = paths.CALIBRATION_DIR
ONNX_MODEL = paths.onnx_file("model.onnx")
# The environments of the study's backend and of the rescue's (registry entries' env).
STUDY_ENV = f"../{registry.backend(registry.STUDY_BACKEND).env}"
RESCUE_ENV = f"../{registry.backend(registry.RESCUE_BACKEND).env}"

# A built variant (never int8-auto), and any engine of the study (variants and int8-auto).
BUILT = f"{{variant,{VARIANT_REGEX}}}"
ANY = f"{{variant,{AUTO_VARIANT}|{VARIANT_REGEX}}}"

if calibration_study_enabled() and BACKEND != registry.STUDY_BACKEND:
    raise ConfigError(
        f"config key 'calibration_study.enabled' is true, but the study builds ONNX Runtime INT8 models and the "
        f"backend is {BACKEND!r}; run it with --config backend={registry.STUDY_BACKEND}"
    )


STUDY_BASELINE = parse_variant(STUDY.get("baseline", "entropy-n256-pc-asym-none")).id
STUDY_AUTO_CONFIG = STUDY.get("auto", {})
STUDY_AUTO = bool(STUDY_AUTO_CONFIG.get("enabled", True))
# The variant int8-auto rescues and sensitivity ranks (default: the baseline); always built.
STUDY_START = parse_variant(STUDY_AUTO_CONFIG.get("start") or STUDY_BASELINE).id
STUDY_VARIANTS = list(dict.fromkeys(expand_variants(STUDY) + [STUDY_START]))
# The same rescue through NNCF's quantize_with_accuracy_control on OpenVINO, for comparison.
STUDY_NNCF = bool(STUDY.get("nncf_rescue", {}).get("enabled", False))
STUDY_FP16 = "fp16" in config["precisions"]
# The ONNX Runtime INT8 type settings (CPU policy, reduce_range resolved at planning) of every study build.
STUDY_INT8_OPTIONS = {k: config.get(registry.backend(registry.STUDY_BACKEND).options_key, {}).get(k)
                      for k in ("int8_cpu_policy", "reduce_range")}
NNCF_TABLES = [
    path
    for name in ("predictions.parquet", "latency.parquet", "json")
    for path in matrix(f"{CAL_DIR}/{NNCF_VARIANT}{'.' if name == 'json' else '_'}{name}", backend=registry.RESCUE_BACKEND)
] if STUDY_NNCF else []
# Every table the study summary reads, for the current matrix and variant list.
STUDY_INPUTS = {
    "fp32": matrix(f"{ENGINE_DIR}/fp32_predictions.parquet", backend=BACKEND) + matrix(f"{ENGINE_DIR}/fp32_latency.parquet", backend=BACKEND),
    "variants": [
        path
        for variant in STUDY_VARIANTS + ([AUTO_VARIANT] if STUDY_AUTO else [])
        for kind in ("predictions", "latency")
        for path in matrix(f"{CAL_DIR}/{{variant}}_{kind}.parquet", variant=variant, backend=BACKEND)
    ],
    "builds": [p for v in STUDY_VARIANTS for p in matrix(f"{CAL_DIR}/{{variant}}_build.parquet", variant=v, backend=BACKEND)],
    "sensitivity": matrix(f"{CAL_DIR}/sensitivity.parquet", backend=BACKEND),
    "fp16": matrix(f"{ENGINE_DIR}/fp16_predictions.parquet", backend=BACKEND) if STUDY_FP16 else [],
    "auto": matrix(f"{CAL_DIR}/{AUTO_VARIANT}.json", backend=BACKEND) if STUDY_AUTO else [],
    "nncf": NNCF_TABLES,
}
STUDY_OUTPUTS = {
    "study": f"{STUDY_DIR}/calibration_study.parquet",
    "best": f"{STUDY_DIR}/calibration_best.md",
    "sensitivity": f"{STUDY_DIR}/calibration_sensitivity_worst.parquet",
    "sensitivity_md": f"{STUDY_DIR}/calibration_sensitivity_worst.md",
    "drop_figure": f"{STUDY_DIR}/calibration_drop.png",
    "fallback_figure": f"{STUDY_DIR}/calibration_fallback_latency.png",
    "rescue": f"{STUDY_DIR}/calibration_rescue.md",
    "rescue_table": f"{STUDY_DIR}/calibration_rescue.parquet",
    "sensitivity_figure": f"{STUDY_DIR}/calibration_sensitivity.png",
}
# What the default target adds when calibration_study.enabled is true (see all_targets in common.smk).
CALIBRATION_STUDY_TARGETS = list(STUDY_OUTPUTS.values())


rule calibration_prepare:
    input:
        onnx=ONNX_MODEL,
    output:
        prepared=paths.calibration_file("prepared.onnx"),
    log:
        study_log("prepare.log"),
    conda:
        STUDY_ENV
    script:
        "../workflow_scripts/shims/calibration_prepare.py"


rule calibration_statistics:
    input:
        data_files,
        prepared=paths.calibration_file("prepared.onnx"),
    output:
        statistics=f"{CAL_DIR}/statistics-n{{num_images,[0-9]+}}.npz",
    params:
        data_dir=data_dir,
        batch_size=config["calibration"]["batch_size"],
        seed=config["seed"],
    threads: job_cores
    log:
        study_log("statistics-n{num_images}.log"),
    conda:
        STUDY_ENV
    script:
        "../workflow_scripts/shims/calibration_statistics.py"


rule build_calibration_variant:
    input:
        data_files,
        onnx=ONNX_MODEL,
        prepared=calibration_prepared_of,
        statistics=calibration_statistics_of,
    output:
        engine=f"{CAL_DIR}/{BUILT}.onnx",
        build=f"{CAL_DIR}/{BUILT}_build.parquet",
        resources=f"{CAL_DIR}/{BUILT}_build_resources.parquet",
        calibration_json=f"{CAL_DIR}/{BUILT}_calibration.json",
        calibration_cache=f"{CAL_DIR}/{BUILT}_calibration.cache",
        float_nodes=f"{CAL_DIR}/{BUILT}_float_nodes.json",
    params:
        # Only what the variant id and the shared calibration batching say: adding an axis value
        # adds jobs and leaves every existing variant's job untouched.
        data_dir=data_dir,
        batch_size=config["calibration"]["batch_size"],
        interval_s=config["monitor"]["interval_s"],
        seed=config["seed"],
        int8_options=STUDY_INT8_OPTIONS,
        labels=lambda w: variant_labels(w.variant, w.dataset, w.model, w.size),
        provenance=provenance_params,
    threads: job_cores
    log:
        study_log("{variant}_build.log"),
    conda:
        STUDY_ENV
    script:
        "../workflow_scripts/shims/calibration_build.py"


use rule evaluate_engine as evaluate_calibration_variant with:
    input:
        data_files,
        engine=f"{CAL_DIR}/{{variant}}.onnx",
    output:
        accuracy=f"{CAL_DIR}/{ANY}_accuracy.parquet",
        predictions=f"{CAL_DIR}/{ANY}_predictions.parquet",
    params:
        data_dir=data_dir,
        evaluate=config["evaluate"],
        labels=lambda w: variant_labels(w.variant, w.dataset, w.model, w.size),
        provenance=provenance_params,
    log:
        study_log("{variant}_evaluate.log"),


use rule benchmark_latency as benchmark_calibration_variant with:
    input:
        data_files,
        engine=f"{CAL_DIR}/{{variant}}.onnx",
    output:
        summary=f"{CAL_DIR}/{ANY}_latency.parquet",
        samples=f"{CAL_DIR}/{ANY}_latency_samples.parquet",
        resources=f"{CAL_DIR}/{ANY}_latency_resources.parquet",
    params:
        data_dir=data_dir,
        benchmark=config["benchmark"],
        interval_s=config["monitor"]["interval_s"],
        labels=lambda w: variant_labels(w.variant, w.dataset, w.model, w.size),
        provenance=provenance_params,
    log:
        study_log("{variant}_latency.log"),


rule calibration_sensitivity:
    input:
        data_files,
        onnx=ONNX_MODEL,
        prepared=paths.calibration_file("prepared.onnx"),
        engine=f"{CAL_DIR}/{STUDY_START}.onnx",
    output:
        table=f"{CAL_DIR}/sensitivity.parquet",
    params:
        data_dir=data_dir,
        sensitivity=STUDY.get("sensitivity", {"num_images": 64}),
        batch_size=config["calibration"]["batch_size"],
        seed=config["seed"],
        labels=lambda w: {
            "dataset": w.dataset,
            "model": w.model,
            "input_size": int(w.size),
            "baseline_variant": STUDY_START,
        },
        provenance=provenance_params,
    log:
        study_log("sensitivity.log"),
    conda:
        STUDY_ENV
    script:
        "../workflow_scripts/shims/calibration_sensitivity.py"


rule calibration_int8_auto:
    input:
        data_files,
        onnx=ONNX_MODEL,
        fp32=paths.engine_pattern("fp32", ENGINE_EXT),
        sensitivity=f"{CAL_DIR}/sensitivity.parquet",
        prepared=paths.calibration_file("prepared.onnx"),
        statistics=f"{CAL_DIR}/statistics-n{parse_variant(STUDY_START).num_images}.npz",
    output:
        engine=f"{CAL_DIR}/{AUTO_VARIANT}.onnx",
        record=f"{CAL_DIR}/{AUTO_VARIANT}.json",
        steps=f"{CAL_DIR}/{AUTO_VARIANT}_steps.parquet",
    params:
        data_dir=data_dir,
        start=STUDY_START,
        auto=STUDY_AUTO_CONFIG,
        batch_size=config["calibration"]["batch_size"],
        eval_batch_size=config["evaluate"]["batch_size"],
        seed=config["seed"],
        int8_options=STUDY_INT8_OPTIONS,
        labels=lambda w: variant_labels(AUTO_VARIANT, w.dataset, w.model, w.size),
        provenance=provenance_params,
    threads: job_cores
    log:
        study_log("int8-auto.log"),
    conda:
        STUDY_ENV
    script:
        "../workflow_scripts/shims/calibration_auto.py"


# NNCF's accuracy control on OpenVINO, the comparison for int8-auto (calibration_study.nncf_rescue):
# its engine lives under the openvino backend folder so the workflow's evaluate and latency rules load it
# with the OpenVINO runner.
rule calibration_nncf_rescue:
    input:
        data_files,
        onnx=ONNX_MODEL,
    output:
        engine=f"{CAL_DIR}/{NNCF_VARIANT}.xml",
        weights=f"{CAL_DIR}/{NNCF_VARIANT}.bin",
        record=f"{CAL_DIR}/{NNCF_VARIANT}.json",
    wildcard_constraints:
        backend=registry.RESCUE_BACKEND,
    params:
        data_dir=data_dir,
        start=STUDY_START,
        nncf=STUDY.get("nncf_rescue", {}),
        val_images=STUDY_AUTO_CONFIG.get("val_images", 0),
        batch_size=config["calibration"]["batch_size"],
        seed=config["seed"],
    threads: job_cores
    log:
        study_log("nncf-ac.log"),
    conda:
        RESCUE_ENV
    script:
        "../workflow_scripts/shims/calibration_nncf.py"


use rule evaluate_engine as evaluate_nncf_rescue with:
    input:
        data_files,
        engine=f"{CAL_DIR}/{NNCF_VARIANT}.xml",
        beside=f"{CAL_DIR}/{NNCF_VARIANT}.bin",
    output:
        accuracy=f"{CAL_DIR}/{NNCF_VARIANT}_accuracy.parquet",
        predictions=f"{CAL_DIR}/{NNCF_VARIANT}_predictions.parquet",
    wildcard_constraints:
        backend=registry.RESCUE_BACKEND,
    params:
        labels=lambda w: variant_labels(NNCF_VARIANT, w.dataset, w.model, w.size),
    log:
        study_log("nncf-ac_evaluate.log"),


use rule benchmark_latency as benchmark_nncf_rescue with:
    input:
        data_files,
        engine=f"{CAL_DIR}/{NNCF_VARIANT}.xml",
        beside=f"{CAL_DIR}/{NNCF_VARIANT}.bin",
    output:
        summary=f"{CAL_DIR}/{NNCF_VARIANT}_latency.parquet",
        samples=f"{CAL_DIR}/{NNCF_VARIANT}_latency_samples.parquet",
        resources=f"{CAL_DIR}/{NNCF_VARIANT}_latency_resources.parquet",
    wildcard_constraints:
        backend=registry.RESCUE_BACKEND,
    params:
        labels=lambda w: variant_labels(NNCF_VARIANT, w.dataset, w.model, w.size),
    log:
        study_log("nncf-ac_latency.log"),


rule calibration_study_summary:
    input:
        **STUDY_INPUTS,
    output:
        **{
            key: report(path, category="Calibration study", caption=f"../report/calibration_{key}.rst")
            for key, path in STUDY_OUTPUTS.items()
        },
    params:
        cells=study_cells(config, RESULTS, DEVICE, BACKEND, STUDY_BASELINE, nncf_backend=registry.RESCUE_BACKEND if STUDY_NNCF else None),
        start=STUDY_START,
        with_nncf=STUDY_NNCF,
        variants=STUDY_VARIANTS,
        with_auto=STUDY_AUTO,
        with_fp16=STUDY_FP16,
        int8_target=STUDY.get("target_drop_points", 1.0),
        fp16_target=STUDY.get("fp16_target_drop_points", 0.1),
        top_k=STUDY.get("sensitivity", {}).get("top_k", 10),
        n_resamples=STUDY.get("bootstrap_resamples", 2000),
        seed=config["seed"],
    log:
        f"{LOGS}/calibration_study/summary.log",
    conda:
        "../envs/plots.yaml"
    script:
        "../workflow_scripts/shims/calibration_summary.py"

