"""Every precision of the registry reaches the decision, Fig. 14's markers and a build rule (bf16 was
left out of all three when it was added: its rows were dropped from decision.md and no rule built it)."""

from __future__ import annotations

import re
from pathlib import Path

from workflow_scripts import decision, plots_decision, registry

ROOT = Path(__file__).resolve().parents[1]


def test_the_decision_ranks_every_precision():
    assert set(decision.PRECISION_ORDER) == set(registry.PRECISIONS)


def test_fig14_has_a_marker_of_its_own_per_precision():
    markers = plots_decision.PRECISION_MARKERS
    assert set(registry.PRECISIONS) <= set(markers)
    assert len({markers[p] for p in registry.PRECISIONS}) == len(registry.PRECISIONS)


def test_the_float_build_rule_takes_every_precision_but_int8_from_the_registry():
    text = (ROOT / "rules" / "engine.smk").read_text()
    assert re.search(r'precision="\|"\.join\(p for p in registry\.PRECISIONS if p != "int8"\)', text)
    assert "bf16" in registry.PRECISIONS
