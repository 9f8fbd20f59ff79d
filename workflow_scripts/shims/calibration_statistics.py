from workflow_scripts.calibration_study.study import measure_statistics
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: measure_statistics(
    prepared=sm.input.prepared,
    data_dir=sm.params.data_dir,
    num_images=int(sm.wildcards.num_images),
    batch_size=sm.params.batch_size,
    seed=sm.params.seed,
    out=sm.output.statistics,
))
