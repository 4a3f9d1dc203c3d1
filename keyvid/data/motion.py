"""Per-frame motion score from optical flow (paper Section 3.1, Fig. 5a).

``M(t)`` is the flow magnitude ``|u| + |v|`` between frame ``t - 1`` and frame ``t``, reduced over
the pixels; ``M(0)`` repeats ``M(1)`` so the curve has one value per frame. The reduction is
``"sum"`` (the paper's formula) or ``"mean"`` (upstream's curves); both differ by the constant
``H * W``, which the min-max normalisation of keyframe detection removes, so ``"mean"`` is the
default (its numbers do not depend on the resolution).

Flow backends share one call, ``backend(frames) -> (t-1, 2, h, w)`` float flow in pixels:
``ClassicFlow`` (OpenCV DIS on CPU: no weights, for CI, the demo and GPU-less machines) and
``RaftFlow`` (torchvision RAFT, weights from a local file) in ``keyvid.data.raft``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

REDUCTIONS = ("mean", "sum")


class FlowBackend(Protocol):
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """"t h w c" uint8 RGB -> "(t-1) 2 h w" float32 forward flow in pixels."""


class ClassicFlow:
    """OpenCV DIS optical flow on grayscale frames (CPU).

    DIS ("medium" preset) is several times faster than Farneback at similar accuracy on the
    large, fast displacements of impacts; ``scale`` downsizes frames first (flow is rescaled back
    to full-size pixels).
    """

    def __init__(self, preset: str = "medium", scale: float = 1.0):
        import cv2

        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if preset not in presets:
            raise ValueError(f"unknown DIS preset {preset!r}; expected one of {sorted(presets)}")
        self.preset, self.scale = presets[preset], scale

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        import cv2

        dis = cv2.DISOpticalFlow_create(self.preset)
        grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        if self.scale != 1.0:
            grays = [cv2.resize(g, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_AREA) for g in grays]
        flows = [dis.calc(a, b, None) for a, b in zip(grays[:-1], grays[1:])]
        return np.stack(flows).transpose(0, 3, 1, 2).astype(np.float32) / self.scale


def flow_to_score(flow: np.ndarray, reduction: str = "mean") -> np.ndarray:
    """"(t-1) 2 h w" flow -> "t" motion score (``M(0) = M(1)``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction={reduction!r}; expected one of {REDUCTIONS}")
    mag = np.abs(flow).sum(axis=1)  # |u| + |v| per pixel
    per_pair = mag.mean(axis=(1, 2)) if reduction == "mean" else mag.sum(axis=(1, 2))
    return np.concatenate([per_pair[:1], per_pair]).astype(np.float64)


def motion_score(frames: np.ndarray, backend: FlowBackend | None = None, reduction: str = "mean") -> np.ndarray:
    """"t h w c" uint8 frames -> "t" motion score."""
    if frames.ndim != 4 or frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames 't h w c' for a motion score, got shape {frames.shape}")
    return flow_to_score((backend or ClassicFlow())(frames), reduction)
