"""Stage 1, which frames are keyframes: the localizer's motion score -> Algorithm 1 (peaks, valleys,
fill; seeded per sample), the uniform ablation (0, 4, ..., 44), or indices given by the caller."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from keyvid.data import NUM_FRAMES
from keyvid.data.keyframes import detect_keypoints, select_keyframes, uniform_keyframes

KeyframeChoice = str | Sequence[int] | Sequence[Sequence[int]] | np.ndarray | torch.Tensor


def choose_keyframes(keyframes: KeyframeChoice, motion: np.ndarray, seeds: Sequence[int],
                     num_keyframes: int) -> np.ndarray:
    """"localizer" (Algorithm 1 on the score "b 48"), "uniform", or given indices ("K" or "b K") -> "b K"."""
    b, k = motion.shape[0], num_keyframes
    if isinstance(keyframes, str):
        if keyframes == "localizer":
            return np.stack([select_keyframes(detect_keypoints(m), k, rng=s) for m, s in zip(motion, seeds)])
        if keyframes == "uniform":
            return np.tile(uniform_keyframes(NUM_FRAMES, k), (b, 1))
        raise ValueError(f"keyframes must be 'localizer', 'uniform' or indices, got {keyframes!r}")
    idx = np.asarray(keyframes.cpu() if isinstance(keyframes, torch.Tensor) else keyframes)
    idx = np.broadcast_to(idx, (b, idx.shape[-1])) if idx.ndim == 1 else idx
    if idx.shape != (b, k) or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"given keyframes must be {k} integers per sample (batch {b}), got {idx.dtype} {tuple(idx.shape)}"
        )
    if idx.min() < 0 or idx.max() >= NUM_FRAMES:
        raise ValueError(f"given keyframes must lie in [0, {NUM_FRAMES}), got {idx.min()}..{idx.max()}")
    return np.sort(idx, axis=1).astype(np.int64)
