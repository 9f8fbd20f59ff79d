from workflow_scripts.calibration_study.study import summarize_study
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
p = sm.params
run(sm, lambda: summarize_study(
    cells=p.cells,
    variants=p.variants,
    with_auto=p.with_auto,
    with_fp16=p.with_fp16,
    sensitivity_tables=list(sm.input.sensitivity),
    int8_target=p.int8_target,
    fp16_target=p.fp16_target,
    top_k=p.top_k,
    n_resamples=p.n_resamples,
    seed=p.seed,
    out={key: sm.output[key] for key in ("study", "best", "sensitivity", "sensitivity_md", "drop_figure",
                                          "fallback_figure", "rescue", "rescue_table", "sensitivity_figure")},
    start_variant=p.start,
    with_nncf=p.with_nncf,
))
