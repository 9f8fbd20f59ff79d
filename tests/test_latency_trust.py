"""Latency you can trust (issue 24) and the decision CLI's bad input (issue 25, items 6 and 8).

Order-statistic intervals of median and p99 and the count p99 needs; the measuring loop that
reaches that count; CPU steal and other processes' load in words; the runoff's rotated rounds and
between-round intervals; ties within measurement noise in the decision; NaN samples never ranked;
and the decision CLI refusing bad budgets, unknown devices/models, missing folders and damaged
tables with one clear line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tests.test_decision import write_quickstart_like
from workflow_scripts.decision import decide as dm
from workflow_scripts.measure import noise
from workflow_scripts.stages import runoff
from workflow_scripts.summary import summarize
from workflow_scripts.decision import ties
from workflow_scripts.measure import statistics as st
from workflow_scripts.stages.latency import measure, summarize_latency

ROOT = Path(__file__).parents[1]


# --- order statistics ----------------------------------------------------------------------------

def test_p99_needs_299_tasks_and_the_median_5():
    assert st.tasks_needed(0.99) == 299 and st.tasks_needed(0.5) == 5
    assert st.order_statistic_ci(np.arange(298.0), 0.99)[2] is False
    low, high, ok = st.order_statistic_ci(np.arange(299.0), 0.99)
    assert ok and high == 298.0 and low < high


def test_median_interval_is_the_textbook_order_statistics():
    # n = 100: the distribution-free 95% CI of the median is [x_(40), x_(61)] (coverage 0.965).
    assert st.order_statistic_ci(np.arange(1.0, 101.0), 0.5)[:2] == (40.0, 61.0)
    # Six values: [min, max] covers the median with 1 - 2/2^6 = 96.9%; five cannot reach 95%.
    assert st.order_statistic_ci([3.0, 1.0, 2.0, 6.0, 5.0, 4.0], 0.5) == (1.0, 6.0, True)
    assert np.isnan(st.order_statistic_ci([1.0, 2.0, 3.0, 4.0, 5.0], 0.5)[0])


@pytest.mark.parametrize("q,n", [(0.5, 40), (0.99, 400)])
def test_order_statistic_intervals_cover_the_true_quantile(q, n):
    rng = np.random.default_rng(0)
    truth = stats.lognorm(0.5).ppf(q)
    hits = 0
    for _ in range(400):
        low, high, ok = st.order_statistic_ci(rng.lognormal(0, 0.5, n), q)
        hits += ok and low <= truth <= high
    assert hits / 400 >= 0.93  # nominal >= 0.95; 400 trials leave about 1 point of sampling error


def test_unsupported_p99_is_nan_with_a_reason_never_a_number():
    few = summarize_latency(np.full(200, 0.002), batch_size=1)
    assert np.isnan(few["latency_p99_ms"]) and not few["latency_p99_supported"]
    assert "200 tasks" in few["latency_p99_note"] and "299" in few["latency_p99_note"]
    enough = summarize_latency(np.random.default_rng(1).gamma(5, 0.002, 400), batch_size=1)
    assert enough["latency_p99_supported"] and enough["latency_p99_ci_low_ms"] <= enough["latency_p99_ms"]
    assert enough["latency_p99_ms"] <= enough["latency_p99_ci_high_ms"]
    assert enough["latency_median_ci_low_ms"] < enough["latency_median_ms"] < enough["latency_median_ci_high_ms"]


def test_measuring_continues_to_the_count_p99_needs_and_stops_at_the_maximum_duration():
    calls = []
    samples = measure(lambda b: calls.append(b), batch=1, warmup=0, iterations=30, min_duration_s=0,
                      tasks_needed=st.tasks_needed(0.99))
    assert len(samples) == 299
    slow = measure(lambda b: time.sleep(0.01), batch=1, warmup=0, iterations=30, min_duration_s=0,
                   tasks_needed=299, max_duration_s=0.1)
    assert 1 <= len(slow) < 30


def test_nan_samples_are_not_tasks():
    out = summarize_latency(np.array([0.001] * 300 + [np.nan] * 5), batch_size=1)
    assert out["iterations"] == 300 and out["latency_nan_samples"] == 5 and np.isfinite(out["latency_median_ms"])


# --- noise ---------------------------------------------------------------------------------------

def test_steal_and_other_processes_from_two_proc_stat_readings():
    zero = dict.fromkeys(("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), 0.0)
    # 2 cores for 10 s = 20 CPU-s: 6.2 s busy (we used 4.0 of it), 6.2 steal, the rest idle.
    after = {**zero, "user": 5.0, "system": 1.2, "steal": 6.2, "idle": 7.6}
    out = noise.noise_between(zero, after, own_cpu_s=4.0, wall_s=10.0)
    assert out["cpu_steal_percent"] == pytest.approx(31.0)
    assert out["other_processes_cores"] == pytest.approx(0.22)
    noisy, reason = noise.noise_reason(0.14, out["cpu_steal_percent"], out["other_processes_cores"])
    assert noisy and reason == "IQR/median 0.14 > 0.10: steal 31%, other processes 0.2 cores"
    quiet, why = noise.noise_reason(0.03, 0.0, 0.0)
    assert not quiet and why == "IQR/median 0.03"
    assert "engine itself varied" in noise.noise_reason(0.5, 0.0, 0.0)[1]


def test_cpu_noise_sees_this_process_and_reads_proc_stat():
    start = noise._own_cpu_s()
    with noise.CpuNoise() as seen:
        while noise._own_cpu_s() - start < 0.05:  # burn CPU time, however busy the machine is
            pass
    assert seen.result["own_cores"] > 0
    if Path("/proc/stat").is_file():
        assert np.isfinite(seen.result["cpu_steal_percent"]) and seen.result["other_processes_cores"] >= 0


def test_one_outlier_does_not_flag_a_run_noisy():
    samples = np.full(400, 1.0)
    samples[::40] = 50.0  # a preempted task every 40: the CV explodes, the IQR does not
    assert samples.std(ddof=1) / samples.mean() > 0.10 and st.robust_dispersion(samples) == 0.0


# --- runoff --------------------------------------------------------------------------------------

def test_round_order_rotates_every_engine_through_every_position():
    engines = ["A", "B", "C"]
    orders = [runoff.round_order(engines, r) for r in range(3)]
    assert orders == [["A", "B", "C"], ["B", "C", "A"], ["C", "A", "B"]]
    assert [runoff.round_order(["A", "B"], r) for r in range(2)] == [["A", "B"], ["B", "A"]]


def runoff_rows(values: dict[tuple[str, str], list[float]], model="M", p99_factor=1.5) -> pd.DataFrame:
    rows = []
    for (backend, precision), medians in values.items():
        for r, median in enumerate(medians):
            rows.append({"device": "cpu", "dataset": "digits", "input_size": 32, "model": model, "backend": backend,
                         "precision": precision, "round": r, "latency_median_ms": median,
                         "latency_p99_ms": median * p99_factor, "latency_iqr_ratio": 0.02,
                         "cpu_steal_percent": 0.0, "other_processes_cores": 0.0})
    return pd.DataFrame(rows)


def test_between_round_intervals_and_ratio_paired_by_round():
    # A drift over the rounds moves both engines alike: the paired ratio stays exactly 0.5.
    drift = [1.0, 1.2, 1.4, 1.1, 1.3, 1.5]
    frame = runoff_rows({("ort", "fp32"): drift, ("ort", "int8"): [d / 2 for d in drift]})
    out = runoff.round_statistics(frame).set_index("precision")
    assert out.loc["fp32", "rounds"] == 6
    assert out.loc["fp32", "latency_median_rounds_ci_low_ms"] == 1.0
    assert out.loc["fp32", "latency_median_rounds_ci_high_ms"] == 1.5
    assert out.loc["int8", "latency_median_vs_fp32_rounds_ci_low"] == pytest.approx(0.5)
    assert out.loc["int8", "latency_median_vs_fp32_rounds_ci_high"] == pytest.approx(0.5)


def test_the_noise_flag_describes_the_measurement_the_latency_comes_from():
    """Where the runoff ran, the decision's latency is its median over rounds, so its 'noisy' flag and reason
    are the rounds' (median over rounds of each round's IQR/median), not the single run's; elsewhere the
    single run's. The figures flag the value they draw the same way."""
    from workflow_scripts.figures.plots import ratio_from_rounds, rounds_per_image

    frame = runoff_rows({("ort", "fp32"): [1.0] * 6, ("ort", "int8"): [0.5] * 6})
    frame.loc[frame["precision"] == "int8", "latency_iqr_ratio"] = [0.3, 0.3, 0.05, 0.4, 0.2, 0.3]
    stats_ = runoff.round_statistics(frame).set_index("precision")
    assert not stats_.loc["fp32", "runoff_high_variation"]
    assert stats_.loc["int8", "runoff_high_variation"]
    assert stats_.loc["int8", "runoff_noise_reason"].startswith("IQR/median 0.30 > 0.10")
    single = pd.DataFrame([{"device": "cpu", "dataset": "digits", "input_size": 32, "model": model, "backend": "ort",
                            "precision": precision, "latency_median_ms": 1.0, "latency_p99_ms": 2.0,
                            "high_variation": noisy, "noise_reason": f"single run {noisy}", "valid": True}
                           for model in ("M", "N") for precision, noisy in (("fp32", True), ("int8", False))])
    latency = runoff.merge_round_statistics(single, frame)  # the runoff measured model M only
    engines = dm.engine_table({"latency": latency}).set_index(["model", "precision"])
    assert not engines.loc[("M", "fp32"), "high_variation"]  # the single run was noisy, the rounds were not
    assert engines.loc[("M", "int8"), "high_variation"]
    assert engines.loc[("M", "int8"), "noise_reason"].startswith("IQR/median 0.30 > 0.10")
    assert engines.loc[("N", "fp32"), "high_variation"] and engines.loc[("N", "fp32"), "noise_reason"] == "single run True"
    assert not engines.loc[("N", "int8"), "high_variation"]
    drawn = rounds_per_image(latency).set_index(["model", "precision"])["high_variation"]
    assert drawn.to_dict() == {("M", "fp32"): False, ("M", "int8"): True, ("N", "fp32"): True, ("N", "int8"): False}
    ratio = ratio_from_rounds(latency).set_index(["model", "precision"])["high_variation"]
    assert ratio[("M", "fp32")] == False and ratio[("N", "fp32")] == True  # noqa: E712


def test_runoff_rows_keep_their_engines_backend_and_unlabelled_rows_are_left_out(tmp_path):
    frame = runoff_rows({("litert", "fp32"): [1.0] * 6, ("openvino", "fp32"): [2.0] * 6})
    written = frame.assign(backend="runoff")  # what the job's provenance column would overwrite
    path = tmp_path / "cpu" / "onnx" / "digits_32px" / "M" / runoff.RUNOFF_FILE
    path.parent.mkdir(parents=True)
    written.to_parquet(path)
    assert not len(runoff.read_runoff([str(path)], tmp_path))
    frame.to_parquet(path)
    back = runoff.read_runoff(runoff.find_runoff_files(tmp_path), tmp_path)
    assert set(back["backend"]) == {"litert", "openvino"} and set(back["device"]) == {"cpu"}


# --- ties in the decision -------------------------------------------------------------------------

def candidates(p99: dict[tuple[str, str], float], mb: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"backend": b, "precision": p, "p99_ms": v, "p99_ci_low_ms": v * 0.9,
                          "p99_ci_high_ms": v * 1.1, "engine_mb": mb[(b, p)], "top1_percent": 90.0}
                         for (b, p), v in p99.items()])


def test_candidates_the_rounds_cannot_tell_apart_are_a_tie_decided_by_size():
    # fp16 and fp32 alternate which is faster round by round: a tie; int8 is slower in every round.
    frame = runoff_rows({("litert", "fp32"): [1.00, 1.02, 0.99, 1.03, 1.00, 1.01],
                         ("litert", "fp16"): [1.01, 1.00, 1.00, 1.02, 1.01, 1.00],
                         ("litert", "int8"): [1.30, 1.40, 1.35, 1.32, 1.31, 1.38]})
    ranked = candidates({("litert", "fp32"): 1.5, ("litert", "fp16"): 1.51, ("litert", "int8"): 2.0},
                        {("litert", "fp32"): 2.0, ("litert", "fp16"): 1.0, ("litert", "int8"): 0.5})
    group = {"device": "cpu", "dataset": "digits", "input_size": 32, "model": "M"}
    tied, chosen, note, _, _ = ties.break_ties(ranked, "latency", frame, group, margin=0.0)
    assert [ranked.loc[t, "precision"] for t in tied] == ["fp32", "fp16"]
    assert ranked.loc[chosen, "precision"] == "fp16"
    assert note.startswith("tie within measurement noise: litert fp32, litert fp16") and "by size (1 MB)" in note
    # A candidate slower in all six paired rounds by more than the margin is told apart.
    slower, how = ties.compare(ranked.iloc[0], ranked.iloc[2], "latency", ties._rounds_of(frame, group, "latency_p99_ms"),
                               margin=0.05)
    assert slower and "6 paired rounds" in how


# MobileNetV3Small's LiteRT engines in one runoff on the 2-core AMD EPYC (session 10, a rerun of
# benchmarks/decision_stability.sh): the VM switches between a fast and a slow phase (FP16's median 0.078 or
# 0.177 ms); in the slow one INT8's p99 ties FP16's, while its median is slower in every round but the
# sixth, where the phase changed between the engines' turns.
MOBILENET_ROUNDS = {
    ("litert", "fp16"): ([0.0776, 0.0777, 0.1766, 0.1763, 0.0778, 0.1788, 0.1767, 0.1771, 0.1730, 0.1736, 0.1773, 0.1775],
                         [0.1930, 0.1086, 0.2312, 0.2249, 0.1098, 0.3025, 0.3043, 0.2477, 0.2908, 0.2161, 0.2337, 0.2988]),
    ("litert", "int8"): ([0.1094, 0.1081, 0.1912, 0.1915, 0.1091, 0.1096, 0.1915, 0.1930, 0.1930, 0.1927, 0.1927, 0.1942],
                         [0.1822, 0.1376, 0.2355, 0.2477, 0.1454, 0.1422, 0.2820, 0.2697, 0.2358, 0.2376, 0.2395, 0.3034]),
    ("litert", "fp32"): ([0.0769, 0.0777, 0.1790, 0.1763, 0.0775, 0.1739, 0.1783, 0.1731, 0.1764, 0.1761, 0.1765, 0.1754],
                         [0.1509, 0.1045, 0.2351, 0.2368, 0.1081, 0.2317, 0.5392, 0.2389, 0.2567, 0.2208, 0.2295, 0.3312]),
}


def test_a_tie_on_p99_is_narrowed_by_the_median_before_size_decides():
    """The three LiteRT engines cannot be told apart on p99; INT8, the smallest, is slower on the median in 11
    of 12 paired rounds (ratio about 1.09), so FP16 is chosen (by size among the rest) and the note says why.
    By size alone INT8 won, in the runs whose phase let its p99 tie."""
    group = {"device": "cpu", "dataset": "digits", "input_size": 32, "model": "M"}
    frame = pd.DataFrame([{**group, "backend": b, "precision": p, "round": r, "latency_median_ms": med,
                           "latency_p99_ms": p99}
                          for (b, p), (medians, p99s) in MOBILENET_ROUNDS.items()
                          for r, (med, p99) in enumerate(zip(medians, p99s))])
    sizes = {"fp16": 1.97, "int8": 1.25, "fp32": 3.83}
    ranked = pd.DataFrame([{"backend": b, "precision": p, "p99_ms": float(np.median(p99s)),
                            "p50_ms": float(np.median(medians)), "engine_mb": sizes[p], "top1_percent": 97.0}
                           for (b, p), (medians, p99s) in MOBILENET_ROUNDS.items()])
    tie = ties.break_ties(ranked, "latency", frame, group, margin=0.05)
    assert sorted(ranked.loc[tie.tied, "precision"]) == ["fp16", "fp32", "int8"]  # the p99 tie is named whole
    assert ranked.loc[tie.chosen, "precision"] == "fp16"
    assert tie.broken_by == "median latency, then size (1.97 MB)"
    assert "litert int8 is slower than litert fp16 on the median (median ratio 1.09" in tie.note
    assert [ranked.loc[label, "precision"] for label in tie.left_out] == ["int8"]
    # Size alone, as before: INT8.
    kept, left_out = ties.narrow_by_other_percentile(ranked, tie.tied, "latency", frame.drop(
        columns="latency_median_ms"), group, 0.05)
    assert kept == tie.tied and left_out == {}
    # With the median as the objective the p99 narrows instead, and INT8 is out on its median already.
    by_median = ties.break_ties(ranked, "p50", frame, group, margin=0.05)
    assert ranked.loc[by_median.chosen, "precision"] != "int8"


def test_without_rounds_overlapping_intervals_are_a_tie():
    ranked = candidates({("ort", "fp32"): 1.0, ("ov", "fp32"): 1.05, ("ov", "int8"): 3.0},
                        {("ort", "fp32"): 4.0, ("ov", "fp32"): 3.0, ("ov", "int8"): 1.0})
    tied, chosen, note, _, _ = ties.break_ties(ranked, "latency", None, {}, margin=0.0)
    assert len(tied) == 2 and ranked.loc[chosen, "backend"] == "ov" and "cannot be told apart" in note
    # Size as the objective: no latency tie rule, the first ranked is chosen.
    assert ties.break_ties(ranked, "size", None, {}, 0.0) == ([0], 0, "", "", {})


def test_decision_md_says_tie_and_names_the_tie_set(summary_dir):
    tables = dm.read_tables(summary_dir)
    budgets = dm.Budgets(max_drop_points=None, require_valid=False)
    # LiteRT fp32 and fp16 have the same latency fraction in the synthetic data: make their
    # intervals overlap widely, as two noisy single runs do.
    latency = tables["latency"].copy()
    latency["latency_p99_ci_low_ms"] = latency["latency_p99_ms"] * 0.5
    latency["latency_p99_ci_high_ms"] = latency["latency_p99_ms"] * 2.0
    decision = dm.decide({**tables, "latency": latency}, budgets)
    chosen = decision[decision["chosen"]]
    assert chosen["tie_note"].str.startswith("tie within measurement noise").all()
    text = dm.decision_markdown(decision, budgets)
    assert "**Tie within measurement noise**" in text and "tied with the chosen engine" in text
    assert "ties broken by the median latency (paired by round), then size, accuracy." in text
    size_first = dm.decision_markdown(decision, dm.Budgets(objective="size"))
    assert "ties broken by latency, accuracy." in size_first  # no percentile narrows a size tie


def test_run_summary_says_the_tie_and_shows_intervals_and_counts(summary_dir, tmp_path):
    from workflow_scripts.figures import run_summary

    tables = dm.read_tables(summary_dir)
    latency = tables["latency"].copy()
    latency["latency_p99_ci_low_ms"] = latency["latency_p99_ms"] * 0.5
    latency["latency_p99_ci_high_ms"] = latency["latency_p99_ms"] * 2.0
    tables = {**tables, "latency": latency}
    decision = dm.decide(tables, dm.Budgets(max_drop_points=None, require_valid=False))
    text = run_summary.render(tables, decision, summary_dir)
    assert text.count("Tie within measurement noise: ") == 2 and "noise: tie within" not in text
    assert "p50 ms [95% CI]" in text and "tasks/rounds" in text and "300/0" in text


# --- NaN samples (issue 25 item 8) -----------------------------------------------------------------

def test_nan_latency_samples_make_an_invalid_row_the_decision_never_ranks():
    cell = {"device": "cpu", "backend": "onnxruntime", "dataset": "digits", "model": "M", "input_size": 32}
    rows = pd.DataFrame([{**cell, "precision": p, "latency_median_ms": m, "latency_p99_ms": m * 1.2,
                          "throughput_images_per_s": 1000 / m if np.isfinite(m) else np.nan, "valid": True,
                          "engine_mb": 1.0, "batch_size": 1} for p, m in (("fp32", 2.0), ("int8", np.nan))])
    rng = np.random.default_rng(0)
    samples = pd.concat([pd.DataFrame({**cell, "precision": "fp32", "latency_ms": rng.gamma(5, 0.4, 400)}),
                         pd.DataFrame({**cell, "precision": "int8", "latency_ms": np.r_[rng.gamma(5, 0.1, 390),
                                                                                     [np.nan] * 10]})])
    latency = summarize.latency_table(rows, samples, seed=0, n_resamples=100).set_index("precision")
    assert not latency.loc["int8", "valid"] and latency.loc["fp32", "valid"]
    assert "NaN" in latency.loc["int8", "invalid_reason"]
    # Even a row still marked valid with a NaN median is never ranked, whatever the objective.
    nan_row = rows.assign(valid=True)
    for objective in ("latency", "p50", "throughput", "size"):
        decision = dm.decide({"latency": nan_row, "accuracy": pd.DataFrame()}, dm.Budgets(objective=objective))
        int8 = decision[decision["precision"] == "int8"].iloc[0]
        assert not int8["chosen"] and pd.isna(int8["rank"]) and "median unknown" in int8["rejection"]


# --- the decision CLI (issue 25 item 6) -------------------------------------------------------------

@pytest.fixture(scope="module")
def summary_dir(tmp_path_factory) -> Path:
    return write_quickstart_like(tmp_path_factory.mktemp("cli") / "results")


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflow_scripts.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, check=False)


@pytest.mark.parametrize("args,message", [
    (["--p99-ms", "-5"], "must be greater than 0"),
    (["--p99-ms", "nan"], "not a finite number"),
    (["--max-mb", "inf"], "not a finite number"),
    (["--max-drop", "nan"], "not a finite number"),
    (["--max-rss-mb", "0"], "must be greater than 0"),
])
def test_cli_refuses_budgets_that_are_not_positive_finite_numbers(summary_dir, args, message):
    done = cli(summary_dir, *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr


def test_cli_names_what_exists_for_a_mistyped_device_or_model(summary_dir):
    done = cli(summary_dir, "--device", "intel-xeon")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--device intel-xeon" in done.stderr and "devices measured: intel-xeon-processor" in done.stderr
    done = cli(summary_dir, "--model", "MobileNetV3")
    assert done.returncode == 2 and "models measured: DenseNet169, MobileNetV3Small" in done.stderr


def test_cli_refuses_parquet_into_a_missing_folder_and_a_truncated_table(summary_dir, tmp_path):
    done = cli(summary_dir, "--parquet", tmp_path / "no" / "such" / "d.parquet")
    assert done.returncode == 2 and "does not exist" in done.stderr and "mkdir -p" in done.stderr
    assert "Traceback" not in done.stderr
    broken = tmp_path / "summary"
    broken.mkdir()
    data = (summary_dir / "latency.parquet").read_bytes()
    (broken / "latency.parquet").write_bytes(data[: len(data) // 2])
    done = cli(broken)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "latency.parquet is unreadable" in done.stderr and "--forcerun summarize" in done.stderr


# --- the runoff rule on the real CLI (slow) ---------------------------------------------------------

@pytest.mark.slow
def test_runoff_rule_measures_every_engine_in_rotated_rounds_and_feeds_the_summary(tmp_path):
    from tests.cli import CELL, ONNX_DIR, tiny
    from tests.cli import snakemake as run_snakemake

    # The base phase only (max_rounds = rounds): the finalists' rounds are tests/test_runoff_elimination.py's.
    config = tiny(runoff={"rounds": 6, "max_rounds": 6, "min_duration_s": 0.0, "warmup": 1})
    run_snakemake(tmp_path, "results/summary/decision.md", config=config, timeout=1800)
    table = pd.read_parquet(tmp_path / ONNX_DIR / "latency_runoff.parquet")
    assert len(table) == 3 * 6 and set(table["precision"]) == {"fp32", "fp16", "int8"}
    # Rotated order: each engine takes each of the three positions twice over six rounds.
    assert (table.groupby("precision")["position"].value_counts() == 2).all()
    assert (table["tasks"] >= 299).all() and table["latency_p99_supported"].all()
    assert table["cpu_steal_percent"].notna().all() and table["noise_reason"].str.startswith("IQR/median").all()
    latency = pd.read_parquet(tmp_path / "results" / "summary" / "latency.parquet")
    assert (latency["rounds"] == 6).all() and latency["latency_p99_rounds_ci_high_ms"].notna().all()
    assert (latency["latency_median_rounds_ci_low_ms"] <= latency["latency_median_rounds_ms"]).all()
    decision = pd.read_parquet(tmp_path / "results" / "summary" / "decision.parquet")
    assert decision["chosen"].sum() == 1 and set(decision["latency_source"]) == {"6 interleaved rounds"}
    assert CELL["device"] in set(decision["device"])


def test_redecide_stability_decides_again_from_saved_rounds_and_from_job_logs(tmp_path, capsys):
    """benchmarks/redecide_stability.py puts each rerun's rounds (runoffN.parquet, or the per-round lines of
    older work folders' job logs) into the copy's summary and decides again: from the same rounds, the two
    sources give the decision the summary's own rounds give."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import redecide_stability

    work = tmp_path / "decision_stability.x"
    summary = write_quickstart_like(work / "results", flags=False, runoff=True)
    budgets = dm.Budgets()
    expected = dm.write_decision(summary, budgets, summary / "decision.md", summary / "decision.parquet")
    rounds = pd.read_parquet(summary / "runoff.parquet")
    (work / "rerun1.log").write_text("")
    rounds.to_parquet(work / "runoff1.parquet")
    (work / "rerun2.log").write_text("")
    for model, part in rounds.groupby("model"):
        lines = [f"2026-12-04 22:05:31,179 INFO workflow_scripts.stages.runoff: round {int(r['round']) + 1}/6 "
                 f"{r['backend']} {r['precision']}: median {r['latency_median_ms']:.6f} ms, p99 "
                 f"{r['latency_p99_ms']:.6f} ms, 299 tasks; IQR/median 0.02" for _, r in part.iterrows()]
        (work / f"rerun2.{model}.log").write_text("\n".join(lines) + "\n")
    records = redecide_stability.redecide(work)
    want = {m: f"{g.iloc[0]['backend']} {g.iloc[0]['precision']}"
            for m, g in expected[expected["chosen"].astype(bool)].groupby("model")}
    for rerun, source in ((1, "runoff1.parquet"), (2, "job logs")):
        got = {r["model"]: r["chosen"] for r in records if r["rerun"] == rerun}
        assert got == want and {r["source"] for r in records if r["rerun"] == rerun} == {source}
    redecide_stability.main([str(work)])
    out = capsys.readouterr().out
    assert want and all(f"{model}: {engine} 2/2" in out for model, engine in want.items())
