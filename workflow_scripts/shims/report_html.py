from pathlib import Path

from workflow_scripts.figures.report_html import write_report_pages
from workflow_scripts.shims import run

sm = snakemake  # noqa: F821 (injected by Snakemake)
run(sm, lambda: write_report_pages(sm.params.summary_dir, list(sm.params.table_names),
                                   [sm.input.decision, sm.input.claims, sm.input.summary], list(sm.input.figures),
                                   None, Path(sm.output.gallery).parent))
