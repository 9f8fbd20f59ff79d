from pathlib import Path

from workflow_scripts.data.datasets import prepare_dataset
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
settings = sm.params.settings
run(sm, lambda: prepare_dataset(
    dataset=sm.wildcards.dataset,
    size=int(sm.wildcards.size),
    out_dir=Path(sm.output.meta).parent,
    resources_dir=sm.params.resources_dir,
    verify_checksums=sm.params.verify_checksums,
    val_fraction=settings["split"]["val_fraction"],
    test_fraction=settings["split"]["test_fraction"],
    seed=settings["seed"],
    user_path=dict(sm.params.user_source).get("path"),
))
