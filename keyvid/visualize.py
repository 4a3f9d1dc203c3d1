"""Pictures a person can check at a glance: keyframe contact sheets and motion-score strips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def contact_sheet(frames: np.ndarray, indices, scores: np.ndarray | None = None, thumb_height: int = 96) -> np.ndarray:
    """One row of the frames at ``indices`` (labelled with their index) over an optional score plot.

    frames: "t h w c" uint8 RGB. Returns "h w c" uint8 RGB.
    """
    t, h, w, _ = frames.shape
    tw = max(1, round(w * thumb_height / h))
    thumbs = []
    for i in indices:
        im = cv2.resize(frames[int(i)], (tw, thumb_height), interpolation=cv2.INTER_AREA)
        cv2.putText(im, str(int(i)), (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
        thumbs.append(im)
    row = np.concatenate(thumbs, axis=1)
    if scores is None:
        return row
    plot = np.full((80, row.shape[1], 3), 255, np.uint8)
    s = np.asarray(scores, np.float64)
    s = (s - s.min()) / (np.ptp(s) or 1.0)
    xs = np.linspace(5, row.shape[1] - 5, len(s))
    pts = np.stack([xs, 75 - 70 * s], 1).astype(np.int32)
    cv2.polylines(plot, [pts], False, (30, 30, 200), 1, cv2.LINE_AA)
    for i in indices:
        cv2.line(plot, (int(xs[int(i)]), 0), (int(xs[int(i)]), 79), (200, 60, 60), 1)
    return np.concatenate([row, plot], axis=0)


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")
    return path
