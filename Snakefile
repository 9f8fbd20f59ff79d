# edgeptq: post-training quantization of Keras models, Keras -> ONNX -> FP32/FP16/INT8 engines,
# with the compression and compressed-model benchmarks of the study. See README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/export.smk"
include: "rules/engine.smk"
include: "rules/benchmark.smk"
include: "rules/runoff.smk"
include: "rules/evaluate.smk"
include: "rules/summarize.smk"
include: "rules/decide.smk"
include: "rules/calibration_study.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        DECIDE_TARGETS,
    # A message replaces the job's list of every target on the console (thousands of characters).
    message:
        "Every target of the configured matrix is done"


onstart:
    # Said once per run, not by every job's resource monitor (workflow_scripts/shims CONSOLE_ONCE).
    import sys

    from workflow_scripts.shims import gpu_notice

    if notice := gpu_notice():
        print(notice, file=sys.stderr)


onsuccess:
    # The per-engine tables, then the answer per model: the last screen of a run (docs/decision.md).
    from workflow_scripts.figures.run_summary import print_run_summary

    print_run_summary(f"{SUMMARY_DIR}/summary.md")
