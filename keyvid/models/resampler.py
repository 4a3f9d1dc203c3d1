"""Image projector: DynamiCrafter / KeyVID ``Resampler`` and its keyframe token selection.

A Perceiver resampler (IP-Adapter's ``resampler.py``, via DynamiCrafter
``lvdm/modules/encoders/resampler.py``) turns the OpenCLIP ViT-H image tokens
(b, 257, 1280) of the first frame into ``num_queries`` tokens per frame of a
``video_length``-frame clip: "b (t l) d" with l = 16. KeyVID uses 48 frames (2 s at
24 fps) and then keeps the 16 tokens of each keyframe (Sec. 3.2: "We select T_K
features at keyframe indices").

Parameter names are upstream's (``image_proj_model.*`` without the prefix).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from keyvid.models.attention import attend


class PerceiverAttention(nn.Module):
    """Latents attend to [image tokens, latents]; LayerNorm on both inputs, no biases."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x: "b n d" image features, latents: "b l d" -> "b l d"."""
        x = self.norm1(x)
        latents = self.norm2(latents)
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)
        # Upstream scales q and k by dim_head**-0.25 each and softmaxes in float32 for
        # fp16 stability; SDPA applies the same dim_head**-0.5 and is stable in half precision.
        return self.to_out(attend(self.to_q(latents), k, v, self.heads))


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear without biases (indices 0, 1, 3 hold the weights, as upstream)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class Resampler(ModelMixin, ConfigMixin):
    """Perceiver resampler with ``num_queries`` learned queries per frame.

    Args:
        dim: width of the latents.
        depth: number of (attention, feed-forward) layers.
        dim_head, heads: attention head width and count.
        num_queries: tokens per frame (16).
        embedding_dim: width of the input image tokens (1280 for OpenCLIP ViT-H).
        output_dim: width of the output tokens (the UNet's context_dim).
        ff_mult: feed-forward expansion.
        video_length: frames; the latents hold ``num_queries * video_length`` queries.
    """

    @register_to_config
    def __init__(
        self,
        dim: int = 1024,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 12,
        num_queries: int = 16,
        embedding_dim: int = 1280,
        output_dim: int = 1024,
        ff_mult: int = 4,
        video_length: int = 48,
    ) -> None:
        super().__init__()
        self.num_queries = num_queries
        self.latents = nn.Parameter(torch.randn(1, num_queries * video_length, dim) / dim**0.5)
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim, dim_head, heads), feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: "b n embedding_dim" -> "b (video_length num_queries) output_dim"."""
        latents = self.latents.expand(x.shape[0], -1, -1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def image_resampler_512(video_length: int = 48) -> Resampler:
    """The image_proj_stage_config of KeyVID (video_length 48) and DynamiCrafter-512 (16)."""
    return Resampler(video_length=video_length)


def interpolate_query_latents(latents: torch.Tensor, video_length: int, num_queries: int = 16) -> torch.Tensor:
    """Stretch per-frame queries "1 (t l) d" to ``video_length`` frames: "1 (video_length l) d".

    Upstream KeyVID (``utils/utils_train.py::load_checkpoints``) turns DynamiCrafter's
    16-frame latents [1, 256, 1024] into 48-frame ones [1, 768, 1024] by viewing them as
    a (t, l) image per channel and resizing it bilinearly (align_corners=False) to
    (48, l); the query axis l keeps its size, so only the frame axis is interpolated.
    """
    grid = rearrange(latents, "b (t l) d -> b d t l", l=num_queries)
    grid = F.interpolate(grid, size=(video_length, num_queries), mode="bilinear", align_corners=False)
    return rearrange(grid, "b d t l -> b (t l) d")


def select_keyframe_tokens(tokens: torch.Tensor, frame_idx: torch.Tensor, num_queries: int = 16) -> torch.Tensor:
    """Keep the tokens of the keyframes: "b (T l) c" + "b T_K" indices -> "b (T_K l) c".

    Frame f owns tokens ``[f * num_queries, (f + 1) * num_queries)`` (upstream
    ``select_keyframes``); the result is in ``frame_idx`` order.
    """
    b, _, c = tokens.shape
    per_frame = rearrange(tokens, "b (t l) c -> b t l c", l=num_queries)
    index = frame_idx.long()[:, :, None, None].expand(b, frame_idx.shape[1], num_queries, c)
    return rearrange(torch.gather(per_frame, 1, index), "b k l c -> b (k l) c")
