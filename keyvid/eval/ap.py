"""Keyframe-localization metrics: AP@t (paper Appendix D) and onset precision/recall/offset.

AP@t, as Appendix D defines it and upstream computes it (XingruiWang/KeyVID
``motion_scores/network/audiodataset.py::_precision``): for each ground-truth keypoint, a predicted
keypoint at most ``t`` frames away (``|d| <= t``, upstream's test; the paper says "lower than t")
makes it a match; several true keypoints may match the same prediction (no one-to-one
assignment). A clip scores ``N_match / N_true`` and AP@t is the mean over clips. Reported at
t = 2, 3, 5 (the paper quotes AP@3 = 60.57 % and AP@5 = 77.92 %).

A clip with no ground-truth keypoint has no defined score. By default it is left out of the mean
(``empty_clip_score=None``) and counted in ``num_skipped``; pass ``0.5`` to reproduce upstream, which
scores such clips 0.5. A clip with true keypoints but no prediction scores 0.

Keypoints from curves (``curve_peaks``) follow upstream's evaluation: min-max normalise, Gaussian
smoothing with sigma 1.5, ``scipy.signal.find_peaks(distance=5)`` peaks only, with prominence 0.1
on the ground-truth motion curve and 0.0 on the prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

THRESHOLDS = (2, 3, 5)


@dataclass(frozen=True)
class APResult:
    ap: dict[int, float]  # threshold (frames) -> mean per-clip match rate; NaN if no clip counted
    num_clips: int  # clips that entered the mean
    num_skipped: int  # clips left out because they have no true keypoint


@dataclass(frozen=True)
class OnsetResult:
    precision: float  # predicted peaks within tolerance of some true onset / predicted peaks
    recall: float  # true onsets within tolerance of some predicted peak / true onsets
    mean_offset_frames: float  # signed (pred - true) over matched true onsets; > 0 means late
    mean_abs_offset_frames: float
    num_pred: int
    num_true: int


def _as_frames(points: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(points)
    if arr.ndim != 1:
        raise ValueError(f"keypoints must be a 1-D list of frame indices, got shape {arr.shape}")
    return arr.astype(np.int64)


def _nearest_distance(sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Signed distance ``target - source`` to the nearest target, per source (ties: earlier target)."""
    diff = targets[None, :] - sources[:, None]
    return diff[np.arange(len(sources)), np.abs(diff).argmin(axis=1)]


def clip_match_rate(pred: Sequence[int], true: Sequence[int], t: int) -> float | None:
    """``N_match / N_true`` for one clip, or None when it has no true keypoint."""
    pred_a, true_a = _as_frames(pred), _as_frames(true)
    if len(true_a) == 0:
        return None
    if len(pred_a) == 0:
        return 0.0
    return float(np.mean(np.abs(_nearest_distance(true_a, pred_a)) <= t))


def average_precision(
    preds: Sequence[Sequence[int]],
    trues: Sequence[Sequence[int]],
    thresholds: Sequence[int] = THRESHOLDS,
    empty_clip_score: float | None = None,
) -> APResult:
    """AP@t over clips from keypoint frame indices (one list per clip in ``preds`` and ``trues``)."""
    if len(preds) != len(trues):
        raise ValueError(f"{len(preds)} predicted clips but {len(trues)} ground-truth clips")
    scores: dict[int, list[float]] = {int(t): [] for t in thresholds}
    skipped = 0
    for pred, true in zip(preds, trues):
        if len(true) == 0 and empty_clip_score is None:
            skipped += 1
            continue
        for t in scores:
            rate = clip_match_rate(pred, true, t)
            scores[t].append(empty_clip_score if rate is None else rate)
    counted = len(preds) - skipped
    ap = {t: float(np.mean(v)) if v else float("nan") for t, v in scores.items()}
    return APResult(ap=ap, num_clips=counted, num_skipped=skipped)


def curve_peaks(
    curve: Sequence[float] | np.ndarray, prominence: float, sigma: float = 1.5, distance: int = 5
) -> np.ndarray:
    """Peak frames of a motion-score curve, by upstream's evaluation recipe (see module docstring)."""
    arr = np.asarray(curve, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"curve must be a non-empty finite 1-D array, got shape {arr.shape}")
    lo, hi = arr.min(), arr.max()
    arr = np.zeros_like(arr) if hi == lo else (arr - lo) / (hi - lo)
    return find_peaks(gaussian_filter1d(arr, sigma), distance=distance, prominence=prominence)[0].astype(np.int64)


def average_precision_from_curves(
    pred_curves: Sequence[Sequence[float]] | np.ndarray,
    true_curves: Sequence[Sequence[float]] | np.ndarray,
    thresholds: Sequence[int] = THRESHOLDS,
    empty_clip_score: float | None = None,
) -> APResult:
    """AP@t from per-frame curves: localizer scores against optical-flow motion scores."""
    preds = [curve_peaks(c, prominence=0.0) for c in pred_curves]
    trues = [curve_peaks(c, prominence=0.1) for c in true_curves]
    return average_precision(preds, trues, thresholds, empty_clip_score)


def onset_scores(
    pred_frames: Sequence[Sequence[int]],
    true_times: Sequence[Sequence[float]],
    fps: float = 24.0,
    tolerance: int = 2,
) -> OnsetResult:
    """Predicted peak frames against ground-truth impact times (seconds), pooled over clips.

    A true time ``s`` becomes frame ``round(s * fps)`` (the frame shown at that instant, frames
    starting at 0 s). Counts are summed over clips before dividing (micro-average), so clips with
    many events weigh more. Empty denominators give NaN.
    """
    if len(pred_frames) != len(true_times):
        raise ValueError(f"{len(pred_frames)} predicted clips but {len(true_times)} ground-truth clips")
    pred_hit = num_pred = true_hit = num_true = 0
    offsets: list[np.ndarray] = []
    for pred, times in zip(pred_frames, true_times):
        pred_a = _as_frames(pred)
        true_a = np.rint(np.asarray(times, dtype=np.float64) * fps).astype(np.int64)
        num_pred += len(pred_a)
        num_true += len(true_a)
        if len(pred_a) == 0 or len(true_a) == 0:
            continue
        pred_hit += int(np.sum(np.abs(_nearest_distance(pred_a, true_a)) <= tolerance))
        to_pred = _nearest_distance(true_a, pred_a)  # pred - true for each true onset
        matched = np.abs(to_pred) <= tolerance
        true_hit += int(matched.sum())
        offsets.append(to_pred[matched])
    off = np.concatenate(offsets) if offsets else np.zeros(0)
    nan = float("nan")
    return OnsetResult(
        precision=pred_hit / num_pred if num_pred else nan,
        recall=true_hit / num_true if num_true else nan,
        mean_offset_frames=float(off.mean()) if off.size else nan,
        mean_abs_offset_frames=float(np.abs(off).mean()) if off.size else nan,
        num_pred=num_pred,
        num_true=num_true,
    )
