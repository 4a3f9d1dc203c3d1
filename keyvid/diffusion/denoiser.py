"""The denoiser of both video stages: UNet + image projector, and how image, text and audio enter it
(Sections 3.2.2, 3.3; Fig. 6). Training, the training preview and the pipeline all go through here.

    enc = encode_conditions(encoders, captions, first_frames, mel)    # raw encoder outputs
    null = null_conditions(encoders, device)                          # upstream's null inputs
    v = denoiser(x_in, t, **training_inputs)                          # training: projects inside forward
    z = denoiser.sample(x_T, enc, null, concat=..., frame_idx=..., fs=..., schedule=..., ...)

``Encoded`` holds what the frozen encoders give (CLIP text tokens, CLIP image tokens, ImageBind audio
tokens). ``KeyVIDDenoiser.unet_inputs`` turns it into the UNet's inputs: the text tokens followed by
the 16 projected image tokens of each generated frame (the projector makes 16 per frame of the
48-frame clip; the frames at ``image_idx`` are kept), and the ImageBind tokens split per generated
frame (``audio_tokens_per_frame``). The concat condition is the stage's (``concat``): the first
frame's latent repeated over time for the keyframe generator (DynamiCrafter), the keyframe latents at
their positions and zeros elsewhere for the interpolator (Fig. 6b).

In training the projection runs inside ``forward``, so DDP and DeepSpeed see every trainable
parameter used in one forward; at sampling it runs once per call (``conditioning``), not per step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from keyvid.data import NUM_FRAMES
from keyvid.diffusion.sampling import denoise
from keyvid.diffusion.schedule import Conditioning, DiffusionSchedule
from keyvid.models.imagebind_audio import audio_tokens_per_frame
from keyvid.models.resampler import Resampler, select_keyframe_tokens
from keyvid.models.unet import KeyframeUNet

STAGES = ("generator", "interpolator")
NULL_IMAGE_SIZE = 64  # any size: CLIP resizes, and an all-zero image stays all zero
MEL_SHAPE = (1, 128, 204)  # ImageBind's log-mel of 2 s (keyvid.models.audio_frontend)


@dataclass
class Encoded:
    """Frozen encoder outputs, batch-first; a batch of 1 broadcasts against the others.

    text "b 77 1024" CLIP text tokens; image "b 257 1280" CLIP image tokens of the first frame;
    audio "b N 768" ImageBind audio tokens of the clip."""

    text: torch.Tensor
    image: torch.Tensor
    audio: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"text": self.text, "image": self.image, "audio": self.audio}


def encode_conditions(encoders, texts: Sequence[str], pixels: torch.Tensor, mel: torch.Tensor,
                      dtype: torch.dtype | None = None) -> Encoded:
    """Captions, first frames "b 3 H W" in [-1, 1] and log-mels "b 1 128 204" -> ``Encoded``.

    ``encoders`` has ``clip_text``, ``clip_image`` and ``audio`` (``keyvid.models.io.Encoders``);
    ``dtype`` casts the outputs (the training precision; the pipeline keeps the encoders' own)."""
    enc = Encoded(encoders.clip_text(list(texts)), encoders.clip_image(pixels), encoders.audio(mel))
    return enc if dtype is None else Encoded(enc.text.to(dtype), enc.image.to(dtype), enc.audio.to(dtype))


@torch.no_grad()
def null_conditions(encoders, device: torch.device | str, dtype: torch.dtype | None = None) -> Encoded:
    """Upstream's null conditions, batch 1: CLIP text of "", CLIP image of an all-zero image (mid-grey
    in [-1, 1]), ImageBind of an all-zero mel. Condition dropout in training and the guidance branches
    at sampling both use these."""
    image = torch.zeros(1, 3, NULL_IMAGE_SIZE, NULL_IMAGE_SIZE, device=device, dtype=dtype)
    mel = torch.zeros(1, *MEL_SHAPE, device=device, dtype=dtype)
    return encode_conditions(encoders, [""], image, mel, dtype)


def _same_batch(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Expand batch-1 tensors to the largest batch among ``tensors``."""
    n = max(t.shape[0] for t in tensors)
    return [t.expand(n, *t.shape[1:]) for t in tensors]


def concat_condition(stage: str, latents: torch.Tensor, is_key: torch.Tensor | None = None) -> torch.Tensor:
    """The stage's concat condition from clip latents "b c t h w" (Fig. 6): the generator repeats the
    first frame's latent; the interpolator keeps the frames where ``is_key`` "b t" and zeros the rest."""
    if stage == "generator":
        return latents[:, :, :1].expand_as(latents)
    if stage != "interpolator":
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if is_key is None:
        raise ValueError("the interpolator's concat condition needs is_key (which frames are keyframes)")
    return latents * is_key.to(latents.device)[:, None, :, None, None]


class KeyVIDDenoiser(nn.Module):
    """UNet + image projector of one stage (``STAGES``) as one module; see the module docstring.

    ``audio_layout``: how ImageBind tokens are split per frame (``audio_tokens_per_frame``:
    ``"aligned"`` for our training, ``"upstream"`` for upstream checkpoints)."""

    def __init__(self, unet: KeyframeUNet, image_proj: Resampler, stage: str = "generator",
                 audio_layout: str = "aligned", num_frames: int = NUM_FRAMES):
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
        self.unet, self.image_proj = unet, image_proj
        self.stage, self.audio_layout, self.num_frames = stage, audio_layout, num_frames

    def _image_tokens(self, image: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """"b|1 257 1280" CLIP tokens -> "b (t 16) d" projected tokens of the frames ``idx`` "b|1 t"."""
        tokens, idx = _same_batch(self.image_proj(image), idx)
        return select_keyframe_tokens(tokens, idx)

    def _audio_tokens(self, audio: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """"b|1 N 768" ImageBind tokens -> "b t L 768" for the frames ``idx`` "b|1 t"."""
        audio, idx = _same_batch(audio, idx)
        return audio_tokens_per_frame(audio, idx, self.num_frames, layout=self.audio_layout)

    def unet_inputs(self, enc: Encoded, frame_idx: torch.Tensor, fs: torch.Tensor,
                    image_idx: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The UNet's keyword inputs for the frames ``frame_idx`` "b|1 t" of the 48 (image tokens at
        ``image_idx``, default ``frame_idx``): context "b (77 + t*16) 1024", audio "b t L 768", fs, frame_idx."""
        tokens = self._image_tokens(enc.image, frame_idx if image_idx is None else image_idx)
        text, tokens = _same_batch(enc.text.to(tokens.dtype), tokens)
        audio = self._audio_tokens(enc.audio, frame_idx)
        frame_idx = _same_batch(frame_idx, audio)[0]
        return {"context": torch.cat([text, tokens], dim=1), "audio": audio, "fs": fs, "frame_idx": frame_idx}

    def conditioning(self, enc: Encoded, concat: torch.Tensor, frame_idx: torch.Tensor,
                     fs: torch.Tensor) -> Conditioning:
        """``unet_inputs`` plus the concat condition: what ``denoise`` and ``guided_v`` take."""
        return Conditioning(concat=concat, **self.unet_inputs(enc, frame_idx, fs))

    def null_branches(self, null: Encoded, frame_idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The null entries of the guidance branches (``guidance_branches``) for the frames ``frame_idx``:
        "text" null text tokens, "image" projected null image tokens, "audio" null audio tokens."""
        return {"text": null.text, "image": self._image_tokens(null.image, frame_idx),
                "audio": self._audio_tokens(null.audio, frame_idx)}

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, *, text: torch.Tensor, image: torch.Tensor,
                audio: torch.Tensor, fs: torch.Tensor, frame_idx: torch.Tensor,
                image_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Training: x "b 8 t h w" (noisy latent + concat), raw encodings as ``Encoded``'s fields -> v."""
        inputs = self.unet_inputs(Encoded(text, image, audio), frame_idx, fs, image_idx)
        return self.unet(x, timesteps, **inputs)

    @torch.no_grad()
    def sample(self, x: torch.Tensor, enc: Encoded, null: Encoded, *, concat: torch.Tensor,
               frame_idx: torch.Tensor, fs: torch.Tensor, schedule: DiffusionSchedule, **sampling) -> torch.Tensor:
        """DDIM with Eq. 4 guidance from the given x_T (``keyvid.diffusion.sampling.denoise``; ``sampling``:
        its keywords: steps, scales, guidance_rescale, eta, generators, final_step, ...)."""
        cond = self.conditioning(enc, concat, frame_idx, fs)
        return denoise(self.unet, x, cond, self.null_branches(null, frame_idx), schedule, **sampling)
