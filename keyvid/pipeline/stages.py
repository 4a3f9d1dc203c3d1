"""Stages 2 and 3 as functions of a stage's denoiser (``keyvid.diffusion.denoiser.KeyVIDDenoiser``),
and what they return: the keyframe latents (``KeyframeOutput``, all the interpolation needs besides
the inputs) and the video (``KeyVIDOutput``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

from keyvid.data import NUM_FRAMES
from keyvid.data.keyframes import keyframe_fs
from keyvid.diffusion.denoiser import Encoded, KeyVIDDenoiser
from keyvid.diffusion.freenoise import initial_noise, temporal_windows
from keyvid.diffusion.schedule import DiffusionSchedule

INTERPOLATOR_FS = 24  # upstream generation.sh: FS=24 for the interpolation stage


@dataclass
class KeyVIDOutput:
    frames: np.ndarray  # "b 48 H W 3" uint8 RGB
    keyframes: np.ndarray  # "b 12" int64, ascending indices into the 48 frames
    motion: np.ndarray  # "b 48" float32, the localizer's per-frame motion score


@dataclass
class KeyframeOutput:
    """Stage 2's result, all ``interpolate`` needs besides the inputs (``select``/``cat`` per sample)."""

    latents: torch.Tensor  # "b 4 K h w" generated keyframe latents
    keyframes: np.ndarray  # "b K" int64 indices
    motion: np.ndarray  # "b 48" float32 motion score (zeros for a pipeline without a localizer)
    rng_states: list[torch.Tensor]  # each sample's generator state after stage 2

    def select(self, i: int) -> KeyframeOutput:
        return KeyframeOutput(self.latents[i : i + 1], self.keyframes[i : i + 1], self.motion[i : i + 1],
                              [self.rng_states[i]])

    @staticmethod
    def cat(items: Sequence[KeyframeOutput]) -> KeyframeOutput:
        return KeyframeOutput(
            torch.cat([o.latents for o in items]), np.concatenate([o.keyframes for o in items]),
            np.concatenate([o.motion for o in items]), [s for o in items for s in o.rng_states],
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so that ``torch.load(..., weights_only=True)`` reads it back (``from_state_dict``)."""
        return {"latents": self.latents.cpu(), "keyframes": torch.from_numpy(self.keyframes),
                "motion": torch.from_numpy(self.motion), "rng_states": torch.stack(self.rng_states)}

    @staticmethod
    def from_state_dict(state: dict[str, torch.Tensor]) -> KeyframeOutput:
        return KeyframeOutput(state["latents"], state["keyframes"].numpy(), state["motion"].numpy(),
                              list(state["rng_states"]))


def sample_keyframes(denoiser: KeyVIDDenoiser, first: torch.Tensor, frame_idx: torch.Tensor, enc: Encoded,
                     null: Encoded, gens: list[torch.Generator], schedule: DiffusionSchedule,
                     **sampling) -> torch.Tensor:
    """Stage 2: "b 4 K h w" keyframe latents; the input image's latent "b 4 1 h w" repeated is the concat,
    ``fs`` is ``keyframe_fs`` of each sample's indices (what the data loader trains with)."""
    k = frame_idx.shape[1]
    fs = torch.tensor([keyframe_fs(idx.cpu().numpy())[1] for idx in frame_idx], device=first.device)
    concat = first.expand(-1, -1, k, -1, -1)
    x = randn_tensor(tuple(concat.shape), generator=gens, device=first.device, dtype=first.dtype)
    return denoiser.sample(x, enc, null, concat=concat, frame_idx=frame_idx, fs=fs, schedule=schedule,
                           generators=gens, desc="keyframes", **sampling)


def sample_video(denoiser: KeyVIDDenoiser, key_latents: torch.Tensor, frame_idx: torch.Tensor, enc: Encoded,
                 null: Encoded, gens: list[torch.Generator], schedule: DiffusionSchedule, *, noise: str,
                 window: int, stride: int, anchor: str = "none", sequential: bool = False,
                 **sampling) -> torch.Tensor:
    """Stage 3: "b 4 48 h w" latents from the keyframe latents placed at their indices, zeros elsewhere
    (Fig. 6b), fs 24, FreeNoise's initial noise and window fusion; ``anchor="replace"`` writes the
    keyframes back after every step (``denoise``'s ``known``)."""
    b, c, _, h, w = key_latents.shape
    dev = key_latents.device
    concat = key_latents.new_zeros(b, c, NUM_FRAMES, h, w)
    for i in range(b):
        concat[i][:, frame_idx[i]] = key_latents[i]
    all_frames = torch.arange(NUM_FRAMES, device=dev)[None].expand(b, -1)
    fs = torch.full((b,), INTERPOLATOR_FS, device=dev, dtype=torch.long)
    x = torch.cat([
        initial_noise(noise, (1, c, NUM_FRAMES, h, w), window=window, stride=stride,
                      keyframes=frame_idx[i].tolist(), generator=gens[i], device=dev, dtype=concat.dtype)
        for i in range(b)
    ])
    known = None
    if anchor == "replace":
        mask = torch.zeros(b, 1, NUM_FRAMES, 1, 1, dtype=torch.bool, device=dev)
        for i in range(b):
            mask[i, :, frame_idx[i]] = True
        known = (mask, concat)
    with temporal_windows(denoiser.unet, window, stride, sequential=sequential):
        return denoiser.sample(x, enc, null, concat=concat, frame_idx=all_frames, fs=fs, schedule=schedule,
                               generators=gens, desc="interpolation", sequential=sequential, known=known, **sampling)
