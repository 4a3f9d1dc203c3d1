"""ImageBind's vision encoder (Girdhar et al., 2023): images -> the joint embedding space.

Needed by AlignSync (keyvid/eval/avsync.py), which compares each frame's vision embedding with the
clip's audio embedding. Layout of ``imagebind_huge``'s vision branch (facebookresearch/ImageBind
``imagebind_model.py``):

1. an image "b 3 224 224" is repeated to 2 frames (``PadIm2Video(ntimes=2, pad_type="repeat")``),
   then ``Conv3d(3, D, kernel=stride=(2, 14, 14), bias=False)``: 16 x 16 = 256 patch tokens;
2. a learnt cls token in front and a learnt position embedding (257 tokens);
3. ``LayerNorm(eps=1e-6)`` before the blocks (the only trunk with one), then pre-LN blocks with
   plain multi-head attention (no bias_kv, unlike audio), no drop path at inference;
4. head: ``LayerNorm(eps=1e-6)`` -> cls token -> ``Linear(D, 1024, bias=False)``; postprocessor:
   L2 normalisation only (no logit scale for vision).

Huge: D = 1280, 32 blocks, 16 heads. Parameter names map one to one onto ImageBind's
(``UPSTREAM_KEYS``), and ``load_imagebind_vision`` reads ``imagebind_huge.pth`` through that map.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from keyvid.models.imagebind_audio import Mlp, read_state_dict

UPSTREAM_KEYS: tuple[tuple[str, str], ...] = (
    ("cls_token", "modality_preprocessors.vision.cls_token"),
    ("stem.weight", "modality_preprocessors.vision.rgbt_stem.proj.1.weight"),
    ("pos_embed", "modality_preprocessors.vision.pos_embedding_helper.pos_embed"),
    ("pre_norm.", "modality_trunks.vision.pre_transformer_layer.0."),
    ("blocks.", "modality_trunks.vision.blocks."),
    ("head_norm.", "modality_heads.vision.0."),
    ("head_proj.", "modality_heads.vision.2."),
)


def to_upstream_key(key: str) -> str:
    for ours, theirs in UPSTREAM_KEYS:
        if key == ours or (ours.endswith(".") and key.startswith(ours)):
            return theirs + key[len(ours):]
    raise KeyError(f"{key!r} has no ImageBind counterpart")


class Attention(nn.Module):
    """``nn.MultiheadAttention(dim, heads, bias=True)`` parameters (packed in_proj), run with SDPA."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # "b n d"
        q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=self.num_heads)
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        return self.out_proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n e -> b n (h e)"))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class ImageBindVision(nn.Module):
    """"b 3 S S" images (CLIP-normalised) -> unit-norm joint-space embeddings "b out_dim"."""

    def __init__(self, embed_dim: int, num_blocks: int, num_heads: int, image_size: int = 224,
                 patch: int = 14, out_embed_dim: int = 1024) -> None:
        super().__init__()
        self.image_size = image_size
        self.stem = nn.Conv3d(3, embed_dim, (2, patch, patch), stride=(2, patch, patch), bias=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (image_size // patch) ** 2, embed_dim))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pre_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads) for _ in range(num_blocks))
        self.head_norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_proj = nn.Linear(embed_dim, out_embed_dim, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Trunk tokens "b (1 + n) d"."""
        s = self.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s):
            raise ValueError(f"expected images (b, 3, {s}, {s}), got {tuple(images.shape)}")
        video = images.unsqueeze(2).expand(-1, -1, 2, -1, -1)  # PadIm2Video: repeat to 2 frames
        x = rearrange(self.stem(video), "b d t h w -> b (t h w) d")
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.pre_norm(x)
        for block in self.blocks:
            x = block(x)
        return x

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head_proj(self.head_norm(self.forward(images))[:, 0]), dim=-1)

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        return {to_upstream_key(k): v for k, v in self.state_dict().items()}


def imagebind_vision(embed_dim: int, num_blocks: int, num_heads: int, image_size: int = 224,
                     out_embed_dim: int = 1024) -> ImageBindVision:
    return ImageBindVision(embed_dim, num_blocks, num_heads, image_size=image_size, out_embed_dim=out_embed_dim)


def imagebind_vision_huge() -> ImageBindVision:
    """The vision branch of ``imagebind_huge`` (1280 wide, 32 blocks, 16 heads, 224 px, 1024-d out)."""
    return imagebind_vision(1280, 32, 16)


def imagebind_vision_tiny(out_embed_dim: int = 32) -> ImageBindVision:
    """A small random-weight stand-in for tests (same layout, 28 px images)."""
    return imagebind_vision(64, 2, 4, image_size=28, out_embed_dim=out_embed_dim)


def load_imagebind_vision(path: str | Path, model: ImageBindVision | None = None) -> ImageBindVision:
    """Load ImageBind's vision branch from ``imagebind_huge.pth`` (any key prefix, e.g. a KeyVID checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path} (imagebind_huge.pth)")
    model = imagebind_vision_huge() if model is None else model
    sd = read_state_dict(path)
    anchor = "modality_preprocessors.vision.rgbt_stem.proj.1.weight"
    prefixes = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
    if len(prefixes) != 1:
        raise KeyError(f"{path}: expected one ImageBind vision stem ({anchor!r}), found {len(prefixes)}")
    ours, missing = {}, []
    for key, target in model.state_dict().items():
        name = prefixes[0] + to_upstream_key(key)
        if name not in sd:
            missing.append(name)
            continue
        if tuple(sd[name].shape) != tuple(target.shape):
            raise ValueError(f"{path}: {name} has shape {tuple(sd[name].shape)}, model expects {tuple(target.shape)}")
        ours[key] = sd[name].to(target.dtype)
    if missing:
        raise KeyError(f"{path} lacks {len(missing)} ImageBind vision tensors: {missing[:5]}")
    model.load_state_dict(ours, strict=True)
    return model.eval().requires_grad_(False)
