"""A slow period of the machine in the runoff: found from rounds where every engine ran slower, and said in the answer.

On the 2-core VM every engine's median sometimes rose ~2x together for a few rounds (the host, unseen by
the VM's steal counter), and LiteRT INT8's p99 penalty against FP16 vanished meanwhile. Paired by round a
common slowdown cancels, but such a run's tie set can differ from a quiet run's, so the decision says so.
"""

from __future__ import annotations

import pandas as pd
import pytest

from tests.test_decision import write_quickstart_like
from tests.test_latency_trust import runoff_rows
from workflow_scripts.decision import decide as dm
from workflow_scripts.decision import render
from workflow_scripts.decision import ties
from workflow_scripts.measure import statistics as st

GROUP = {"device": "cpu", "dataset": "digits", "input_size": 32, "model": "M"}


def rounds_table(values: dict) -> pd.DataFrame:
    return runoff_rows(values).pivot_table(index="round", columns=["backend", "precision"],
                                           values="latency_median_ms", aggfunc="first")


def test_rounds_where_every_engine_ran_slower_together_are_slow_rounds():
    table = rounds_table({("litert", "fp32"): [1.0, 1.0, 2.1, 1.0, 2.0, 1.0],
                          ("litert", "int8"): [0.5, 0.5, 1.0, 0.5, 1.0, 0.5],
                          ("openvino", "fp32"): [2.0, 2.1, 4.0, 2.0, 4.2, 1.9]})
    slow = st.slow_rounds(table)
    assert sorted(slow) == [2, 4]
    assert slow[2] == pytest.approx(2.0, rel=0.06) and slow[4] == pytest.approx(2.0, rel=0.06)


def test_one_engine_slow_in_a_round_is_not_the_machine():
    table = rounds_table({("litert", "fp32"): [1.0, 1.0, 3.0, 1.0, 1.0, 1.0],
                          ("litert", "int8"): [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                          ("openvino", "fp32"): [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]})
    assert st.slow_rounds(table) == {}
    # A round that measured one engine only (a finalist alone) says nothing about the machine either.
    alone = rounds_table({("litert", "fp32"): [1.0] * 6 + [3.0], ("litert", "int8"): [0.5] * 6})
    assert st.round_slowdown(alone).isna().iloc[-1] and st.slow_rounds(alone) == {}


def test_machine_note_names_the_rounds_the_slowdown_and_what_the_vm_saw():
    frame = runoff_rows({("litert", "fp32"): [1.0, 1.0, 2.4, 1.0, 2.0, 1.0],
                         ("litert", "int8"): [0.5, 0.5, 1.2, 0.5, 1.0, 0.5]})
    note = ties.machine_note(frame, GROUP)
    assert "rounds 3 and 5 of 6" in note and "2.0-2.4x" in note and "so the host" in note
    assert "--configfile CONFIG --forcerun benchmark_latency_runoff" in note  # without it the full study is planned
    stolen = frame.assign(cpu_steal_percent=frame["round"].map({2: 30.0, 4: 30.0}).fillna(0.0))
    assert "steal 30%" in ties.machine_note(stolen, GROUP)
    unrecorded = frame.drop(columns=["cpu_steal_percent", "other_processes_cores"])  # an older runoff table
    assert "steal and other load not recorded" in ties.machine_note(unrecorded, GROUP)
    assert ties.machine_note(runoff_rows({("litert", "fp32"): [1.0] * 6, ("litert", "int8"): [0.5] * 6}), GROUP) == ""
    assert ties.machine_note(None, GROUP) == ""
    once = runoff_rows({("litert", "fp32"): [1.0, 1.0, 2.4, 1.0, 1.0, 1.0], ("litert", "int8"): [0.5, 0.5, 1.2, 0.5, 0.5, 0.5]})
    assert "slowed down in round 3 of 6: every engine ran 2.4x" in ties.machine_note(once, GROUP)


def test_the_decision_says_when_the_machine_slowed_down_during_the_runoff(tmp_path):
    summary = write_quickstart_like(tmp_path / "results", runoff=True)
    tables = dm.read_tables(summary)
    budgets = dm.Budgets(max_drop_points=None, require_valid=False)
    quiet = dm.decide(tables, budgets)
    assert (quiet["machine_note"] == "").all()
    runoff = tables["runoff"].copy()
    slow = (runoff["model"] == "DenseNet169") & runoff["round"].isin([1, 3])
    runoff.loc[slow, ["latency_median_ms", "latency_p99_ms"]] *= 2.2
    decision = dm.decide({**tables, "runoff": runoff}, budgets)
    chosen = decision[decision["chosen"]].set_index("model")
    assert "rounds 2 and 4 of 6" in chosen.loc["DenseNet169", "machine_note"]
    assert chosen.loc["MobileNetV3Small", "machine_note"] == ""
    assert "**The machine**: the machine slowed down in rounds 2 and 4" in dm.decision_markdown(decision, budgets)
    answer = {item["model"]: item for item in render.answers(decision)}
    assert answer["DenseNet169"]["machine"].startswith("the machine slowed down")
    assert "  - the machine slowed down" in "\n".join(render.answer_markdown(decision))
