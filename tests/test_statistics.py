"""workflow_scripts.measure.statistics against SciPy called directly, and intervals that cover the truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from workflow_scripts.measure import statistics as st


def scipy_bootstrap(data, statistic, paired=False, seed=0, n_resamples=st.N_RESAMPLES):
    """scipy.stats.bootstrap with the module's method and seeding, for comparison."""
    result = stats.bootstrap(data, statistic, paired=paired, vectorized=True, n_resamples=n_resamples, batch=st.BATCH,
                             method="percentile", confidence_level=0.95, **st._rng_kwargs(seed))
    return result.confidence_interval.low, result.confidence_interval.high


def test_median_ci_is_scipys_bootstrap():
    x = np.random.default_rng(1).lognormal(1.0, 0.3, 80)
    median, low, high = st.median_ci(x, seed=7)
    assert median == np.median(x)
    expected = scipy_bootstrap((x,), lambda s, axis: np.median(s, axis=axis), seed=7)
    assert (low, high) == pytest.approx(expected)
    assert low < median < high


def test_latency_statistics_percentiles_and_per_image_interval():
    x = np.arange(1.0, 301.0)
    out = st.latency_statistics(x, batch_size=4)
    assert out["latency_p90_ms"] == np.percentile(x, 90) and out["latency_p99_ms"] == np.percentile(x, 99)
    assert out["latency_median_ms"] == 150.5 and out["latency_samples"] == 300
    # Order statistics: the median's 95% CI of 300 values and the p99's (the count supports it).
    assert (out["latency_median_ci_low_ms"], out["latency_median_ci_high_ms"]) == st.order_statistic_ci(x, 0.5)[:2]
    assert out["latency_p99_supported"] and out["latency_p99_ci_high_ms"] <= 300
    assert out["latency_per_image_median_ci_low_ms"] == pytest.approx(out["latency_median_ci_low_ms"] / 4)


def test_wilson_interval_is_binomtests():
    low, high = st.wilson_interval(37, 50)
    ci = stats.binomtest(37, 50).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((ci.low, ci.high))
    # Known value (Wilson 1927 / Newcombe 1998 table): 81/263 -> [0.2553, 0.3662].
    assert st.wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-4)
    assert np.isnan(st.wilson_interval(0, 0)[0])


def test_paired_difference_is_scipys_paired_bootstrap():
    rng = np.random.default_rng(2)
    a = (rng.random(300) < 0.8).astype(float)
    b = np.where(rng.random(300) < 0.1, 1 - a, a)  # flip 10% of the answers
    diff, low, high = st.paired_difference_ci(a, b, seed=3)
    assert diff == pytest.approx(a.mean() - b.mean())
    expected = scipy_bootstrap((a, b), lambda x, y, axis: x.mean(axis=axis) - y.mean(axis=axis), paired=True, seed=3)
    assert (low, high) == pytest.approx(expected)


def test_paired_difference_of_identical_predictions_is_exactly_zero():
    a = (np.arange(100) % 3 == 0).astype(float)
    assert st.paired_difference_ci(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        st.paired_difference_ci(a, a[:-1])


def test_ratio_of_medians_is_scipys_two_sample_bootstrap():
    rng = np.random.default_rng(4)
    a, b = rng.normal(5, 0.5, 50), rng.normal(10, 1.0, 70)
    ratio, low, high = st.ratio_of_medians_ci(a, b, seed=5)
    assert ratio == pytest.approx(np.median(a) / np.median(b))
    expected = scipy_bootstrap((a, b), lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis), seed=5)
    assert (low, high) == pytest.approx(expected)


def test_repeat_statistics_is_the_t_interval():
    x = np.array([10.0, 11.0, 12.5, 9.5, 10.5])
    out = st.repeat_statistics(x)
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert out["runs"] == 5 and out["mean"] == pytest.approx(x.mean()) and out["std"] == pytest.approx(x.std(ddof=1))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((low, high))
    single = st.repeat_statistics([3.0])
    assert single["mean"] == 3.0 and np.isnan(single["std"]) and np.isnan(single["ci_low"])


def test_too_few_samples_give_no_interval():
    assert np.isnan(st.median_ci([1.0])[1]) and np.isnan(st.median_ci([])[0])
    assert np.isnan(st.ratio_of_medians_ci([1.0], [2.0, 3.0])[1])


def test_intervals_contain_the_truth_in_most_trials():
    """Coverage sanity check: 95% intervals on simulated data contain the true value about 95% of the time."""
    rng = np.random.default_rng(6)
    trials = 60
    hits = {"median": 0, "wilson": 0, "drop": 0, "ratio": 0}
    for trial in range(trials):
        x = rng.exponential(2.0, 150)  # true median 2 ln 2
        _, low, high = st.median_ci(x, n_resamples=500, seed=trial)
        hits["median"] += low <= 2 * np.log(2) <= high
        k = rng.binomial(400, 0.7)
        low, high = st.wilson_interval(k, 400)
        hits["wilson"] += low <= 0.7 <= high
        # FP32 right on 80% of images; the other engine loses 10% of those and gains none: true drop 0.08.
        ref = (rng.random(400) < 0.8).astype(float)
        other = ref * (rng.random(400) >= 0.1)
        _, low, high = st.paired_difference_ci(ref, other, n_resamples=500, seed=trial)
        hits["drop"] += low <= 0.08 <= high
        y = rng.exponential(4.0, 150)  # true median ratio 0.5
        _, low, high = st.ratio_of_medians_ci(x, y, n_resamples=500, seed=trial)
        hits["ratio"] += low <= 0.5 <= high
    for name, count in hits.items():
        assert count / trials >= 0.85, (name, count)
