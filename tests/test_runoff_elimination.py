"""Successive elimination in the latency runoff (issue 24, decision stability): engines another engine is
shown faster than after the base rounds are retired; the finalists get longer final rounds, interleaved
in slices; and the decision's tie set is the candidates no other candidate is shown faster than.

Synthetic per-round data and fake runners on a fake clock: nothing here depends on how fast this
machine is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workflow_scripts.decision import ties
from workflow_scripts.measure import statistics as st
from workflow_scripts.stages import runoff


def rounds_table(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    table = pd.DataFrame(values)
    table.index.name = "round"
    return table


def test_paired_test_tolerates_discordant_rounds_only_with_more_rounds():
    # Slower by 25% in all but one round: at 6 rounds the 95% interval is [min, max] and reaches below 1;
    # at 12 rounds ([3rd, 10th]) two discordant rounds still leave it wholly above 1.
    best6 = pd.Series([1.0] * 6)
    other6 = pd.Series([1.25] * 5 + [0.9])
    assert not st.paired_slower(best6, other6, 0.05)[0]
    best12 = pd.Series([1.0] * 12)
    other12 = pd.Series([1.25] * 10 + [0.9, 0.8])
    slower, med, low, high, n = st.paired_slower(best12, other12, 0.05)
    assert slower and n == 12 and low == pytest.approx(1.25)
    # Wholly above 1 but within the margin: not slower.
    assert not st.paired_slower(best12, pd.Series([1.03] * 12), 0.05)[0]


def test_finalists_retire_engines_another_engine_is_shown_faster_than():
    table = rounds_table({("litert", "fp32"): [1.0, 1.1, 0.9, 1.0, 1.2, 1.0],
                          ("litert", "fp16"): [1.05, 1.0, 1.0, 0.95, 1.1, 1.02],  # tied with fp32
                          ("litert", "int8"): [1.3, 1.4, 1.2, 1.3, 1.5, 1.3],  # slower than the best
                          ("openvino", "fp32"): [3.0, 3.1, 2.9, 3.0, 3.2, 3.0]})
    keep, retired = st.finalists(table, margin=0.05)
    assert keep == [("litert", "fp32"), ("litert", "fp16")]
    assert set(retired) == {("litert", "int8"), ("openvino", "fp32")}
    by, med, low, high, n = retired[("litert", "int8")]
    assert by in keep and low > 1 and n == 6


def spiky_best(rounds: int) -> dict:
    """A has the lowest point value and cannot be told apart from B; C is slower than B in every round but
    straddles 1 against A, which spiked in a quarter of the rounds."""
    spikes = rounds // 4
    a = ([0.95, 1.05] * rounds)[:rounds - spikes] + [1.3] * spikes
    return {("litert", "A"): a, ("litert", "B"): [1.0] * rounds, ("litert", "C"): [1.2] * rounds}


def break_ties_on(p99: dict):
    group = {"device": "cpu", "dataset": "digits", "input_size": 32, "model": "M"}
    rows = [{**group, "backend": b, "precision": p, "round": r, "latency_p99_ms": v}
            for (b, p), values in p99.items() for r, v in enumerate(values)]
    ranked = pd.DataFrame([{"backend": "litert", "precision": p, "p99_ms": v, "p99_ci_low_ms": v * 0.9,
                            "p99_ci_high_ms": v * 1.1, "engine_mb": mb, "top1_percent": 90.0}
                           for p, v, mb in (("A", 1.0, 3.0), ("B", 1.01, 2.0), ("C", 1.2, 1.0))])
    tied, chosen, note, _, _ = ties.break_ties(ranked, "latency", pd.DataFrame(rows), group, margin=0.05)
    return [ranked.loc[t, "precision"] for t in tied], ranked.loc[chosen, "precision"], note


def test_a_candidate_slower_than_a_tied_candidate_is_not_in_the_tie_set():
    # C cannot be the fastest: it is slower than B in all 12 rounds (beyond the Bonferroni level of the
    # comparisons with candidates other than the best). The old rule compared with the point-best A only,
    # where C straddles 1, and named C in the tie set.
    tied, chosen, note = break_ties_on(spiky_best(12))
    assert tied == ["A", "B"] and chosen == "B" and "litert C" not in note
    assert st.finalists(rounds_table(spiky_best(12)), 0.05)[0] == [("litert", "A"), ("litert", "B")]


def test_comparisons_beyond_the_best_are_at_a_bonferroni_level():
    # C is slower than B in 10 of 12 rounds: enough at 95% ([3rd, 10th]), not at the Bonferroni level of
    # 3 candidates (97.5%: [2nd, 11th]); against the best (A) it straddles 1. So C stays in the tie set.
    p99 = spiky_best(12)
    p99[("litert", "C")] = [1.2] * 10 + [0.9, 0.9]
    assert st.secondary_confidence(3, 12) == pytest.approx(0.975)
    assert st.paired_slower(pd.Series(p99[("litert", "B")]), pd.Series(p99[("litert", "C")]), 0.05)[0]
    tied, _, _ = break_ties_on(p99)
    assert tied == ["A", "B", "C"]
    # Six rounds cannot reach 97.5%: the test is then 'slower in every round' (96.9%), the one that retired an
    # engine after the runoff's base rounds, so the decision keeps it out as the runoff did.
    assert st.secondary_confidence(3, 6) == pytest.approx(1 - 2 / 64)
    assert break_ties_on(spiky_best(6))[0] == ["A", "B"]
    assert st.finalists(rounds_table(spiky_best(6)), 0.05)[0] == [("litert", "A"), ("litert", "B")]


def test_the_best_by_point_value_shown_slower_paired_by_round_is_not_the_reference():
    # The load changed between rounds: A's median over its rounds (4) is below B's (5), yet B was faster
    # in every round the two shared. B is the reference and A is out (the old rule kept A first, and tied).
    group = {"device": "cpu", "dataset": "digits", "input_size": 32, "model": "M"}
    p99 = {"A": [12.0] * 5 + [4.0] + [3.0] * 5, "B": [5.0] * 6 + [1.0] * 5}
    rows = [{**group, "backend": "litert", "precision": p, "round": r, "latency_p99_ms": v}
            for p, values in p99.items() for r, v in enumerate(values)]
    ranked = pd.DataFrame([{"backend": "litert", "precision": p, "p99_ms": v, "p99_ci_low_ms": 1.0,
                            "p99_ci_high_ms": 12.0, "engine_mb": 1.0, "top1_percent": 90.0}
                           for p, v in (("A", 4.0), ("B", 5.0))])
    tied, chosen, note, _, _ = ties.break_ties(ranked, "latency", pd.DataFrame(rows), group, margin=0.05)
    assert tied == [1] and chosen == 1 and note == ""
    table = rounds_table({("litert", p): v for p, v in p99.items()})
    assert st.finalists(table, 0.05)[0] == [("litert", "B")]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class FakeRunner:
    """Advances the fake clock by its engine's latency; every 50th task is 3x slower (a p99 tail)."""

    def __init__(self, latency_s: float, clock: FakeClock, log: list, name: str):
        self.latency_s, self.clock, self.log, self.name, self.calls = latency_s, clock, log, name, 0

    def run(self, batch):
        self.calls += 1
        self.clock.now += self.latency_s * (3.0 if self.calls % 50 == 0 else 1.0)
        self.log.append(self.name)

    def close(self):
        pass


LATENCY_S = {"fast": 0.001, "twin": 0.001, "slow": 0.004}


@pytest.fixture
def fake_engines(monkeypatch):
    clock, calls = FakeClock(), []

    class Module:
        @staticmethod
        def load_runner(path, threads):
            return FakeRunner(LATENCY_S[path], clock, calls, path)

    def fake_measure_round(module, path, threads, batch, warmup, iterations, min_duration_s, max_duration_s,
                           needed, timing, clock=None):
        # Base rounds: 299 tasks; 'fast' and 'twin' alternate which has the larger tail, 'slow' is 4x.
        rng = np.random.default_rng(len(calls))
        calls.append(("base", path))
        samples = np.full(needed, LATENCY_S[path]) * rng.uniform(0.98, 1.02, needed)
        samples[-5:] *= 3.0 + rng.uniform(-0.5, 0.5)
        timing.update(runoff.timing_columns(samples, None))
        return samples, 0.01, {"cpu_steal_percent": 0.0, "other_processes_cores": 0.0, "own_cores": 1.0}

    monkeypatch.setattr(runoff, "CLOCK", clock)
    monkeypatch.setattr(runoff, "get_backend", lambda name: Module)
    monkeypatch.setattr(runoff, "measure_round", fake_measure_round)
    monkeypatch.setattr(runoff, "iter_batches", lambda *a, **k: iter([(np.zeros((1, 4)), None)]))
    return calls


def test_final_rounds_measure_only_the_finalists_longer_and_interleaved(fake_engines, tmp_path):
    engines = [{"backend": "fake", "precision": p, "path": p} for p in ("fast", "slow", "twin")]
    out = runoff.run_runoff(engines, tmp_path, batch_size=1, threads=1, rounds=6, warmup=1, min_duration_s=0.1,
                            max_duration_s=60.0, out_path=tmp_path / "runoff.parquet",
                            labels={"device": "cpu", "dataset": "d", "model": "M", "input_size": 32},
                            provenance={"device": "cpu", "backend": "runoff"}, max_rounds=9, final_duration_s=1.0,
                            final_budget_s=3.0, slice_s=0.1, objective="latency", tie_margin=0.05,
                            final_max_s=1e9)
    base, final = out[out["phase"] == "base"], out[out["phase"] == "final"]
    assert len(base) == 18 and set(base["round"]) == set(range(6))
    # 'slow' was shown slower in the base rounds and retired; the twins get three final rounds each.
    assert set(final["precision"]) == {"fast", "twin"} and sorted(set(final["round"])) == [6, 7, 8]
    # Each finalist's share: min(final_duration_s, final_budget_s / (2 finalists x 3 rounds)) = 0.5 s,
    # in slices of 0.1 s (5 slices), and at least the 299 tasks p99 needs.
    assert (final["measured_duration_s"] >= 0.5).all() and (final["tasks"] >= 299).all()
    assert (final["slices"] == 5).all() and (final["latency_p99_supported"]).all()
    # Interleaved: the final rounds' tasks switch engines every slice (A B A B ...), not once per round.
    final_calls = [c for c in fake_engines if c in ("fast", "twin")]
    switches = sum(1 for a, b in zip(final_calls, final_calls[1:]) if a != b)
    assert switches >= 3 * (2 * 5 - 1)
    # The per-engine rows keep their between-round intervals: 9 rounds for the finalists, 6 for the retired.
    stats_ = runoff.round_statistics(out).set_index("precision")
    assert stats_.loc["fast", "rounds"] == 9 and stats_.loc["slow", "rounds"] == 6
    assert stats_[["latency_p99_rounds_ci_low_ms", "latency_p99_rounds_ci_high_ms"]].notna().all().all()


def test_no_final_rounds_when_one_finalist_is_left_or_max_rounds_equals_rounds(fake_engines, tmp_path):
    engines = [{"backend": "fake", "precision": p, "path": p} for p in ("fast", "slow")]
    kwargs = dict(batch_size=1, threads=1, rounds=6, warmup=1, min_duration_s=0.1, max_duration_s=60.0,
                  out_path=tmp_path / "runoff.parquet", labels={"device": "cpu", "dataset": "d", "model": "M"},
                  provenance={"device": "cpu", "backend": "runoff"}, final_budget_s=3.0)
    assert set(runoff.run_runoff(engines, tmp_path, max_rounds=12, **kwargs)["phase"]) == {"base"}
    twins = [{"backend": "fake", "precision": p, "path": p} for p in ("fast", "twin")]
    assert set(runoff.run_runoff(twins, tmp_path, max_rounds=6, **kwargs)["phase"]) == {"base"}
    # No final round starts once runoff.final_max_s of wall time is spent.
    assert set(runoff.run_runoff(twins, tmp_path, max_rounds=9, final_max_s=0.0, **kwargs)["phase"]) == {"base"}
    # Objectives that are not latency retire nothing and add no rounds.
    assert set(runoff.run_runoff(twins, tmp_path, max_rounds=9, objective="size", **kwargs)["phase"]) == {"base"}


def test_undecided_is_a_finalist_that_looks_slower_by_more_than_the_margin_but_is_not_shown_slower():
    # 12 rounds: 'border' is 1.2x the best in 9 and faster in 3 (the 95% interval [3rd, 10th] reaches below
    # 1); 'twin' is within the margin (a tie whatever the rounds); 'slow' is shown slower.
    table = rounds_table({("litert", "best"): [1.0] * 12,
                          ("litert", "border"): [1.2] * 9 + [0.9] * 3,
                          ("litert", "twin"): [1.02, 0.98] * 6,
                          ("litert", "slow"): [1.5] * 12})
    best, open_ = runoff.st.undecided(table, 0.05)
    assert best == ("litert", "best") and open_ == [("litert", "border")]
    # With six more rounds in which it is 1.2x, it is shown slower (18 rounds: [5th, 14th]).
    longer = rounds_table({k: v + [v[0]] * 6 for k, v in table.to_dict("list").items()})
    assert runoff.st.undecided(longer, 0.05)[1] == []
    assert st.paired_slower(longer[("litert", "best")], longer[("litert", "border")], 0.05)[0]


def test_extra_rounds_run_only_while_a_finalist_is_undecided(fake_engines, tmp_path, monkeypatch):
    LATENCY_S["border"] = 0.0012  # 1.2x 'fast' in the final and extra rounds (the fake runner)
    visits = {"fast": 0, "twin": 0, "border": 0}
    base_factor = {"border": [1.2, 0.9, 1.2, 1.2, 0.9, 1.2]}  # 1.2x, but faster than 'fast' in two base rounds

    def deterministic_round(module, path, threads, batch, warmup, iterations, min_duration_s, max_duration_s,
                            needed, timing, clock=None):
        factor = base_factor.get(path, [1.0] * 6)[visits[path]]
        visits[path] += 1
        samples = np.full(needed, 0.001 * factor)
        timing.update(runoff.timing_columns(samples, None))
        return samples, 0.01, {"cpu_steal_percent": 0.0, "other_processes_cores": 0.0, "own_cores": 1.0}

    monkeypatch.setattr(runoff, "measure_round", deterministic_round)
    engines = [{"backend": "fake", "precision": p, "path": p} for p in ("fast", "twin", "border")]
    kwargs = dict(batch_size=1, threads=1, rounds=6, warmup=1, min_duration_s=0.1, max_duration_s=60.0,
                  out_path=tmp_path / "runoff.parquet", labels={"device": "cpu", "dataset": "d", "model": "M"},
                  provenance={"device": "cpu", "backend": "runoff"}, max_rounds=9, final_budget_s=3.0,
                  final_max_s=1e9, tie_margin=0.05)
    out = runoff.run_runoff(engines, tmp_path, extra_rounds=3, **kwargs)
    extra = out[out["phase"] == "extra"]
    # After 9 rounds 'border' is 1.2x in 7 and faster in 2 ([2nd, 8th] of 9 reaches 0.9): undecided. Every
    # finalist gets rounds 9-11 (the decision may take 'twin', tied with the reference, as its reference).
    assert sorted(set(extra["round"])) == [9, 10, 11]
    assert set(extra["precision"]) == {"fast", "twin", "border"} and len(extra) == 9
    rounds = out.pivot_table(index="round", columns=["backend", "precision"], values="latency_p99_ms")
    assert st.paired_slower(rounds[("fake", "fast")], rounds[("fake", "border")], 0.05)[0]
    # Without extra rounds it stays a finalist nobody can tell apart from the best.
    visits.update(fast=0, twin=0, border=0)
    plain = runoff.run_runoff(engines, tmp_path, extra_rounds=0, **kwargs)
    assert "extra" not in set(plain["phase"])
    rounds = plain.pivot_table(index="round", columns=["backend", "precision"], values="latency_p99_ms")
    assert not st.paired_slower(rounds[("fake", "fast")], rounds[("fake", "border")], 0.05)[0]


def test_an_engine_slower_by_a_hair_in_every_base_round_is_not_retired():
    # Two identical LiteRT engines on a 2-core VM (session 8, rerun 5): fp32 / fp16 over six base rounds
    # 1.443 1.354 1.018 1.053 1.056 1.011. Slower in all six, median 1.054 > 1 + margin: the decision's test says
    # slower, but not by more than the margin in every round, so the runoff keeps it for the final rounds.
    table = rounds_table({("litert", "fp16"): [1.0] * 6,
                          ("litert", "fp32"): [1.443, 1.354, 1.018, 1.053, 1.056, 1.011],
                          ("litert", "int8"): [1.355, 1.282, 1.202, 1.076, 1.332, 1.269]})
    keep, retired = st.finalists(table, 0.05)
    assert keep == [("litert", "fp16"), ("litert", "fp32")] and list(retired) == [("litert", "int8")]
    assert st.paired_slower(table[("litert", "fp16")], table[("litert", "fp32")], 0.05)[0]
