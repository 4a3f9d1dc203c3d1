"""The parts of the generator and interpolator trainers that are about KeyVID, not about training:
frozen encoders, the trainable denoiser (UNet + image projector), which parameters train, and
how a batch becomes latents and conditions (Sections 3.2.2, 3.3; Fig. 6).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
from torch import nn

from keyvid.diffusion.denoiser import Encoded, KeyVIDDenoiser, concat_condition, encode_conditions, null_conditions
from keyvid.diffusion.guidance import GuidanceScales, drop_conditions
from keyvid.diffusion.schedule import DiffusionSchedule
from keyvid.models.attention import TemporalTransformer
from keyvid.models.io import Encoders
from keyvid.models.unet import TemporalConvBlock

TRAINABLE = ("full", "upstream")


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
    """Turns a collated batch into (latents, conditions) for ``DiffusionSchedule.training_loss``: the
    stage's concat condition and the raw encodings (``keyvid.diffusion.denoiser``), with condition
    dropout applied per sample before the trainable projectors see them."""

    def __init__(self, encoders: Encoders, device, dtype, *, stage: str, uncond_prob: float = 0.05,
                 cond_dropout: str = "branches"):
        self.enc, self.device, self.dtype, self.stage = encoders, device, dtype, stage
        self.uncond_prob, self.cond_dropout = uncond_prob, cond_dropout
        self.null = null_conditions(encoders, device, dtype)

    def latents(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """"b c t h w" latents of the batch's clips: a fresh posterior sample."""
        if "latent_moments" in batch:  # precomputed offline (data_prep/latents.py)
            return self.enc.vae.sample_moments(batch["latent_moments"].to(self.device), generator).to(self.dtype)
        return self.enc.vae.encode(batch["video"].to(self.device, self.dtype), generator).to(self.dtype)

    def encode(self, batch: dict) -> Encoded:
        """The batch's captions, first frames and mels through the frozen encoders (no dropout)."""
        dev, dt = self.device, self.dtype
        return encode_conditions(self.enc, batch["caption"], batch["first_frame"].to(dev, dt),
                                 batch["mel"].to(dev, dt), dt)

    @torch.no_grad()
    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        latents = self.latents(batch, generator)
        concat = concat_condition(self.stage, latents, batch.get("is_key"))
        raw = drop_conditions(self.encode(batch).as_dict(), self.null.as_dict(), generator, self.uncond_prob,
                              self.cond_dropout)
        cond = {"concat": concat, **raw, "fs": torch.as_tensor(batch["fs"], device=self.device),
                "frame_idx": batch["frame_idx"].to(self.device)}
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
    denoiser = KeyVIDDenoiser(unet, image_proj, cfg_model.stage, cfg_model.audio_layout)
    set_trainable(denoiser, cfg_model.trainable)
    return denoiser


@torch.no_grad()
def sample_preview(denoiser: KeyVIDDenoiser, conditioner: BatchConditioner, batch: dict, *, steps: int = 10,
                   seed: int = 0) -> torch.Tensor:
    """A short guided DDIM sample for the first clip of ``batch`` (training previews): "t h w c" uint8.

    The pipeline's path (``KeyVIDDenoiser.sample``) at the paper's scales, in eval mode (no dropout) and
    without condition dropout. Its randomness comes from its own generator and the global random
    state is restored after it, so a run with previews trains exactly as one without."""
    first = {k: v[:1] for k, v in batch.items()}
    dev = conditioner.device
    was_training = denoiser.training
    denoiser.eval()  # no dropout in a sample
    try:
        with torch.random.fork_rng(devices=[dev] if torch.device(dev).type == "cuda" else []):
            g = torch.Generator(device=dev).manual_seed(seed)
            latents = conditioner.latents(first, g)
            enc = conditioner.encode(first)
            x = torch.randn(latents.shape, generator=g, device=dev, dtype=latents.dtype)
            concat = concat_condition(denoiser.stage, latents, first.get("is_key"))
            z = denoiser.sample(x, enc, conditioner.null, concat=concat, frame_idx=first["frame_idx"].to(dev),
                                fs=torch.as_tensor(first["fs"], device=dev), schedule=DiffusionSchedule(),
                                steps=steps, scales=GuidanceScales(), guidance_rescale=0.7, eta=1.0, generators=g)
    finally:
        denoiser.train(was_training)
    video = conditioner.enc.vae.decode(z)[0]  # "c t h w" in about [-1, 1]
    return ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu()
