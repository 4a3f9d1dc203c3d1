"""A weight-free audio-visual sync score for clips whose impact times are known (synthetic sets).

RelSync and AlignSync need two pretrained networks; this score needs none. It asks the question
directly: do the motion events of the generated video land on the true impacts?

Two event detectors (``SyncDetector``; ``sync.detector`` in conf/evaluate.yaml):

``robust`` (default)
    1. Optical flow between consecutive frames at the clip's own frame rate (OpenCV DIS,
       ``keyvid.data.motion.ClassicFlow``), minus the camera: the per-pair median flow vector
       is subtracted, so a pan or a bobbing camera adds nothing.
    2. Event strength at frame ``t``: the change of that residual flow across the frame,
       ``|F(t -> t+1) - F(t-1 -> t)|`` per pixel (an impact is a sudden change of velocity; a
       steady motion, however fast, is no event), reduced by its 99th percentile over the
       pixels (the moving object, whatever its share of the frame).
    3. Peaks of that curve with ``find_peaks``: a moving average over ``smooth_s`` seconds,
       peaks at least ``distance_s`` apart with a prominence of ``prominence`` times the clip's
       own range ``max - median``, and rising at least ``min_change`` (1 %) of the frame height in
       pixels above the median (a calm clip's flow noise and drift stay below it: 0.16-0.43 px at
       64x96, against 2.5-6.6 px for impacts). Every length is in seconds, so frame rate does not matter.
``trajectory`` (a diagnostic for ``data_prep.synthetic``'s impact classes, not a general score)
    No flow: the moving object is the 2 % of pixels farthest from the clip's per-pixel temporal
    median, its height the centroid row of those pixels weighted by their distance; an impact is a
    lowest point of that height (a peak of the row index, prominence ``traj_prominence`` of the
    frame height, peaks ``distance_s`` apart). It asks only "is the object where the real clip has
    it, when", so it does not read the blur or texture shimmer of a generated video as events, which
    the flow detectors do (docs/learning.md, the split overfit run). It assumes one object falling or
    swinging down onto a static ground, as the synthetic bouncing ball and hammer do; on a calm clip
    it finds whatever the drift makes, so use it on impact clips only.
``legacy``
    The first detector, tuned on ``data_prep.synthetic``: mean flow *speed* ``|u| + |v|`` with
    no camera compensation, scaled as ``(M - median(M)) / max(M)``, moving average of 5 frames,
    ``find_peaks(distance=5, prominence=0.1)`` in frames (``keyvid.data.keyframes.detect_keypoints``).

On held-out footage from a second renderer (``data_prep.probe_scenes``: camera pans, other shapes,
sizes and frame rates) the robust detector orders in-sync > shifted > frozen on every family, with
in-sync 0.51-0.74 against the legacy detector's 0.26-0.33 (0.96 vs 0.61 on the training renderer);
docs/evaluation.md, "Sync metric check", has the table and what still limits it.

Matching is in time: a peak at frame ``k`` is at ``k / fps`` s; it matches a true impact within
``tolerance_s`` (default 0.1 s, 2.4 frames at 24 fps), nearest neighbour with no one-to-one
assignment: precision = peaks near an impact / peaks, recall = impacts near a peak / impacts,
F1 their harmonic mean; offsets are reported in frames at 24 fps (the output rate), signed > 0
when the motion comes late. Per clip and pooled (counts summed over clips before dividing). A clip
with no true impact (calm) adds its peaks to the pooled precision's denominator. A video with
impacts but no peak has recall 0 and F1 0; ratios with an empty denominator are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d, uniform_filter1d
from scipy.signal import find_peaks

from keyvid.data import FPS
from keyvid.data.keyframes import detect_keypoints
from keyvid.data.motion import ClassicFlow, FlowBackend, flow_to_score

DETECTORS = ("robust", "trajectory", "legacy")
OFFSET_FPS = float(FPS)  # offsets are reported in frames of the 24 fps output
DEFAULT_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class SyncDetector:
    name: str = "robust"
    smooth_s: float = 0.125
    distance_s: float = 5 / 24
    prominence: float = 0.1
    quantile: float = 0.99
    min_change: float = 0.01  # of the frame height, px: weaker changes are no event (flow noise, drift)
    traj_prominence: float = 0.03  # trajectory: of the frame height
    traj_share: float = 0.02  # trajectory: the share of pixels taken as the moving object

    def __post_init__(self):
        if self.name not in DETECTORS:
            raise ValueError(f"unknown sync detector {self.name!r}; expected one of {DETECTORS}")


@dataclass(frozen=True)
class SyncScore:
    precision: float
    recall: float
    f1: float
    mean_abs_offset_frames: float  # at OFFSET_FPS
    mean_offset_frames: float  # signed (peak - impact); > 0 means the motion comes late
    num_peaks: int
    num_impacts: int
    num_clips: int

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- curves and peaks


def camera_compensated(flow: np.ndarray) -> np.ndarray:
    """"n 2 h w" flow minus each pair's median flow vector (a pan or a shake of the camera)."""
    return flow - np.median(flow.reshape(len(flow), 2, -1), axis=2)[:, :, None, None]


def event_curve(flow: np.ndarray, quantile: float = 0.99) -> np.ndarray:
    """"(t-1) 2 h w" flow -> "t" event strength: quantile over pixels of the change of residual flow."""
    if len(flow) < 2:
        return np.zeros(len(flow) + 1)
    r = camera_compensated(np.asarray(flow, np.float32))
    change = np.sqrt(((r[1:] - r[:-1]) ** 2).sum(axis=1)).reshape(len(r) - 1, -1)
    v = np.quantile(change, quantile, axis=1).astype(np.float64)
    return np.concatenate([v[:1], v, v[-1:]])  # frame t: F(t -> t+1) vs F(t-1 -> t); ends repeat


def impact_peaks(curve: Sequence[float] | np.ndarray, prominence: float = 0.1) -> np.ndarray:
    """Legacy detector's peak frames of a speed curve, scaled by its largest value."""
    arr = np.asarray(curve, dtype=np.float64)
    top = float(np.max(np.abs(arr))) if arr.size else 0.0
    if top == 0.0:  # a frozen video: no motion, no peak
        return np.zeros(0, np.int64)
    return detect_keypoints((arr - np.median(arr)) / top, normalize="none", prominence=prominence).peaks


def event_peaks(curve: Sequence[float] | np.ndarray, fps: float, detector: SyncDetector = SyncDetector(),
                floor: float = 0.0) -> np.ndarray:
    """Robust detector's peak frames of an event curve (lengths in seconds, prominence of the clip's range).

    Peaks must also rise ``floor`` (curve units) above the curve's median.
    """
    arr = np.asarray(curve, dtype=np.float64)
    base = float(np.median(arr)) if arr.size else 0.0
    top = float(arr.max()) - base if arr.size else 0.0
    if top <= max(floor, 1e-6):  # frozen, steady, or only noise: no event
        return np.zeros(0, np.int64)
    width = max(1, int(round(detector.smooth_s * fps)))
    width += width % 2 == 0
    smooth = uniform_filter1d((arr - base) / top, width, mode="nearest")
    distance = max(1, int(round(detector.distance_s * fps)))
    peaks = find_peaks(smooth, distance=distance, prominence=detector.prominence)[0]
    # the floor applies to the raw curve near each peak: smoothing spreads a one-frame event (a kick)
    # over the window, so its smoothed height understates it
    near = maximum_filter1d(arr, width, mode="nearest")
    return peaks[near[peaks] - base >= floor].astype(np.int64)


def object_height(frames: np.ndarray, share: float = 0.02) -> np.ndarray:
    """"t h w c" frames -> "t" row of the moving object's centroid (larger = lower in the frame): the
    ``share`` of pixels farthest from the clip's per-pixel temporal median, weighted by that distance."""
    v = np.asarray(frames, np.float32)
    dist = np.abs(v - np.median(v, axis=0)).sum(axis=-1)  # "t h w"
    cut = np.quantile(dist.reshape(len(v), -1), 1.0 - share, axis=1)[:, None, None]
    weight = np.where(dist > cut, dist, 0.0)
    rows = np.arange(v.shape[1], dtype=np.float32)[None, :, None]
    mass = weight.sum(axis=(1, 2))
    centre = (weight * rows).sum(axis=(1, 2)) / np.maximum(mass, 1e-6)
    return np.where(mass > 0, centre, np.nan).astype(np.float64)


def trajectory_peaks(height: np.ndarray, fps: float, frame_height: int,
                     detector: SyncDetector = SyncDetector("trajectory")) -> np.ndarray:
    """Lowest points of ``object_height``: peaks with a prominence of ``traj_prominence`` x frame height."""
    h = np.asarray(height, np.float64)
    if not np.isfinite(h).any():  # a frozen video has no moving pixel
        return np.zeros(0, np.int64)
    h = np.where(np.isfinite(h), h, np.nanmedian(h))
    distance = max(1, int(round(detector.distance_s * fps)))
    return find_peaks(h, distance=distance, prominence=detector.traj_prominence * frame_height)[0].astype(np.int64)


def video_peaks(frames: np.ndarray, fps: float = 24.0, backend: FlowBackend | None = None,
                detector: SyncDetector = SyncDetector()) -> tuple[np.ndarray, np.ndarray]:
    """"t h w c" uint8 frames -> (curve "t", peak frames) with ``detector``."""
    if frames.ndim != 4 or len(frames) < 3:
        raise ValueError(f"need at least 3 frames 't h w c' for motion events, got shape {frames.shape}")
    if detector.name == "trajectory":
        height = object_height(frames, detector.traj_share)
        return height, trajectory_peaks(height, fps, frames.shape[1], detector)
    flow = (backend or ClassicFlow())(frames)
    if detector.name == "legacy":
        curve = flow_to_score(flow)
        return curve, impact_peaks(curve, detector.prominence)
    curve = event_curve(flow, detector.quantile)
    return curve, event_peaks(curve, fps, detector, detector.min_change * frames.shape[1])


# ----------------------------------------------------------------------------- matching


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def f1_from_counts(pred_hit: float, num_pred: float, true_hit: float, num_true: float) -> float:
    """F1 of pooled counts: 0 when impacts exist and none was found, NaN when a ratio is undefined."""
    p, r = _ratio(pred_hit, num_pred), _ratio(true_hit, num_true)
    if r == 0.0:
        return 0.0  # impacts and no peak near any: nothing was found
    if np.isnan(p) or np.isnan(r):
        return float("nan")
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _match(peaks_s: np.ndarray, true_s: np.ndarray, tol: float) -> tuple[int, int, np.ndarray]:
    """(peaks near an impact, impacts near a peak, signed offsets of matched impacts in s)."""
    if len(peaks_s) == 0 or len(true_s) == 0:
        return 0, 0, np.zeros(0)
    d = peaks_s[None, :] - true_s[:, None]  # "impacts peaks": peak - impact
    nearest = d[np.arange(len(true_s)), np.abs(d).argmin(axis=1)]
    hit = np.abs(nearest) <= tol + 1e-9
    return int((np.abs(d).min(axis=0) <= tol + 1e-9).sum()), int(hit.sum()), nearest[hit]


def _score(pred_hit, num_pred, true_hit, num_true, offsets, num_clips) -> SyncScore:
    nan = float("nan")
    off = np.concatenate(offsets) * OFFSET_FPS if offsets else np.zeros(0)
    return SyncScore(_ratio(pred_hit, num_pred), _ratio(true_hit, num_true),
                     f1_from_counts(pred_hit, num_pred, true_hit, num_true),
                     float(np.abs(off).mean()) if off.size else nan, float(off.mean()) if off.size else nan,
                     num_pred, num_true, num_clips)


def sync_scores(
    peaks: Sequence[Sequence[int]],
    impact_times: Sequence[Sequence[float]],
    fps: float | Sequence[float],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> tuple[list[SyncScore], SyncScore]:
    """Per-clip scores and the pooled score, from peak frames and true impact times (seconds).

    ``fps`` is the frame rate of each clip's frames (one value for all, or one per clip).
    """
    if len(peaks) != len(impact_times):
        raise ValueError(f"{len(peaks)} clips of peaks but {len(impact_times)} clips of impact times")
    rates = [float(fps)] * len(peaks) if np.isscalar(fps) else [float(f) for f in fps]
    if len(rates) != len(peaks):
        raise ValueError(f"{len(rates)} frame rates for {len(peaks)} clips")
    per_clip, totals, offsets = [], np.zeros(4, np.int64), []
    for p, t, r in zip(peaks, impact_times, rates):
        ps, ts = np.asarray(p, np.float64) / r, np.asarray(t, np.float64)
        ph, th, off = _match(ps, ts, tolerance_s)
        per_clip.append(_score(ph, len(ps), th, len(ts), [off], 1))
        totals += (ph, len(ps), th, len(ts))
        offsets.append(off)
    return per_clip, _score(*totals, offsets, len(peaks))


def score_videos(
    videos: Sequence[np.ndarray],
    impact_times: Sequence[Sequence[float]],
    fps: float | Sequence[float],
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    detector: SyncDetector = SyncDetector(),
    backend: FlowBackend | None = None,
) -> tuple[list[SyncScore], SyncScore, list[np.ndarray]]:
    """Sync score of decoded videos ("t h w c" uint8 each); also returns each event curve."""
    rates = [float(fps)] * len(videos) if np.isscalar(fps) else [float(f) for f in fps]
    curves, peaks = [], []
    for frames, r in zip(videos, rates):
        curve, p = video_peaks(frames, r, backend, detector)
        curves.append(curve)
        peaks.append(p)
    per_clip, pooled = sync_scores(peaks, impact_times, rates, tolerance_s)
    return per_clip, pooled, curves
