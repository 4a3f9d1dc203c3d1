"""Keyframe selection from a per-frame motion score (paper Section 3.1, Appendix B, Algorithm 1).

One definition shared by data prep (training labels), the three trainers (re-selection per
sample with a seed) and inference (keyframes from the localizer's predicted score).

Two behaviours, chosen with ``mode``:

``"paper"`` (default, for new training)
    Algorithm 1 as the paper writes it: the first frame, up to ``T_K/2 - 1`` randomly chosen
    peaks (sorted by time), one random valley strictly between each pair of consecutive selected
    keyframes when such a valley exists, then largest-remainder proportional fill over *all*
    gaps including the tail after the last anchor. The result always holds ``T_K`` distinct,
    sorted indices starting at 0.

``"upstream"`` (XingruiWang/KeyVID ``lvdm/data/avsync15.py::select_keyframe``, for parity)
    Peaks are drawn in random (unsorted) order and paired in that order, so a pair with
    ``p1 > p2`` gets its midpoint as a "valley"; the last detected valley is always appended;
    with no usable peak the anchors are ``[0, T - T/T_K*2]``; the fill covers only the gaps
    between anchors (frames after the last anchor are never chosen) and does not de-duplicate,
    so repeated indices can occur. The NumPy legacy RNG is consumed in upstream's order, so a
    ``numpy.random.RandomState(seed)`` reproduces upstream's ``np.random.seed(seed)`` outputs.

Detection (Appendix B.1) differs in one place, chosen with ``normalize``:
upstream applies ``prominence=0.1`` to the raw curve, so its meaning depends on the flow's
units; ``"minmax"`` (default) rescales each curve to [0, 1] first, which makes the threshold
relative and puts optical-flow labels and the localizer's sigmoid output on the same scale.
Smoothing is ``np.convolve(curve, ones(5)/5, mode="same")`` in both (zero-padded edges, as
upstream: a constant raw curve therefore gets a plateau peak mid-clip when ``normalize="none"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

MODES = ("paper", "upstream")
NORMALIZATIONS = ("minmax", "none")


@dataclass(frozen=True)
class KeyPoints:
    """Peaks and valleys of one motion curve, as frame indices into that curve."""

    peaks: np.ndarray  # (P,) int64, ascending
    valleys: np.ndarray  # (V,) int64, ascending
    smoothed: np.ndarray  # (T,) float64, the curve the detection ran on
    num_frames: int

    def window(self, start: int, length: int) -> "KeyPoints":
        """The keypoints inside frames ``[start, start + length)``, re-indexed from 0.

        Upstream detects on the whole video and selects inside a random 2 s window; this keeps
        that possible without re-running detection.
        """
        if start < 0 or length <= 0 or start + length > self.num_frames:
            raise ValueError(f"window [{start}, {start + length}) is outside the curve's {self.num_frames} frames")
        inside = lambda a: a[(a >= start) & (a < start + length)] - start  # noqa: E731
        return KeyPoints(inside(self.peaks), inside(self.valleys), self.smoothed[start : start + length], length)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name}={value!r}; expected one of {allowed}")


def validate_curve(curve, window: int = 5) -> np.ndarray:
    """Return ``curve`` as a 1-D float64 array, or raise a ValueError that says what is wrong."""
    arr = np.asarray(curve, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"motion curve must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError("motion curve is empty")
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.isfinite(arr))
        raise ValueError(f"motion curve has non-finite values at frames {bad[:10].tolist()}")
    if arr.size < window:
        raise ValueError(f"motion curve has {arr.size} frames, fewer than the smoothing window {window}")
    return arr


def normalize_curve(curve: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1]; a constant curve becomes all zeros (as upstream's ``normalize_label``)."""
    lo, hi = float(curve.min()), float(curve.max())
    if hi == lo:
        return np.zeros_like(curve)
    return (curve - lo) / (hi - lo)


def smooth_curve(curve: np.ndarray, window: int = 5) -> np.ndarray:
    """Appendix B.1 step 1: moving average, zero-padded edges (upstream's ``mode='same'``)."""
    return np.convolve(curve, np.ones(window) / window, mode="same")


def detect_keypoints(
    curve,
    *,
    window: int = 5,
    distance: int = 5,
    prominence: float = 0.1,
    normalize: str = "minmax",
) -> KeyPoints:
    """Appendix B.1: smooth, then ``find_peaks`` on the curve (peaks) and its negation (valleys)."""
    _check_choice("normalize", normalize, NORMALIZATIONS)
    arr = validate_curve(curve, window)
    if normalize == "minmax":
        arr = normalize_curve(arr)
    smoothed = smooth_curve(arr, window)
    peaks = find_peaks(smoothed, distance=distance, prominence=prominence)[0]
    valleys = find_peaks(-smoothed, distance=distance, prominence=prominence)[0]
    return KeyPoints(peaks.astype(np.int64), valleys.astype(np.int64), smoothed, arr.size)


def _check_counts(num_frames: int, num_keyframes: int) -> None:
    if num_keyframes < 2:
        raise ValueError(f"num_keyframes={num_keyframes} must be at least 2")
    if num_keyframes > num_frames:
        raise ValueError(f"num_keyframes={num_keyframes} is larger than the clip's {num_frames} frames")


def uniform_keyframes(num_frames: int, num_keyframes: int) -> np.ndarray:
    """The ablation baseline (paper Table 2): evenly spaced frames starting at 0."""
    _check_counts(num_frames, num_keyframes)
    return np.floor(np.arange(num_keyframes) * (num_frames / num_keyframes)).astype(np.int64)


def largest_remainder(weights: np.ndarray, total: int, capacity: np.ndarray | None = None) -> np.ndarray:
    """Split ``total`` slots in proportion to ``weights`` (Algorithm 1 lines 6-12).

    Floors of the ideal shares first, then one extra slot each to the largest fractional parts
    (stable: ties go to the earlier interval, as upstream's sort). With ``capacity``, no interval
    gets more than it can hold and the overflow goes to the next candidates in the same order.
    """
    weights = np.asarray(weights, dtype=np.float64)
    share = total * weights / weights.sum()
    alloc = np.floor(share).astype(np.int64)
    if capacity is not None:
        alloc = np.minimum(alloc, capacity)
    order = sorted(range(len(share)), key=lambda i: share[i] - np.floor(share[i]), reverse=True)
    remaining = total - int(alloc.sum())
    while remaining > 0:
        progressed = False
        for i in order:
            if remaining == 0:
                break
            if capacity is None or alloc[i] < capacity[i]:
                alloc[i] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot place {total} frames in intervals of capacity {capacity}")
    return alloc


def _fill_upstream(anchors: np.ndarray, num_keyframes: int) -> np.ndarray:
    """Upstream's padding step: only inner gaps, truncating linspace, no de-duplication."""
    n = num_keyframes - len(anchors)
    if n <= 0:
        return anchors
    lengths = np.diff(anchors)
    alloc = largest_remainder(lengths, n)
    added = [
        np.linspace(anchors[i], anchors[i + 1], alloc[i] + 1, endpoint=False).astype(int)[1:]
        for i in range(len(lengths))
    ]
    return np.sort(np.concatenate([anchors, *added]))


def _fill_paper(anchors: np.ndarray, num_frames: int, num_keyframes: int) -> np.ndarray:
    """Proportional fill over every gap, the tail included, never repeating a frame."""
    n = num_keyframes - len(anchors)
    if n <= 0:
        return anchors
    bounds = np.append(anchors, num_frames)  # the tail gap ends at the (exclusive) clip end
    lengths = np.diff(bounds)
    alloc = largest_remainder(lengths, n, capacity=lengths - 1)
    added = [
        np.floor(np.linspace(bounds[i], bounds[i + 1], alloc[i] + 1, endpoint=False)[1:]).astype(np.int64)
        for i in range(len(lengths))
        if alloc[i] > 0
    ]
    return np.sort(np.concatenate([anchors, *added]))


def _anchors_paper(kp: KeyPoints, num_keyframes: int, rng: np.random.Generator) -> np.ndarray:
    peaks = kp.peaks[kp.peaks > 0]  # frame 0 is always a keyframe already
    k = min(num_keyframes // 2 - 1, len(peaks))
    chosen = np.sort(rng.choice(peaks, k, replace=False)) if k > 0 else np.empty(0, np.int64)
    anchors = np.concatenate([[0], chosen]).astype(np.int64)
    valleys = []
    for p1, p2 in zip(anchors[:-1], anchors[1:]):
        between = kp.valleys[(kp.valleys > p1) & (kp.valleys < p2)]
        if len(between):
            valleys.append(int(rng.choice(between)))
    return np.unique(np.concatenate([anchors, np.asarray(valleys, np.int64)]))


def _anchors_upstream(kp: KeyPoints, num_frames: int, num_keyframes: int, rng: np.random.RandomState) -> np.ndarray:
    pos, neg = kp.peaks, kp.valleys
    if len(pos) == 0 or (len(pos) == 1 and pos[0] == 0):
        # upstream: [0, window - round(fps / (T_K / 2))] with window = 2 s = 2 * fps frames
        return np.array([0, num_frames - round(num_frames / num_keyframes)], dtype=np.float64)
    select_num = min(num_keyframes // 2, len(pos))
    peaks = rng.choice(pos, select_num, replace=False)  # kept in random order, as upstream
    if 0 not in peaks:
        peaks = np.insert(peaks, 0, 0)
    else:
        select_num -= 1
    valleys = []
    for i in range(select_num):
        p1, p2 = peaks[i], peaks[i + 1]
        between = neg[(neg > p1) & (neg < p2)]
        valleys.append(rng.choice(between, 1)[0] if len(between) else (p1 + p2) // 2)
    if len(neg) and neg[-1] not in valleys:
        valleys.append(neg[-1])
    return np.sort(np.unique(np.concatenate([peaks, np.asarray(valleys)]))).astype(np.float64)


def select_keyframes(
    keypoints: KeyPoints,
    num_keyframes: int = 12,
    *,
    rng: np.random.Generator | np.random.RandomState | int | None = None,
    mode: str = "paper",
) -> np.ndarray:
    """Algorithm 1: ``num_keyframes`` frame indices into the curve ``keypoints`` came from.

    ``rng`` is a seed or a NumPy generator: the same seed gives the same selection. Upstream
    mode needs the legacy ``RandomState`` (an int seed builds one) to reproduce upstream.
    """
    _check_choice("mode", mode, MODES)
    num_frames = keypoints.num_frames
    _check_counts(num_frames, num_keyframes)
    if mode == "paper":
        if not isinstance(rng, np.random.Generator):
            rng = np.random.default_rng(rng)
        anchors = _anchors_paper(keypoints, num_keyframes, rng)
        return _fill_paper(anchors, num_frames, num_keyframes)[:num_keyframes]
    if not isinstance(rng, np.random.RandomState):
        rng = np.random.RandomState(rng)
    anchors = _anchors_upstream(keypoints, num_frames, num_keyframes, rng)
    return _fill_upstream(anchors, num_keyframes)[:num_keyframes].astype(np.int64)


def to_frame_grid(indices: np.ndarray, fps: float, target_fps: float = 24.0) -> np.ndarray:
    """Map indices at ``fps`` to the 24 fps grid the UNet's ``frame_idx`` uses (round half to even)."""
    return np.round(np.asarray(indices, dtype=np.float64) * target_fps / fps).astype(np.int64)


def keyframe_fs(frame_idx: np.ndarray, fps: float = 24.0) -> tuple[np.ndarray, int]:
    """Per-frame and per-clip fps condition for a keyframe set, as upstream's dataset computes it.

    The stride before each keyframe (the first repeats the second) gives a per-frame rate
    ``int(fps / stride)``; the clip's ``fs`` is the integer mean of those. Upstream passes the
    *source* video's fps here while the strides are on the 24 fps grid; the data prep of this
    project resamples every clip to 24 fps first, so the two agree.
    """
    idx = np.asarray(frame_idx, dtype=np.float64)
    strides = np.diff(idx)
    strides = np.insert(strides, 0, strides[0])
    per_frame = np.array([int(fps / max(s, 1)) for s in strides], dtype=np.int64)
    return per_frame, int(per_frame.astype(np.float32).mean())
