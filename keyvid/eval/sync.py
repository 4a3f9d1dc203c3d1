"""A weight-free audio-visual sync score for clips whose impact times are known (the synthetic set).

RelSync and AlignSync need two pretrained networks; this score needs none. It asks the question
directly: do the motion peaks of the generated video land on the true impacts?

1. Motion curve of the generated frames at their own frame rate: classic optical flow
   (``keyvid.data.motion.motion_score``, OpenCV DIS, ``|u| + |v|`` per frame).
2. Peaks of the curve with ``keyvid.data.keyframes.detect_keypoints`` (moving average of 5,
   ``find_peaks(distance=5, prominence)``), on the curve scaled as ``(M - median(M)) / max(M)``
   and ``normalize="none"``. Why not the default min-max scaling: it stretches the jitter of a
   calm clip to [0, 1] and turns it into peaks (the known limitation noted in the README); dividing
   by the largest speed keeps a steady drift flat, so a calm video has no peaks.
3. Matching against the true impact frames ``round(t * fps)`` within ``tolerance`` frames,
   by ``keyvid.eval.ap.onset_scores`` (nearest neighbour, no one-to-one assignment):
   precision = predicted peaks near a true impact / predicted peaks, recall = true impacts near a
   predicted peak / true impacts, F1 = their harmonic mean, mean absolute offset over matched
   impacts (frames), signed offset (> 0: motion late).

Per clip and pooled (counts summed over clips before dividing). A clip with no true impact (calm)
adds its peaks to the pooled precision's denominator: spurious motion peaks are false positives.
Undefined ratios (no peak, no impact) are NaN, never 0 or 1 by convention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from keyvid.data.keyframes import detect_keypoints
from keyvid.data.motion import FlowBackend, motion_score
from keyvid.eval.ap import OnsetResult, onset_scores


@dataclass(frozen=True)
class SyncScore:
    precision: float
    recall: float
    f1: float
    mean_abs_offset_frames: float
    mean_offset_frames: float  # signed (peak - impact); > 0 means the motion comes late
    num_peaks: int
    num_impacts: int
    num_clips: int

    def as_dict(self) -> dict:
        return asdict(self)


def impact_peaks(curve: Sequence[float] | np.ndarray, prominence: float = 0.1) -> np.ndarray:
    """Peak frames of a motion curve, scaled by its largest value (see the module docstring)."""
    arr = np.asarray(curve, dtype=np.float64)
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    if top == 0.0:  # a frozen video: no motion, no peak
        return np.zeros(0, np.int64)
    return detect_keypoints((arr - np.median(arr)) / top, normalize="none", prominence=prominence).peaks


def video_peaks(
    frames: np.ndarray, backend: FlowBackend | None = None, prominence: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """"t h w c" uint8 frames -> (motion curve "t", peak frames)."""
    curve = motion_score(frames, backend)
    return curve, impact_peaks(curve, prominence)


def _f1(p: float, r: float) -> float:
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _to_score(res: OnsetResult, num_clips: int) -> SyncScore:
    return SyncScore(res.precision, res.recall, _f1(res.precision, res.recall), res.mean_abs_offset_frames,
                     res.mean_offset_frames, res.num_pred, res.num_true, num_clips)


def sync_scores(
    peaks: Sequence[Sequence[int]],
    impact_times: Sequence[Sequence[float]],
    fps: float | Sequence[float],
    tolerance: int = 2,
) -> tuple[list[SyncScore], SyncScore]:
    """Per-clip scores and the pooled score, from peak frames and true impact times (seconds).

    ``fps`` is the frame rate of each clip's frames (one value for all, or one per clip): a true
    time ``t`` is frame ``round(t * fps)``, so ``tolerance`` is in that clip's frames.
    """
    if len(peaks) != len(impact_times):
        raise ValueError(f"{len(peaks)} clips of peaks but {len(impact_times)} clips of impact times")
    rates = [float(fps)] * len(peaks) if np.isscalar(fps) else [float(f) for f in fps]
    if len(rates) != len(peaks):
        raise ValueError(f"{len(rates)} frame rates for {len(peaks)} clips")
    per_clip = [_to_score(onset_scores([p], [t], fps=r, tolerance=tolerance), 1)
                for p, t, r in zip(peaks, impact_times, rates)]
    # Pooling across frame rates: express every impact on its own clip's frame grid first.
    true_frames = [np.rint(np.asarray(t, np.float64) * r) for t, r in zip(impact_times, rates)]
    pooled = onset_scores(list(peaks), true_frames, fps=1.0, tolerance=tolerance)
    return per_clip, _to_score(pooled, len(peaks))


def score_videos(
    videos: Sequence[np.ndarray],
    impact_times: Sequence[Sequence[float]],
    fps: float | Sequence[float],
    tolerance: int = 2,
    prominence: float = 0.1,
    backend: FlowBackend | None = None,
) -> tuple[list[SyncScore], SyncScore, list[np.ndarray]]:
    """Sync score of decoded videos ("t h w c" uint8 each); also returns each motion curve."""
    curves, peaks = [], []
    for frames in videos:
        curve, p = video_peaks(frames, backend, prominence)
        curves.append(curve)
        peaks.append(p)
    per_clip, pooled = sync_scores(peaks, impact_times, fps, tolerance)
    return per_clip, pooled, curves
