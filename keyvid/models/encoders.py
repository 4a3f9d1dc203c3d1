"""Frozen encoders: the SD-2.x VAE, the OpenCLIP ViT-H/14 text and image towers (as transformers CLIP).

They reproduce what DynamiCrafter (lvdm/modules/encoders/condition.py, lvdm/models/ddpm3d.py) feeds
KeyVID's UNet:
  * VAE: per-frame 2D encode/decode of "b c t h w" video, latents scaled by 0.18215, sampled from the
    posterior (upstream ``get_first_stage_encoding`` calls ``sample()``), chunked over frames
    (upstream ``perframe_ae`` does one frame at a time to save memory).
  * Text (``FrozenOpenCLIPEmbedder(layer="penultimate")``): the hidden states after the second-to-last
    transformer block, then the final layer norm: "b 77 1024".
  * Image (``FrozenOpenCLIPImageEmbedderV2``): every token of the last block, before the post layer
    norm and projection: "b 257 1280", from [-1, 1] images resized to 224 as kornia does.

Weights load from local directories only (diffusers / transformers ``save_pretrained`` layout);
nothing is downloaded. Each class is a frozen nn.Module in eval mode that stays in eval mode.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import AutoencoderKL
from einops import rearrange
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModel
from transformers.convert_slow_tokenizer import bytes_to_unicode

# OpenAI CLIP normalisation, which OpenCLIP ViT-H/14 (laion2b_s32b_b79k) also uses.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _require(path: str | Path, what: str, *names: str) -> Path:
    """Fail early, naming the path, instead of letting from_pretrained try the Hub."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: directory not found: {path}")
    for name in names:
        if not (path / name).is_file():
            raise FileNotFoundError(f"{what}: {path / name} not found")
    return path


class _Frozen(nn.Module):
    """No gradients, and ``train()`` on a parent module cannot switch it out of eval mode
    (upstream's ``disabled_train``)."""

    def _freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> _Frozen:
        return super().train(False)


class FrozenVAE(_Frozen):
    def __init__(self, vae: AutoencoderKL, chunk_frames: int = 4) -> None:
        super().__init__()
        self.vae = vae
        self.chunk_frames = chunk_frames
        self._freeze()

    @property
    def scale_factor(self) -> float:
        return self.vae.config.scaling_factor

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def from_pretrained(cls, path: str | Path, chunk_frames: int = 4) -> FrozenVAE | PixelVAE:
        """A diffusers AutoencoderKL folder, or a ``PixelVAE.save_pretrained`` one (told apart by
        the ``_class_name`` in config.json)."""
        path = _require(path, "VAE", "config.json")
        if json.loads((path / "config.json").read_text()).get("_class_name") == PixelVAE.__name__:
            return PixelVAE.from_pretrained(path)
        return cls(AutoencoderKL.from_pretrained(path, local_files_only=True), chunk_frames)

    def save_pretrained(self, path: str | Path) -> None:
        self.vae.save_pretrained(path)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """"b 3 t H W" in [-1, 1] -> "b 4 t H/8 W/8" (posterior sample times the scale factor)."""
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w").to(self.vae.dtype)
        latents = torch.cat(
            [self.vae.encode(chunk).latent_dist.sample(generator) for chunk in frames.split(self.chunk_frames)]
        )
        return rearrange(latents * self.scale_factor, "(b t) c h w -> b c t h w", b=b)

    @torch.no_grad()
    def encode_moments(self, video: torch.Tensor) -> torch.Tensor:
        """"b 3 t H W" -> "b 8 t H/8 W/8": the posterior's mean and log-variance, unscaled, for
        latents precomputed offline (``data_prep/latents.py``); ``sample_moments`` draws from them."""
        b = video.shape[0]
        frames = rearrange(video, "b c t h w -> (b t) c h w").to(self.vae.dtype)
        dists = [self.vae.encode(chunk).latent_dist for chunk in frames.split(self.chunk_frames)]
        moments = torch.cat([torch.cat([d.mean, d.logvar], dim=1) for d in dists])
        return rearrange(moments, "(b t) c h w -> b c t h w", b=b)

    def sample_moments(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A posterior sample times the scale factor from stored moments "b 8 t h w"; with the same
        generator it draws the same noise, chunk by chunk, as ``encode`` does."""
        b = moments.shape[0]
        mean, logvar = rearrange(moments.float(), "b c t h w -> (b t) c h w").chunk(2, dim=1)
        noise = torch.cat([torch.randn(chunk.shape, generator=generator, device=chunk.device)
                           for chunk in mean.split(self.chunk_frames)])
        z = (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise) * self.scale_factor
        return rearrange(z, "(b t) c h w -> b c t h w", b=b)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """"b 4 t h w" -> "b 3 t 8h 8w" in about [-1, 1]."""
        b = latents.shape[0]
        z = rearrange(latents, "b c t h w -> (b t) c h w").to(self.vae.dtype) / self.scale_factor
        frames = torch.cat([self.vae.decode(chunk).sample for chunk in z.split(self.chunk_frames)])
        return rearrange(frames, "(b t) c h w -> b c t h w", b=b)


class PixelVAE(_Frozen):
    """A weight-free stand-in for the VAE: ``factor``-times average pooling as the encoder, bilinear
    upsampling as the decoder (``encoders.kind=pixel``).

    Latent channels 0-2 are the pooled RGB, channel 3 their mean (the UNets take 4). Without a
    pretrained VAE (none is available offline) a random one reconstructs nothing, so the generated
    videos could not be scored; this one keeps every motion larger than ``factor`` pixels, which is
    what the synthetic keyframe-vs-uniform reproduction (REPRODUCTION.md) measures. Same interface
    as ``FrozenVAE``; the posterior is a point mass (``encode_moments`` stores log-variance -30).
    """

    def __init__(self, factor: int = 2, scale_factor: float = 1.0) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"PixelVAE factor must be >= 1, got {factor}")
        self.factor, self._scale = int(factor), float(scale_factor)
        self._freeze()

    @property
    def scale_factor(self) -> float:
        return self._scale

    @property
    def downsample_factor(self) -> int:
        return self.factor

    def config(self) -> dict:
        return {"_class_name": type(self).__name__, "factor": self.factor, "scaling_factor": self._scale}

    def save_pretrained(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(json.dumps(self.config(), indent=1) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PixelVAE:
        config = json.loads((_require(path, "VAE", "config.json") / "config.json").read_text())
        return cls(config["factor"], config["scaling_factor"])

    def _pool(self, video: torch.Tensor) -> torch.Tensor:
        b = video.shape[0]
        frames = rearrange(video.float(), "b c t h w -> (b t) c h w")
        rgb = F.avg_pool2d(frames, self.factor) if self.factor > 1 else frames
        z = torch.cat([rgb, rgb.mean(1, keepdim=True)], dim=1)
        return rearrange(z, "(b t) c h w -> b c t h w", b=b)

    @torch.no_grad()
    def encode(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """"b 3 t H W" in [-1, 1] -> "b 4 t H/f W/f" times the scale factor."""
        return self._pool(video) * self._scale

    @torch.no_grad()
    def encode_moments(self, video: torch.Tensor) -> torch.Tensor:
        mean = self._pool(video)
        return torch.cat([mean, torch.full_like(mean, -30.0)], dim=1)

    def sample_moments(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return moments[:, :4].float() * self._scale  # exp(-15) noise would change nothing

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """"b 4 t h w" -> "b 3 t fh fw": the RGB channels, bilinearly upsampled."""
        b = latents.shape[0]
        z = rearrange(latents[:, :3].float() / self._scale, "b c t h w -> (b t) c h w")
        if self.factor > 1:
            z = F.interpolate(z, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return rearrange(z, "(b t) c h w -> b c t h w", b=b)


class FrozenCLIPTextEncoder(_Frozen):
    """Text -> "b 77 d" penultimate-layer tokens. Takes strings (needs a tokenizer) or token ids "b 77"."""

    def __init__(self, model: CLIPTextModel, tokenizer: CLIPTokenizer | None, max_length: int = 77) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self._freeze()

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer_path: str | Path | None = None) -> FrozenCLIPTextEncoder:
        """``path`` holds a CLIPTextModel or a full CLIPModel; the tokenizer is read from
        ``tokenizer_path`` (default ``path``) when its files are there, else only ids are accepted."""
        path = _require(path, "CLIP text encoder", "config.json")
        tok_dir = Path(tokenizer_path) if tokenizer_path is not None else path
        has_tokenizer = (tok_dir / "tokenizer.json").is_file() or (tok_dir / "vocab.json").is_file()
        if tokenizer_path is not None and not has_tokenizer:
            raise FileNotFoundError(f"CLIP tokenizer: no tokenizer.json or vocab.json in {tok_dir}")
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True) if has_tokenizer else None
        return cls(CLIPTextModel.from_pretrained(path, local_files_only=True), tokenizer)

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this text encoder was loaded without a tokenizer: pass token ids instead")
        enc = self.tokenizer(
            list(texts), padding="max_length", max_length=self.max_length, truncation=True, return_tensors="pt"
        )
        for i, (text, kept) in enumerate(zip(texts, enc.attention_mask.sum(1).tolist())):
            if kept >= self.max_length and len(self.tokenizer(text).input_ids) > self.max_length:
                warnings.warn(f"text {i} ({len(text)} characters) is longer than CLIP's {self.max_length} tokens; "
                              f"only its start is used: {text[:40]!r}...", stacklevel=2)
        # open_clip.tokenize fills after the end token with id 0 ("!"), whatever the HF tokenizer's pad
        # token is (laion's is <|endoftext|>); padded positions reach cross-attention, so match it.
        return enc.input_ids.masked_fill(enc.attention_mask == 0, 0)

    @torch.no_grad()
    def forward(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        ids = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        out = self.model(input_ids=ids.to(self.model.device), output_hidden_states=True)
        # hidden_states[-2] is the output of all blocks but the last, which is where OpenCLIP's
        # "penultimate" loop stops before applying ln_final.
        return self.model.final_layer_norm(out.hidden_states[-2])


def resize_antialiased(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """"b c H W" -> "b c h w" as kornia's ``resize(..., "bicubic", align_corners=True, antialias=True)``
    (upstream's CLIP input): a separable Gaussian blur (width then height; sigma (factor - 1) / 2 as
    skimage, at least 0.001; an odd kernel of at least 4 sigma and 3 taps; reflected borders), then
    bicubic interpolation. Equal to diffusers' private SVD helper of the same routine (a test checks)."""
    out = image
    for axis, (src, dst) in ((-1, (image.shape[-1], size[1])), (-2, (image.shape[-2], size[0]))):
        sigma = torch.tensor(max((src / dst - 1.0) / 2.0, 0.001), dtype=image.dtype, device=image.device)
        k = int(max(4.0 * float(sigma), 3))
        k += k % 2 == 0
        x = torch.arange(k, dtype=image.dtype, device=image.device) - k // 2
        g = torch.exp(-x.pow(2.0) / (2 * sigma.pow(2.0)))
        g = g / g.sum()
        shape, pad = ((1, k), (k // 2, k // 2, 0, 0)) if axis == -1 else ((k, 1), (0, 0, k // 2, k // 2))
        channels = out.shape[1]
        out = F.conv2d(F.pad(out, pad, mode="reflect"), g.view(1, 1, *shape).expand(channels, 1, *shape), groups=channels)
    return F.interpolate(out, size=size, mode="bicubic", align_corners=True)


class FrozenCLIPImageEncoder(_Frozen):
    """Images "b 3 H W" in [-1, 1] -> all last-block tokens "b (1 + patches) d"."""

    def __init__(self, model: CLIPVisionModel) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self._freeze()

    @classmethod
    def from_pretrained(cls, path: str | Path) -> FrozenCLIPImageEncoder:
        """``path`` holds a CLIPVisionModel or a full CLIPModel."""
        path = _require(path, "CLIP image encoder", "config.json")
        return cls(CLIPVisionModel.from_pretrained(path, local_files_only=True))

    def save_pretrained(self, path: str | Path) -> None:
        self.model.save_pretrained(path)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        # Upstream: kornia.geometry.resize(224, bicubic, align_corners=True, antialias=True). Like
        # kornia, an image already at the target size is left alone.
        size = self.model.config.image_size
        if tuple(image.shape[-2:]) != (size, size):
            image = resize_antialiased(image, (size, size))
        return ((image + 1.0) / 2.0 - self.mean) / self.std

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(image.float()).to(self.model.dtype)
        # last_hidden_state is taken before post_layernorm (which HF applies to the pooled token only),
        # as FrozenOpenCLIPImageEmbedderV2 returns the transformer output without ln_post.
        return self.model(pixel_values=pixels).last_hidden_state


# -- tiny random builders for tests (seed torch before calling for reproducible weights) --


def tiny_vae() -> FrozenVAE:
    """Two down blocks: 8x fewer channels than SD-2.x and a 2x (not 8x) downsampling."""
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.18215,
    )
    return FrozenVAE(vae, chunk_frames=2)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP tokenizer with no merges: 256 bytes, their end-of-word forms, bos, eos.

    Built in memory, so no vocabulary download. '!' is id 0 as in the real vocabulary.
    """
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={tok: i for i, tok in enumerate(vocab)}, merges=[], pad_token="!", model_max_length=77)


def tiny_clip_text(hidden_size: int = 32) -> FrozenCLIPTextEncoder:
    tokenizer = tiny_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="gelu",  # OpenCLIP ViT-H uses GELU, not OpenAI's quick_gelu
        projection_dim=hidden_size,
        # A small vocabulary must carry its own special ids: the defaults point past its end.
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return FrozenCLIPTextEncoder(CLIPTextModel(config), tokenizer)


def tiny_clip_image(hidden_size: int = 40) -> FrozenCLIPImageEncoder:
    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act="gelu",
        projection_dim=hidden_size,
    )
    return FrozenCLIPImageEncoder(CLIPVisionModel(config))


# -- full-size architectures with random weights: benchmarks without weight files (encoders.kind=random)


def sd2_vae_random() -> FrozenVAE:
    """stabilityai/stable-diffusion-2-1 vae/config.json (83.7 M parameters), random init."""
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=768,
        scaling_factor=0.18215,
    )
    return FrozenVAE(vae, chunk_frames=4)


def vit_h_text_random() -> FrozenCLIPTextEncoder:
    """OpenCLIP ViT-H/14 text tower sizes (laion2b_s32b_b79k): 1024 wide, 24 layers, 16 heads; the tiny
    tokenizer (ids stay inside the full vocabulary), random init."""
    tokenizer = tiny_clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return FrozenCLIPTextEncoder(CLIPTextModel(config), tokenizer)


def vit_h_image_random() -> FrozenCLIPImageEncoder:
    """OpenCLIP ViT-H/14 vision tower sizes: 1280 wide, 32 layers, 16 heads, 224 px, patch 14 (257 tokens)."""
    config = CLIPVisionConfig(
        hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
        image_size=224, patch_size=14, hidden_act="gelu", projection_dim=1024,
    )
    return FrozenCLIPImageEncoder(CLIPVisionModel(config))
