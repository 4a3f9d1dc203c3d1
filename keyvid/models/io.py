"""Loading models for inference without the trainers: a trainer's export (``config.json`` +
``model.safetensors``), and the frozen encoders (pretrained from local paths, or seeded stand-ins).

Nothing here imports ``keyvid.training``, accelerate or deepspeed (``tests/test_import_graph.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from keyvid.models.imagebind_audio import ImageBindAudio, imagebind_audio, imagebind_audio_huge, load_imagebind_audio


def load_exported(path: str | Path):
    """Rebuild the model from ``config.json`` and load ``model.safetensors``."""
    path = Path(path)
    for name in ("config.json", "model.safetensors"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"exported model incomplete: {path / name} is missing")
    model = instantiate(OmegaConf.create(json.loads((path / "config.json").read_text())))
    missing, unexpected = model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path / 'model.safetensors'} does not fit {path / 'config.json'}: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


@dataclass
class Encoders:
    """Frozen encoders, outside any ZeRO partitioning (diffusers train_text_to_image.py)."""

    vae: nn.Module
    clip_text: nn.Module
    clip_image: nn.Module
    audio: ImageBindAudio

    def to(self, device, dtype=None):
        for m in (self.vae, self.clip_text, self.clip_image, self.audio):
            m.to(device=device, dtype=dtype)
        return self


def tiny_encoders(pixel_factor: int | None = None, pixel_scale: float = 1.0) -> Encoders:
    """Seeded random stand-ins (``encoders.kind=tiny``), the same weights on every call. With
    ``pixel_factor`` the VAE is the weight-free ``PixelVAE`` (``encoders.kind=pixel``) instead, its
    latents multiplied by ``pixel_scale`` (as SD's VAE latents by 0.18215)."""
    from keyvid.models import encoders as enc

    torch.manual_seed(0)
    audio = imagebind_audio(768, 1, 12, out_embed_dim=None)  # the UNet expects 768-wide audio tokens
    vae = enc.tiny_vae() if pixel_factor is None else enc.PixelVAE(pixel_factor, pixel_scale)
    return Encoders(vae, enc.tiny_clip_text(hidden_size=1024), enc.tiny_clip_image(), audio.eval())


ENCODER_KINDS = ("pretrained", "tiny", "pixel", "random")


def build_encoders(cfg, device: torch.device | str | None = None) -> Encoders:
    """``cfg.kind``: ``pretrained`` reads every encoder from a local path (an error names a missing
    one); ``tiny`` builds seeded random stand-ins so ``debug=tiny`` runs on CPU; ``pixel`` is
    ``tiny`` with the weight-free PixelVAE (``cfg.pixel_factor``), whose decoded videos show the
    motion the model learnt (the synthetic reproduction, REPRODUCTION.md); ``random`` builds the
    pretrained encoders' full-size architectures with random weights (SD 2.x VAE, OpenCLIP ViT-H/14
    towers, ImageBind-huge audio): the same compute as a real run, for benchmarks with no weight
    files. ``device``: where ``random`` initialises its 1.2 B parameters (on the CPU it takes minutes)."""
    from keyvid.models import encoders as enc

    if cfg.kind == "random":
        torch.manual_seed(0)
        with torch.device(device or "cpu"):
            return Encoders(enc.sd2_vae_random(), enc.vit_h_text_random(), enc.vit_h_image_random(),
                            imagebind_audio_huge(out_embed_dim=None).eval().requires_grad_(False))
    if cfg.kind == "tiny":
        return tiny_encoders()
    if cfg.kind == "pixel":
        return tiny_encoders(pixel_factor=int(cfg.get("pixel_factor", 2)), pixel_scale=float(cfg.get("pixel_scale", 1.0)))
    if cfg.kind != "pretrained":
        raise ValueError(f"unknown encoders.kind={cfg.kind!r}; expected one of {ENCODER_KINDS}")
    audio = load_imagebind_audio(cfg.imagebind, imagebind_audio_huge(out_embed_dim=None)).eval()
    return Encoders(enc.FrozenVAE.from_pretrained(cfg.vae), enc.FrozenCLIPTextEncoder.from_pretrained(cfg.clip),
                    enc.FrozenCLIPImageEncoder.from_pretrained(cfg.clip), audio.requires_grad_(False))
