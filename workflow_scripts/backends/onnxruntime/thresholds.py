"""Calibration thresholds from the stored fine histograms: min-max, percentile and KL entropy as ONNX
Runtime computes them (:mod:`workflow_scripts.backends.onnxruntime.calibrate` collects the histograms;
its docstring explains the grids), and the ``TensorsData`` handed to ``quantize_static``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from workflow_scripts.backends.onnxruntime.calibrate import CalibrationStatistics

ENTROPY_BINS = 128          # ORT EntropyCalibrater num_bins (initial) and num_quantized_bins
PERCENTILE_BINS = 2048      # ORT PercentileCalibrater num_bins (initial)
FINE_PER_ENTROPY_BIN = 32   # the stored histogram's bins per entropy bin (= 2 per percentile bin)
HALF_FINE = ENTROPY_BINS // 2 * FINE_PER_ENTROPY_BIN  # fine bins between 0 and the anchor


def _grown_grid(batch_absmax: np.ndarray, num_bins: int) -> tuple[np.float32, int]:
    """(half range, bins) ORT's HistogramCollector.merge_histogram ends with for these batch maxima of |x|.

    The first batch with a non-zero range anchors ``num_bins`` bins over ±range; each later batch
    beyond the current half range adds whole bins of the same width on both sides, with ORT's own
    float32 arithmetic (``int((new - old) // stride + 1)`` bins per side).
    """
    threshold, bins = np.float32(0.0), num_bins
    for value in batch_absmax.astype(np.float32):
        if value <= threshold:
            continue
        if threshold == 0:
            threshold = value
            continue
        stride = np.float32(2) * threshold / np.float32(bins)
        half_increase = int((value - threshold) // stride + 1)
        bins += 2 * half_increase
        threshold = np.float32(half_increase * stride + threshold)
    return threshold, bins


def _smooth(rows: np.ndarray, valid: np.ndarray, eps: float = 0.0001) -> tuple[np.ndarray, np.ndarray]:
    """ORT's smooth_distribution per row (float32): zeros become eps, non-zeros lose eps * zeros / non-zeros."""
    nonzero = (rows != 0) & valid
    n_nonzero = nonzero.sum(axis=1)
    n_zero = valid.sum(axis=1) - n_nonzero
    ok = n_nonzero > 0
    eps1 = np.where(ok, eps * n_zero / np.maximum(n_nonzero, 1), 0.0).astype(np.float32)
    smoothed = rows.astype(np.float32) + np.where(nonzero, -eps1[:, None], np.float32(eps)).astype(np.float32)
    return np.where(valid, smoothed, 0).astype(np.float32), ok


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, num_quantized_bins: int = ENTROPY_BINS
                      ) -> tuple[np.float32, np.float32]:
    """ORT's ``HistogramCollector.get_entropy_threshold`` (before min/max clipping), vectorized over candidates.

    For each candidate i (half width in bins, from num_quantized_bins // 2 to the whole histogram): the
    reference p is the slice around the zero bin with the outliers folded into its end bins; the
    candidate q merges the slice into ``num_quantized_bins`` bins and spreads each (integer division)
    over the non-zero bins of p it covers. Both are smoothed; the KL divergence picks the threshold.
    """
    hist = np.asarray(hist, dtype=np.int64)
    num_bins = hist.size
    zero = num_bins // 2
    half_q = num_quantized_bins // 2
    i = np.arange(half_q, zero + 1)
    start = zero - i
    end = np.minimum(zero + i + 1, num_bins)
    length = end - start
    width = int(length.max())
    cum = np.concatenate([[0], np.cumsum(hist)])
    cols = np.arange(width)
    valid = cols[None, :] < length[:, None]
    index = np.minimum(start[:, None] + cols[None, :], num_bins - 1)
    sliced = np.where(valid, hist[index], 0)
    p = sliced.copy()
    p[:, 0] += cum[start]
    rows = np.arange(len(i))
    p[rows, length - 1] += cum[num_bins] - cum[end]
    nonzero = ((p != 0) & valid).astype(np.int64)
    merged = length // num_quantized_bins                          # bins per quantized bin
    k = np.arange(num_quantized_bins)
    lo = start[:, None] + k[None, :] * merged[:, None]
    quantized = cum[lo + merged[:, None]] - cum[lo]
    quantized[:, -1] += cum[end] - cum[start + num_quantized_bins * merged]
    nz_cum = np.concatenate([np.zeros((len(i), 1), np.int64), np.cumsum(nonzero, axis=1)], axis=1)
    klo = k[None, :] * merged[:, None]
    norm = nz_cum[rows[:, None], klo + merged[:, None]] - nz_cum[rows[:, None], klo]
    # q is an int64 array in ORT: the spread value is truncated.
    spread = np.where(norm != 0, quantized // np.maximum(norm, 1), 0)
    block = cols[None, :] // np.maximum(merged[:, None], 1)
    inside = cols[None, :] < (num_quantized_bins * merged)[:, None]
    q = np.where(inside, np.take_along_axis(spread, np.minimum(block, num_quantized_bins - 1), axis=1), 0)
    ps, p_ok = _smooth(p, valid)
    qs, q_ok = _smooth(q, valid)
    pk = ps / ps.sum(axis=1, keepdims=True, dtype=np.float32)
    qk = qs / np.where(q_ok, qs.sum(axis=1, dtype=np.float32), 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(valid, pk * np.log(pk / np.where(valid, qk, 1)), 0).astype(np.float32)
    kl = terms.sum(axis=1, dtype=np.float32)
    kl[~(p_ok & q_ok)] = np.inf
    best = int(np.argmin(kl))
    return edges[start[best]], edges[end[best]]


def _coarse(fine: np.ndarray, half_fine: int, half_bins: int, factor: int) -> np.ndarray:
    """Sum the fine histogram into ``2 * half_bins`` bins of ``factor`` fine bins, centred on zero."""
    need = half_bins * factor
    if need > half_fine:  # the coarse grid reaches beyond the counted range: empty bins
        fine = np.pad(fine, need - half_fine)
        half_fine = need
    off = half_fine - need
    return fine[off:off + 2 * need].reshape(-1, factor).sum(axis=1)


def _clip(low, high, minimum, maximum) -> tuple[np.float32, np.float32]:
    """ORT clips a histogram threshold to the observed range."""
    return np.float32(max(low, minimum)), np.float32(min(high, maximum))


def tensor_ranges(stats: CalibrationStatistics, method: str, percentile: float = 99.999,
                  symmetric: bool = False) -> dict[str, tuple[np.float32, np.float32]]:
    """(low, high) per tensor for ``method`` (minmax, entropy or percentile), with ORT's meanings."""
    minimum, maximum = stats.minimum.astype(np.float32), stats.maximum.astype(np.float32)
    ranges = {}
    if method == "minmax":
        for name, lo, hi in zip(stats.tensors, minimum, maximum):
            if symmetric:
                bound = np.float32(max(abs(lo), abs(hi)))
                ranges[name] = (np.float32(-bound), bound)
            else:
                ranges[name] = (np.float32(lo), np.float32(hi))
        return ranges
    if method not in ("entropy", "percentile"):
        raise ValueError(f"unknown calibration method {method!r}")
    if not stats.has_histograms:
        raise ValueError(f"method {method} needs histograms; these statistics hold only ranges")
    absmax = np.maximum(np.abs(stats.batch_min), np.abs(stats.batch_max))
    for t, name in enumerate(stats.tensors):
        half_fine = int(stats.half_bins[t])
        if half_fine == 0:  # all zeros
            ranges[name] = (np.float32(minimum[t]), np.float32(maximum[t]))
            continue
        fine = stats.fine_histogram(t)
        if method == "entropy":
            threshold, bins = _grown_grid(absmax[t], ENTROPY_BINS)
            hist = _coarse(fine, half_fine, bins // 2, FINE_PER_ENTROPY_BIN)
            edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(-threshold, threshold))
            low, high = entropy_threshold(hist, edges.astype(np.float32))
        elif not symmetric:
            threshold, bins = _grown_grid(absmax[t], PERCENTILE_BINS)
            hist = _coarse(fine, half_fine, bins // 2, FINE_PER_ENTROPY_BIN * ENTROPY_BINS // PERCENTILE_BINS)
            edges = np.histogram_bin_edges(np.zeros(0, np.float32), bins, range=(-threshold, threshold))
            cdf = np.cumsum(hist / hist.sum())
            cut = (100.0 - percentile) / 200.0
            low, high = edges[np.searchsorted(cdf, cut)], edges[np.searchsorted(cdf, 1.0 - cut)]
        else:
            # |x|: fold the signed histogram at zero (bin j and its mirror hold the same |x|).
            folded = fine[half_fine:] + fine[:half_fine][::-1]
            width = np.float32(stats.anchor[t]) / np.float32(HALF_FINE)
            cdf = np.cumsum(folded / folded.sum())
            # ORT takes the left edge of the bin where the cdf reaches the percentile.
            index = min(int(np.searchsorted(cdf, percentile / 100.0)), len(folded))
            edge = np.float32(index * width)
            low, high = -edge, edge
        ranges[name] = _clip(np.float32(low), np.float32(high), minimum[t], maximum[t])
    return ranges


def tensors_data(ranges: dict, method: str):
    """ORT's ``TensorsData`` for quantize_static (lowest/highest per tensor), tagged with ``method``."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

    enum = {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile}[method]
    return TensorsData(enum, {name: TensorData(lowest=np.float32(lo), highest=np.float32(hi))
                              for name, (lo, hi) in ranges.items()})


# --- the artifact ---------------------------------------------------------------------------------------
