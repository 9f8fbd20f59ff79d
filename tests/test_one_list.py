"""The lists rules/common.smk types by hand agree with the code that makes the files (issue 22): the
figures with plots.FIGURES and their report captions, the summary tables with their report captions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from workflow_scripts.figures import plots

ROOT = Path(__file__).resolve().parents[1]


def smk_list(name: str) -> list[str]:
    text = (ROOT / "rules" / "common.smk").read_text()
    match = re.search(rf"^{name} = (\[.*?\])$", text, re.S | re.M)
    assert match, f"rules/common.smk has no list {name}"
    return ast.literal_eval(match.group(1))


def test_the_figure_rule_makes_exactly_the_figures_plots_draws_in_its_order():
    assert smk_list("FIGURES") == list(plots.FIGURES)


def test_every_figure_and_summary_table_has_its_report_caption():
    missing = [f"report/{figure}.rst" for figure in smk_list("FIGURES") if not (ROOT / "report" / f"{figure}.rst").exists()]
    missing += [f"report/table_{table}.rst" for table in smk_list("SUMMARY_TABLES")
                if not (ROOT / "report" / f"table_{table}.rst").exists()]
    assert not missing, f"captions missing: {missing}"
