"""Every precision of the registry reaches the decision, Fig. 14's markers and a build rule (bf16 was
left out of all three when it was added: its rows were dropped from decision.md and no rule built it)."""

from __future__ import annotations

import pytest

from tests.cli import job_counts, output_of, snakemake, tiny
from workflow_scripts.decision import decide as decision
from workflow_scripts.figures import plots_decision
from workflow_scripts.core import registry
from workflow_scripts.core.device import cpu_bf16_support


def test_the_decision_ranks_every_precision():
    assert set(decision.PRECISION_ORDER) == set(registry.PRECISIONS)


def test_fig14_has_a_marker_of_its_own_per_precision():
    markers = plots_decision.PRECISION_MARKERS
    assert set(registry.PRECISIONS) <= set(markers)
    assert len({markers[p] for p in registry.PRECISIONS}) == len(registry.PRECISIONS)


@pytest.mark.slow
def test_a_bf16_engine_is_planned_by_the_float_build_rule(tmp_path):
    """The real planner: `snakemake -n` of the matrix with bf16 plans build_engine_openvino jobs for it."""
    supported, why = cpu_bf16_support()
    if not supported:
        pytest.skip(f"this CPU cannot run OpenVINO bf16: {why}")
    pytest.importorskip("openvino")
    result = snakemake(tmp_path, "-n", config=tiny(backends=["openvino"], precisions=["fp32", "bf16"]))
    assert job_counts(output_of(result)).get("build_engine_openvino") == 2  # fp32 and bf16
    assert "bf16.xml" in output_of(result)
