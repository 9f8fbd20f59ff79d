"""Interval estimates for the summary tables, all delegated to SciPy's implementations.

- latency: median and p99 with distribution-free 95% CIs from binomial order statistics (the
  reasoning behind MLPerf LoadGen's early stopping), the task count, and whether that count can
  support the percentile at all (:func:`order_statistic_ci`, :func:`tasks_needed`); p90 as a point;
- latency across rounds (several measurements of one engine, interleaved with the other engines of
  its model, :mod:`workflow_scripts.stages.runoff`): the same order-statistic CI over the round values, the
  uncertainty that holds across runs; and the paired test by round of two engines (:func:`paired_slower`),
  with which the runoff retires engines (:func:`finalists`) and the decision forms its tie set;
- latency ratios (quantized / FP32): ratio of medians with an independent two-sample bootstrap CI;
- top-1 accuracy: Wilson score interval (``binomtest(k, n).proportion_ci(method="wilson")``);
- accuracy drop versus FP32: paired bootstrap CI over the same test images;
- compression repeats: mean, standard deviation and Student-t CI of the measured (non-warm-up) runs.

Bootstrap intervals use the percentile method: BCa needs a jackknife over every sample, which is
quadratic in the sample count (thousands of latency tasks, 10,000 CIFAR test images), and it
returns NaN for degenerate data such as two precisions that agree on every image.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special

CONFIDENCE = 0.95
N_RESAMPLES = 2000
BOOTSTRAP_METHOD = "percentile"
# Resamples evaluated at once: bounds memory to BATCH x sample size (10,000 test images, or long
# latency runs of a fast model, would otherwise need gigabytes at N_RESAMPLES at once).
BATCH = 100


def _stats():
    """``scipy.stats``, imported on first use: it takes ~0.7 s, and most jobs (a latency run, an engine
    build) need only :func:`order_statistic_ci`, which ``scipy.special`` serves (issue 29)."""
    from scipy import stats

    return stats


def _rng_kwargs(seed: int) -> dict:
    """The seeding argument scipy.stats.bootstrap accepts in the installed SciPy (``rng`` from 1.15)."""
    generator = np.random.default_rng(seed)
    if "rng" in inspect.signature(_stats().bootstrap).parameters:
        return {"rng": generator}
    return {"random_state": generator}


def _median(x, axis=-1):
    return np.median(x, axis=axis)


def bootstrap_ci(data: Sequence[np.ndarray], statistic, paired: bool = False, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*data, axis)`` via ``scipy.stats.bootstrap``, seeded."""
    with warnings.catch_warnings():
        # A constant sample gives a degenerate (zero-width) interval; that is the right answer here.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        result = _stats().bootstrap(tuple(np.asarray(d, dtype=float) for d in data), statistic, paired=paired,
                                 vectorized=True, batch=BATCH, confidence_level=confidence, n_resamples=n_resamples,
                                 method=BOOTSTRAP_METHOD, **_rng_kwargs(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def median_ci(samples, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
              seed: int = 0) -> tuple[float, float, float]:
    """Median of ``samples`` and its bootstrap confidence interval (NaN bounds below two samples)."""
    x = np.asarray(samples, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    median = float(np.median(x))
    if len(x) < 2:
        return median, float("nan"), float("nan")
    low, high = bootstrap_ci((x,), _median, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return median, low, high


def tasks_needed(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest samples whose largest is a ``confidence`` upper bound on the ``q``-quantile.

    The largest of n samples lies below the q-quantile with probability q**n, so it bounds the
    quantile once q**n <= 1 - confidence: 299 for p99 at 95% (59 for p95, 5 for the median).
    Below this count no sample, and so no interval, bounds the percentile from above.
    """
    if not 0 < q < 1:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    return int(np.ceil(np.log(1 - confidence) / np.log(q) - 1e-12))


def order_statistic_ci(samples, q: float, confidence: float = CONFIDENCE) -> tuple[float, float, bool]:
    """Distribution-free ``confidence`` interval [x_(l), x_(u)] of the ``q``-quantile, and whether it exists.

    The number B of samples below the true quantile is Binomial(n, q), whatever the distribution,
    so P(x_(l) <= Q <= x_(u)) >= P(l <= B < u). The tails are split equally where the count allows;
    where it does not, the whole upper tail left (q**n) is used and the lower tail takes the rest
    of 1 - confidence. NaN samples are dropped. Returns (low, high, supported); without a bound on
    both sides it returns (nan, nan, False).
    """
    x = np.sort(np.asarray(samples, dtype=float))
    x = x[np.isfinite(x)]
    n = len(x)
    alpha = 1 - confidence
    if n == 0:
        return float("nan"), float("nan"), False
    cdf = special.bdtr(np.arange(n + 1), n, q)  # cdf[k] = P(B <= k), as scipy.stats.binom.cdf computes it
    upper_tail = 1 - cdf[:n]  # upper_tail[u - 1] = P(B >= u), u = 1..n
    ok_u = np.flatnonzero(upper_tail <= alpha / 2 + 1e-12)
    if len(ok_u):
        u, lower_budget = int(ok_u[0]) + 1, alpha / 2
    elif q ** n <= alpha + 1e-12:
        u = n  # the largest sample: its upper tail q**n, the lower tail gets the rest
        lower_budget = alpha - q ** n
    else:
        return float("nan"), float("nan"), False
    ok_l = np.flatnonzero(cdf[:n] <= lower_budget + 1e-12)  # cdf[l - 1] = P(B < l), l = 1..n
    if not len(ok_l):
        return float("nan"), float("nan"), False
    l = int(ok_l[-1]) + 1
    return float(x[l - 1]), float(x[u - 1]), True


def latency_statistics(samples_ms, batch_size: int = 1, confidence: float = CONFIDENCE) -> dict:
    """Median and p99 task latency (ms) with order-statistic CIs, p90, the task count and p99 support.

    A percentile the count cannot support (fewer than :func:`tasks_needed` finite samples) is NaN,
    with ``latency_p99_supported`` False and the reason in ``latency_p99_note``; never a number.
    NaN samples (a failed timer) are not tasks: they are counted in ``latency_nan_samples``.
    """
    raw = np.asarray(samples_ms, dtype=float)
    x = raw[np.isfinite(raw)]
    n = len(x)
    median = float(np.median(x)) if n else float("nan")
    m_low, m_high, m_ok = order_statistic_ci(x, 0.5, confidence)
    p_low, p_high, p_ok = order_statistic_ci(x, 0.99, confidence)
    need = tasks_needed(0.99, confidence)
    note = "" if p_ok else f"p99 not supported: {n} tasks, a 95% bound on p99 needs at least {need}"
    return {
        "latency_samples": int(n),
        "latency_nan_samples": int(len(raw) - n),
        "latency_median_ms": median,
        "latency_median_ci_low_ms": m_low,
        "latency_median_ci_high_ms": m_high,
        "latency_p90_ms": float(np.percentile(x, 90)) if n else float("nan"),
        "latency_p99_ms": float(np.percentile(x, 99)) if p_ok else float("nan"),
        "latency_p99_ci_low_ms": p_low,
        "latency_p99_ci_high_ms": p_high,
        "latency_p99_supported": bool(p_ok),
        "latency_p99_tasks_needed": need,
        "latency_p99_note": note,
        "latency_per_image_median_ci_low_ms": m_low / batch_size,
        "latency_per_image_median_ci_high_ms": m_high / batch_size,
    }


def robust_dispersion(samples_ms) -> float:
    """Interquartile range / median of the finite samples (NaN when empty): a spread that a few
    outliers (a preempted task) cannot inflate, unlike the CV."""
    x = np.asarray(samples_ms, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan")
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / median) if median > 0 else float("nan")


def by_round(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """Rounds x engines table of ``column`` of runoff rows (engines as (backend, precision) columns): what the
    paired comparisons below take."""
    return frame.pivot_table(index="round", columns=["backend", "precision"], values=column, aggfunc="first")


def rounds_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Median of per-round values and the order-statistic CI of that median (NaN below 6 rounds at 95%)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan"), float("nan"), float("nan")
    low, high, _ = order_statistic_ci(x, 0.5, confidence)
    return float(np.median(x)), low, high


# The runoff's per-round column the decision's latency objectives compare (p99 for latency, median for p50).
RUNOFF_METRIC = {"latency": "latency_p99_ms", "p50": "latency_median_ms"}


def paired_slower(best: pd.Series, other: pd.Series, margin: float, confidence: float = CONFIDENCE,
                  candidates: int | None = None) -> tuple[bool, float, float, float, int]:
    """(slower, median ratio, CI low, CI high, paired rounds) of ``other`` / ``best`` over the rounds where
    both were measured (index: round). Slower only when the order-statistic ``confidence`` CI of the median
    ratio lies wholly above 1 and the median ratio exceeds 1 + ``margin``; NaN CI (too few rounds for
    ``confidence``) is never slower. With ``candidates`` the confidence is :func:`secondary_confidence`."""
    ratio = (other / best).replace([np.inf, -np.inf], np.nan).dropna()
    if candidates is not None:
        confidence = secondary_confidence(candidates, len(ratio))
    med, low, high = rounds_interval(ratio, confidence)
    slower = bool(np.isfinite(low) and low > 1 and med > 1 + margin)
    return slower, med, low, high, int(len(ratio))


def secondary_confidence(candidates: int, rounds: int) -> float:
    """Confidence of a comparison with a candidate other than the best: Bonferroni over the ``candidates - 1``
    others an engine can be compared with, so that checking every candidate, not only the best, does not
    make a truly tied engine more likely to be left out (12 rounds, 7 candidates: 99.2%, [2nd, 11th] of the
    sorted ratios). Where ``rounds`` cannot reach it, the most they can: [min, max], slower in every round
    (6 rounds: 96.9%), the test that retired an engine after the runoff's base rounds."""
    bonferroni = 1 - (1 - CONFIDENCE) / max(candidates - 1, 1)
    return min(bonferroni, 1 - 2 * 0.5 ** rounds) if rounds else bonferroni


def paired_best(rounds: pd.DataFrame, start, margin: float, engines: list | None = None):
    """The reference engine of the comparisons: ``start`` (the best by point value), unless paired by round it
    is shown slower (95%) than another of ``engines`` (default: the table's columns); then that one (the one
    it is slowest against), and so on. A median over rounds of each engine's own values can rank an engine
    first that was slower in every round it shared with another, when the load changed between rounds."""
    engines = list(rounds.columns) if engines is None else list(engines)
    current = start
    for _ in range(len(engines)):
        if current not in rounds:
            return current
        faster = []
        for other in engines:
            if other != current and other in rounds:
                slower, med, _, _, _ = paired_slower(rounds[other], rounds[current], margin)
                if slower:
                    faster.append((med, str(other), other))
        if not faster:
            break
        current = max(faster)[2]
    return current


def _reference(rounds: pd.DataFrame, margin: float):
    """The engines of a rounds x engines table and the reference of their comparisons (:func:`paired_best` from
    the lowest median over rounds; None below two engines)."""
    engines = list(rounds.columns)
    return engines, (paired_best(rounds, rounds.median().idxmin(), margin) if len(engines) >= 2 else None)


def finalists(rounds: pd.DataFrame, margin: float) -> tuple[list, dict]:
    """(finalists, retired) of a rounds x engines table, by the rule of :func:`workflow_scripts.decision.ties.break_ties`
    made stricter: an engine is retired when the best (lowest median over rounds) is shown faster at 95%, or
    any other engine at :func:`secondary_confidence`, paired by round (:func:`paired_slower`), *and* by more
    than the margin: the ratio's whole interval above 1 + ``margin`` (after 6 base rounds: slower by more
    than the margin in every round). An engine the decision could still call tied is never retired on
    a few rounds that happened to favour the other by a hair (two identical LiteRT engines measured 1.011-1.443
    of each other over six rounds on a 2-core VM, median 1.054). ``retired`` maps it to (the faster engine, the
    ratio's median, low, high, rounds). The finalists keep the table's column order."""
    engines, best = _reference(rounds, margin)
    if best is None:
        return engines, {}
    retired: dict = {}

    def clearly_slower(by, other, candidates=None):
        slower, med, low, high, n = paired_slower(rounds[by], rounds[other], margin, candidates=candidates)
        return slower and low > 1 + margin, (by, med, low, high, n)

    for other in engines:
        if other == best:
            continue
        slower, evidence = clearly_slower(best, other)
        if slower:
            retired[other] = evidence
            continue
        for by in engines:
            if by in (best, other):
                continue
            slower, evidence = clearly_slower(by, other, candidates=len(engines))
            if slower:
                retired[other] = evidence
                break
    return [e for e in engines if e not in retired], retired


def undecided(rounds: pd.DataFrame, margin: float) -> tuple[object, list]:
    """(reference, undecided) of a rounds x engines table of the finalists: the reference is
    :func:`paired_best`; an engine is undecided when, paired by round, its median ratio to the reference
    exceeds 1 + ``margin`` (it looks slower by more than the tie margin) while the 95% interval still
    reaches 1 (not shown slower). More rounds settle these; an engine whose ratio is within the margin is
    a tie whatever the rounds, and one shown slower is out."""
    engines, best = _reference(rounds, margin)
    if best is None:
        return (engines[0] if engines else None), []
    out = []
    for other in engines:
        if other == best:
            continue
        slower, med, _low, _high, _n = paired_slower(rounds[best], rounds[other], margin)
        if not slower and np.isfinite(med) and med > 1 + margin:
            out.append(other)
    return best, out


# A round whose engines ran, in the median over engines, at least this many times their own median over rounds
# was a slow period of the machine (the VM's slow phase: every engine ~2x), not of one engine.
SLOW_ROUND_FACTOR = 1.5


def round_slowdown(rounds: pd.DataFrame) -> pd.Series:
    """Per round (index), how much slower than usual every engine measured in it ran: the median over the
    round's engines of (engine's value in the round / its median over rounds). NaN where fewer than two engines
    were measured (one engine's own spread is not the machine's). ``rounds``: rounds x engines, e.g. medians."""
    values = rounds.apply(pd.to_numeric, errors="coerce")
    usual = values.median()
    relative = values / usual.where(usual > 0)
    factor = relative.median(axis=1, skipna=True)
    return factor.where(relative.notna().sum(axis=1) >= 2)


def slow_rounds(rounds: pd.DataFrame, factor: float = SLOW_ROUND_FACTOR) -> dict:
    """The rounds (round label -> slowdown) in which every engine measured ran at least ``factor`` times slower
    than its median over rounds, in the median over engines (:func:`round_slowdown`)."""
    slowdown = round_slowdown(rounds)
    return {r: float(v) for r, v in slowdown.items() if np.isfinite(v) and v >= factor}


def _ratio_of_medians(a, b, axis=-1):
    return np.median(a, axis=axis) / np.median(b, axis=axis)


def ratio_of_medians_ci(numerator, denominator, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                        seed: int = 0) -> tuple[float, float, float]:
    """median(numerator) / median(denominator) with a two-sample (independent) bootstrap CI."""
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan"), float("nan")
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2 or len(b) < 2:
        return ratio, float("nan"), float("nan")
    # The two latency runs are separate processes: resample each independently (paired=False).
    low, high = bootstrap_ci((a, b), _ratio_of_medians, paired=False, confidence=confidence,
                             n_resamples=n_resamples, seed=seed)
    return ratio, low, high


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n, from ``scipy.stats.binomtest``."""
    if n <= 0:
        return float("nan"), float("nan")
    ci = _stats().binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _mean_difference(a, b, axis=-1):
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_difference_ci(reference, other, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                         seed: int = 0) -> tuple[float, float, float]:
    """mean(reference) - mean(other) over paired observations, with a paired bootstrap CI.

    With per-image correctness (0/1) of FP32 and a quantized engine on the same images this is
    the top-1 drop; pairing keeps the images' shared difficulty out of the interval.
    """
    a = np.asarray(reference, dtype=float)
    b = np.asarray(other, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) == 0:
        return float("nan"), float("nan"), float("nan")
    diff = float(a.mean() - b.mean())
    if len(a) < 2:
        return diff, float("nan"), float("nan")
    low, high = bootstrap_ci((a, b), _mean_difference, paired=True, confidence=confidence,
                             n_resamples=n_resamples, seed=seed)
    return diff, low, high


def repeat_statistics(durations, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Count, mean, sample std, min, max and Student-t CI of the mean of repeated measured runs."""
    x = np.asarray(durations, dtype=float)
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    std = float(x.std(ddof=1)) if n > 1 else float("nan")
    if n > 1 and std > 0:
        stats = _stats()
        low, high = stats.t.interval(confidence, n - 1, loc=mean, scale=stats.sem(x))
    elif n > 1:
        low = high = mean  # identical repeats: the interval collapses
    else:
        low = high = float("nan")
    return {"runs": n, "mean": mean, "std": std, "min": float(x.min()) if n else float("nan"),
            "max": float(x.max()) if n else float("nan"), "ci_low": float(low), "ci_high": float(high)}


def paired_drop(reference_correct, other_correct, n_resamples: int = 2000, seed: int = 0,
                confidence: float = 0.95) -> tuple[float, float, float]:
    """Top-1 drop in points (reference - other) with a paired bootstrap CI over the same images.

    ``scipy.stats.bootstrap(..., paired=True)``, percentile method (BCa is NaN for engines that agree
    on every image). A zero-width interval means the two agree on every image. (The calibration
    study's drop; unlike :func:`paired_difference_ci` it is in points and evaluates all resamples at once.)
    """
    a = np.asarray(reference_correct, dtype=float)
    b = np.asarray(other_correct, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    drop = 100.0 * float(a.mean() - b.mean())
    if len(a) < 2:
        return drop, float("nan"), float("nan")
    if np.array_equal(a, b):
        return drop, 0.0, 0.0
    result = _stats().bootstrap((a, b), lambda x, y, axis=-1: 100.0 * (x.mean(axis=axis) - y.mean(axis=axis)),
                             paired=True, vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", **_rng_kwargs(seed))
    return drop, float(result.confidence_interval.low), float(result.confidence_interval.high)
