"""The parts of the generator and interpolator trainers that are about KeyVID, not about training:
frozen encoders, the trainable denoiser (UNet + image projector), which parameters train, and
how a batch becomes latents and conditions (Sections 3.2.2, 3.3; Fig. 6).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from keyvid.diffusion.guidance import drop_conditions
from keyvid.models.imagebind_audio import audio_tokens_per_frame
from keyvid.models.io import Encoders
from keyvid.models.resampler import Resampler, select_keyframe_tokens
from keyvid.models.attention import TemporalTransformer
from keyvid.models.unet import KeyframeUNet, TemporalConvBlock

TRAINABLE = ("full", "upstream")


class KeyVIDDenoiser(nn.Module):
    """UNet + image projector as one module, so DDP/DeepSpeed see every trainable parameter used in
    one forward. Takes raw encoder outputs and builds the UNet's context itself."""

    def __init__(self, unet: KeyframeUNet, image_proj: Resampler, num_frames: int = 48):
        super().__init__()
        self.unet, self.image_proj, self.num_frames = unet, image_proj, num_frames

    def forward(self, x, timesteps, *, text, image, audio, fs, frame_idx, image_idx=None):
        """x "b 8 t h w"; text "b 77 1024"; image "b n 1280" CLIP tokens; audio "b t L 768";
        frame_idx "b t" (24 fps grid). Image tokens are taken at ``image_idx`` (default ``frame_idx``)."""
        tokens = self.image_proj(image)  # "b (48 16) 1024": 16 queries per frame of the 48-frame clip
        tokens = select_keyframe_tokens(tokens, frame_idx if image_idx is None else image_idx)
        context = torch.cat([text.to(tokens.dtype), tokens], dim=1)
        return self.unet(x, timesteps, context=context, audio=audio, fs=fs, frame_idx=frame_idx)


def set_trainable(denoiser: KeyVIDDenoiser, mode: str) -> int:
    """``full``: everything. ``upstream``: what upstream KeyVID trains on top of DynamiCrafter —
    the image projector plus the UNet parts of ``set_unet_trainable``. The image projector trains
    in both modes. Returns the number of trainable parameters."""
    set_unet_trainable(denoiser.unet, mode)
    denoiser.image_proj.requires_grad_(True)
    return sum(p.numel() for p in denoiser.parameters() if p.requires_grad)


def set_unet_trainable(unet: nn.Module, mode: str) -> None:
    """The UNet's share of ``set_trainable``. ``upstream``: temporal convolutions and temporal
    transformers (init_attn included), the fps and frame-index embeddings and the new audio parts
    (audio_proj_2, to_k_ap/to_v_ap, gates); everything else frozen."""
    if mode not in TRAINABLE:
        raise ValueError(f"unknown trainable={mode!r}; expected one of {TRAINABLE}")
    unet.requires_grad_(mode == "full")
    if mode == "full":
        return
    for module in unet.modules():
        if isinstance(module, (TemporalTransformer, TemporalConvBlock)):
            module.requires_grad_(True)
    for name, p in unet.named_parameters():
        if name.startswith(("fps_embedding", "frame_idx", "audio_proj_2", "init_attn")) or any(
            k in name for k in ("to_k_ap", "to_v_ap", ".beta", "image_scale", "audio_scale")
        ):
            p.requires_grad_(True)


def interpolation_window(sample: dict, num_frames: int = 12, seed: int = 0) -> dict:
    """DataLoader-side, interpolator: upstream's ``avsync15_interp`` sample. From all 48 frames and
    the Algorithm-1 keyframes, take ``num_frames`` frames at stride 1 or 2 from a random start;
    frames that are keyframes become conditions (the first and last when at most one is).

    The window is drawn afresh on every visit of a clip (``visit_seed``, which ``SampleDecoder`` draws
    from its per-visit generator), as upstream's ``random.randint`` per ``__getitem__``: seeded by the
    key alone, each clip would train on one window for the whole run (frames 0, 1, 46, 47 of the
    recipe's first 16 clips were never inside one)."""
    keys = sample["frame_idx"]  # (T_K,) keyframes in the 48
    frames = sample["latent_moments"] if "latent_moments" in sample else sample["video"]  # "c 48 h w"
    rng = np.random.default_rng([seed, zlib.crc32(sample["key"].encode()), int(sample["visit_seed"])])
    stride = int(rng.integers(1, 3))
    start = int(rng.integers(0, frames.shape[1] - stride * (num_frames - 1)))
    idx = torch.arange(num_frames) * stride + start
    is_key = torch.isin(idx, keys)
    if is_key.sum() <= 1:
        is_key[0] = is_key[-1] = True
    # the image condition stays the clip's first frame, the input image at inference
    sample.update(frame_idx=idx, is_key=is_key, fs=24 // stride)
    sample["latent_moments" if "latent_moments" in sample else "video"] = frames[:, idx]
    return sample


class BatchConditioner:
    """Turns a collated batch into (latents, conditions) for ``DiffusionSchedule.training_loss``."""

    def __init__(self, encoders: Encoders, device, dtype, *, interpolator: bool, audio_layout: str = "aligned",
                 uncond_prob: float = 0.05, cond_dropout: str = "branches"):
        self.enc, self.device, self.dtype = encoders, device, dtype
        self.interpolator, self.audio_layout, self.uncond_prob = interpolator, audio_layout, uncond_prob
        self.cond_dropout = cond_dropout
        with torch.no_grad():  # upstream's null conditions: empty text, zero image, zero mel
            self.null = {
                "text": encoders.clip_text([""]).to(dtype),
                "image": encoders.clip_image(torch.zeros(1, 3, 64, 64, device=device)).to(dtype),
                "audio_tokens": encoders.audio(torch.zeros(1, 1, 128, 204, device=device, dtype=dtype)),
            }

    @torch.no_grad()
    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        dev, dt = self.device, self.dtype
        frame_idx = batch["frame_idx"].to(dev)
        if "latent_moments" in batch:  # precomputed offline (data_prep/latents.py): a fresh posterior sample
            latents = self.enc.vae.sample_moments(batch["latent_moments"].to(dev), generator).to(dt)
        else:
            latents = self.enc.vae.encode(batch["video"].to(dev, dt), generator).to(dt)  # "b c t h w" in [-1, 1]
        if self.interpolator:  # Fig. 6b: keyframe latents at their positions, zeros elsewhere
            mask = batch["is_key"].to(dev)[:, None, :, None, None]
            concat = latents * mask
        else:  # the first frame's latent repeated over time (DynamiCrafter)
            concat = latents[:, :, :1].expand_as(latents)
        raw = {
            "text": self.enc.clip_text(list(batch["caption"])).to(dt),
            "image": self.enc.clip_image(batch["first_frame"].to(dev, dt)).to(dt),
            "audio": self.enc.audio(batch["mel"].to(dev, dt)),
        }
        null = {"text": self.null["text"], "image": self.null["image"], "audio": self.null["audio_tokens"]}
        raw = drop_conditions(raw, null, generator, self.uncond_prob, self.cond_dropout)
        audio = audio_tokens_per_frame(raw["audio"], frame_idx, layout=self.audio_layout)
        fs = torch.as_tensor(batch["fs"], device=dev)
        cond = {"concat": concat, "text": raw["text"], "image": raw["image"], "audio": audio.to(dt),
                "fs": fs, "frame_idx": frame_idx}
        return latents, cond


def setup_denoiser(cfg_model, gradient_checkpointing: bool = False, *, compile_blocks: bool = False,
                   compile_model: bool = False, channels_last: bool = False, checkpoint_levels=None) -> KeyVIDDenoiser:
    """UNet + image projector from the model config; ``pretrained`` is a converted checkpoint folder
    (``python -m keyvid.models.convert``) holding ``unet/`` and ``image_proj/``. ``channels_last``
    and ``compile_blocks``: see ``KeyframeUNet.set_channels_last`` / ``compile_blocks`` (weights stay
    contiguous so checkpoints and exports save as usual; parameter names do not change).
    ``compile_model``: ``torch.compile`` of the whole UNet in place (``nn.Module.compile``: one graph,
    names unchanged), for small UNets whose step is launch-bound (BENCHMARKS.md).
    ``checkpoint_levels`` (with ``gradient_checkpointing``): ``KeyframeUNet.set_checkpoint_levels``."""
    from pathlib import Path

    from hydra.utils import instantiate

    unet, image_proj = instantiate(cfg_model.unet), instantiate(cfg_model.image_proj)
    if cfg_model.pretrained:
        root = Path(cfg_model.pretrained)
        for name, module in (("unet", unet), ("image_proj", image_proj)):
            if not (root / name).is_dir():
                raise FileNotFoundError(f"model.pretrained: {root / name} is missing (convert a checkpoint first)")
            module.load_state_dict(type(module).from_pretrained(root / name).state_dict())
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        try:
            unet.set_checkpoint_levels(checkpoint_levels)
        except ValueError as e:
            raise ValueError(f"train.checkpoint_levels: {e}") from None
    elif checkpoint_levels is not None:
        raise ValueError("train.checkpoint_levels needs train.gradient_checkpointing=true")
    if channels_last:
        unet.set_channels_last()
    if compile_blocks and compile_model:
        raise ValueError("train.compile_blocks and train.compile_model: choose one")
    if compile_blocks:
        unet.compile_blocks()
    if compile_model:
        unet.compile(dynamic=False)
    denoiser = KeyVIDDenoiser(unet, image_proj)
    set_trainable(denoiser, cfg_model.trainable)
    return denoiser


@torch.no_grad()
def sample_preview(denoiser: KeyVIDDenoiser, conditioner: BatchConditioner, batch: dict, *, steps: int = 10,
                   seed: int = 0) -> torch.Tensor:
    """A short guided DDIM sample for the first clip of ``batch`` (training previews): "t h w c" uint8.

    Uses the raw UNet with projected context, as the pipeline does; the scales are the paper's.
    """
    from keyvid.diffusion.sampling import ddim_sample

    first = {k: (v[:1] if isinstance(v, torch.Tensor) else v[:1]) for k, v in batch.items()}
    latents, cond = conditioner(first)
    idx = cond["frame_idx"]
    tokens = select_keyframe_tokens(denoiser.image_proj(cond["image"]), idx)
    null_tokens = select_keyframe_tokens(denoiser.image_proj(conditioner.null["image"]), idx[:1])
    null_audio = audio_tokens_per_frame(conditioner.null["audio_tokens"], idx[:1], layout=conditioner.audio_layout)
    sample_cond = {"concat": cond["concat"], "context": torch.cat([cond["text"].to(tokens.dtype), tokens], 1),
                   "audio": cond["audio"], "fs": cond["fs"], "frame_idx": idx}
    null = {"text": conditioner.null["text"], "image": null_tokens, "audio": null_audio}
    g = torch.Generator(device=latents.device).manual_seed(seed)
    z = ddim_sample(denoiser.unet, latents.shape, sample_cond, null, steps=steps, generator=g)
    video = conditioner.enc.vae.decode(z)[0]  # "c t h w" in about [-1, 1]
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu()
