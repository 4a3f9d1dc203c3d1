"""Percentile bootstrap over clips: the one resampling rule every interval in the evaluation uses.

Each interval is the 2.5th and 97.5th percentile of a statistic recomputed on clips drawn with
replacement (``draws`` times, from ``numpy.random.default_rng(seed)``), so two figures computed from
the same clips with the same seed resample the same clips.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["resample", "interval", "mean_interval", "statistic_interval"]


def resample(n: int, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """"draws n" indices of n clips drawn with replacement."""
    return np.random.default_rng(seed).integers(0, n, size=(draws, n))


def interval(samples: Sequence[float]) -> tuple[float, float]:
    """95 % percentile interval of bootstrap samples; non-finite samples are dropped, NaN if none is left."""
    s = np.asarray(samples, np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    return float(np.quantile(s, 0.025)), float(np.quantile(s, 0.975))


def mean_interval(values: Sequence[float], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean over clips (NaN for fewer than two clips)."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return (float("nan"), float("nan"))
    return interval(x[resample(x.size, draws, seed)].mean(axis=1))


def statistic_interval(rows: np.ndarray, statistic: Callable[[np.ndarray], float], draws: int = 2000,
                       seed: int = 0) -> tuple[float, float]:
    """95 % interval of ``statistic(rows[idx])`` over resampled clips: ``rows`` is one row per clip
    (e.g. counts to be pooled, or (generated, reference) pairs for a ratio of means)."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return (float("nan"), float("nan"))
    return interval([statistic(rows[idx]) for idx in resample(len(rows), draws, seed)])
