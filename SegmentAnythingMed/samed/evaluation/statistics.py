"""Confidence intervals and correlations for evaluation results.

- 95% confidence interval of a mean: percentile bootstrap over the tasks (rows) being averaged, ``n_boot``
  resamples with a fixed seed. Tasks of one picture are resampled independently (not by picture).
- Correlations: Spearman's rank correlation and Pearson's linear correlation with their two-sided p-values
  (``scipy.stats``); NaN when there are fewer than 3 values or one side is constant.
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

DEFAULT_BOOTSTRAP = 1000
CONFIDENCE = 0.95


def finite(values: Sequence[Optional[float]]) -> np.ndarray:
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return arr[np.isfinite(arr)]


def bootstrap_ci(values: Sequence[Optional[float]], n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0,
                 confidence: float = CONFIDENCE) -> Tuple[float, float]:
    """(low, high) percentile-bootstrap interval of the mean of the finite ``values``; NaNs for fewer than two
    values (one value says nothing about the spread)."""
    x = finite(values)
    if x.size < 2 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // x.size)  # bound memory for large sets
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        means[start:start + k] = x[rng.integers(0, x.size, size=(k, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def correlation(x: Sequence[float], y: Sequence[float]) -> Dict[str, float]:
    """Spearman and Pearson correlations with p-values of paired finite values."""
    from scipy import stats

    xa = np.array([np.nan if v is None else v for v in x], float)
    ya = np.array([np.nan if v is None else v for v in y], float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    out = {"n": int(xa.size), "spearman_r": math.nan, "spearman_p": math.nan, "pearson_r": math.nan,
           "pearson_p": math.nan}
    if xa.size < 3 or np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = stats.spearmanr(xa, ya)
        p = stats.pearsonr(xa, ya)
    out.update(spearman_r=float(s[0]), spearman_p=float(s[1]), pearson_r=float(p[0]), pearson_p=float(p[1]))
    return out
