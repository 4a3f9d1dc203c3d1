"""Audio -> motion score -> peaks/valleys -> T_K keyframe indices (Section 3.1 at inference).

The same selection code as data prep (keyvid/data/keyframes.py), applied to the localizer's
per-frame prediction instead of the optical-flow score. Used by the pipeline and by
``launch/localize.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from keyvid.data.keyframes import detect_keypoints, select_keyframes
from keyvid.models.audio_frontend import waveform_to_mel


def load_localizer(spec: str, device: str = "cpu"):
    """A trained localizer from its export folder (launch/train_localizer.py), or an untrained
    baseline: ``tiny`` or ``random:<size>`` (seeded, for smoke tests and evaluation floors)."""
    from keyvid.models.builders import localizer
    from keyvid.models.io import load_exported

    spec = str(spec)
    if spec == "tiny" or spec.startswith("random:"):
        torch.manual_seed(0)
        model = localizer(spec.removeprefix("random:"))
    else:
        model = load_exported(spec)
    return model.to(device).eval()


@dataclass
class Localization:
    motion: np.ndarray  # (48,) predicted score in [0, 1] (paper variant)
    peaks: np.ndarray
    valleys: np.ndarray
    keyframes: np.ndarray  # (T_K,) sorted indices into the 48 frames

    def to_dict(self) -> dict:
        return {"motion_score": [round(float(m), 5) for m in self.motion], "peaks": self.peaks.tolist(),
                "valleys": self.valleys.tolist(), "keyframes": self.keyframes.tolist()}


@torch.no_grad()
def localize(model, wave: torch.Tensor, sample_rate: int, *, start_s: float = 0.0, num_keyframes: int = 12,
             seed: int = 0, mode: str = "paper") -> Localization:
    """Keyframes for the 2 s of ``wave`` ("c n" float) starting at ``start_s`` seconds.

    Audio shorter than 2 s is padded as ImageBind does (keyvid/models/audio_frontend.py); longer audio
    is cropped to the window. Silent audio gives a flat score and uniformly spaced keyframes.
    """
    begin = int(round(start_s * sample_rate))
    if begin >= wave.shape[-1]:
        raise ValueError(f"start_s={start_s} is past the end of the audio ({wave.shape[-1] / sample_rate:.2f} s)")
    window = wave[..., begin: begin + 2 * sample_rate]
    device = next(model.parameters()).device
    mel = waveform_to_mel(window, sample_rate)[None].to(device)  # "1 1 128 204"
    motion = model(mel)[0].float().cpu().numpy()
    kp = detect_keypoints(motion)
    keyframes = select_keyframes(kp, num_keyframes, rng=seed, mode=mode)
    return Localization(motion, kp.peaks, kp.valleys, keyframes)


__all__ = ["Localization", "load_localizer", "localize"]
