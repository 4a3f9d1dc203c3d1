"""Attention and transformer blocks of the KeyVID / DynamiCrafter video UNet.

Every attention goes through ``torch.nn.functional.scaled_dot_product_attention``
(no xformers). Upstream switches to an xformers path when xformers is importable
and that path silently drops the audio branch (fixtures README, "xformers caveat");
here the audio branch is always computed.

Module and parameter names follow upstream ``lvdm/modules/attention.py`` except for
the renames listed in ``keyvid.models.convert.UNET_RENAMES`` (``to_out.0`` ->
``to_out``, ``ff.net.0.proj`` -> ``ff.proj``, ``ff.net.2`` -> ``ff.out``).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CrossAttentionWeights = Literal["upstream", "paper"]


# The largest batch of sequences handed to one SDPA call. The temporal attentions see one sequence
# per clip and latent pixel (batch x h x w: 98 304 for the small UNet at batch 256, 16x24 latents),
# and CUDA's fused kernels put the batch on a grid axis limited to 65 535 blocks: at batch 256 the
# cuDNN backward failed (``mha_graph.execute ... is_good()``) and flash gave "invalid argument"
# (../shared/ENV_NOTES.md). Larger batches are split into equal chunks under this limit; the
# result is the same (attention is independent per sequence). BENCHMARKS.md has the measurement.
SDPA_MAX_BATCH = 65_535


def sdpa_chunks(batch: int, limit: int = SDPA_MAX_BATCH) -> list[int]:
    """Chunk sizes that split ``batch`` sequences into the fewest near-equal SDPA calls of at most ``limit``."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    n = -(-batch // limit)
    return [batch // n + (i < batch % n) for i in range(n)] if batch else [0]


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` on "b h n d", split along b into ``sdpa_chunks`` calls."""
    sizes = sdpa_chunks(q.shape[0], SDPA_MAX_BATCH)
    if len(sizes) == 1:
        return F.scaled_dot_product_attention(q, k, v)
    parts = zip(q.split(sizes), k.split(sizes), v.split(sizes))
    return torch.cat([F.scaled_dot_product_attention(*p) for p in parts])


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention, scale dim_head**-0.5 as upstream: "b n (h d)" in and out."""
    q, k, v = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (q, k, v))
    return rearrange(sdpa(q, k, v), "b h n d -> b n (h d)")


class FeedForward(nn.Module):
    """GEGLU feed-forward with inner width ``mult * dim`` (upstream ``FeedForward(glu=True)``, exact erf GELU)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim * mult * 2)
        self.out = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj(x).chunk(2, dim=-1)
        return self.out(a * F.gelu(gate))


class SelfAttention(nn.Module):
    """Plain multi-head self-attention: bias-free q/k/v, output projection with bias."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        # Hook for FreeNoise (keyvid.diffusion.freenoise.temporal_windows): a replacement for
        # ``attend`` with the same signature, set on the temporal self-attentions only.
        self.window_attend: Callable[..., torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = attend if self.window_attend is None else self.window_attend
        return self.to_out(fn(self.to_q(x), self.to_k(x), self.to_v(x), self.heads))


class TextImageAudioAttention(nn.Module):
    """Spatial cross-attention with three separate softmaxes over text, image and audio tokens.

    One query, three key/value sets (Sec. 3.2 "Feature Fusion"):
    ``out = attn(q, text) + w_img * attn(q, image) + w_aud * attn(q, audio)``.

    ``weights`` picks how ``w_img`` and ``w_aud`` are parameterised:

    * ``"upstream"`` (default, the released checkpoints expect it): ``w_img = 1.0``
      fixed, ``w_aud = tanh(beta) + 1`` with the scalar ``beta`` initialised at 0
      (upstream ``audio_cross_attention_scale_learnable``).
    * ``"paper"``: two learnable scalars ``image_scale`` (lambda_2) and
      ``audio_scale`` (lambda_1), both initialised at 1.0, as the equation in Sec. 3.2.

    In both modes ``to_k_ap``/``to_v_ap`` start at zero (upstream does this), so a
    model initialised from DynamiCrafter starts with a zero audio term: the values
    are zero, so the audio attention output is exactly zero until they are trained.
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        heads: int,
        dim_head: int,
        weights: CrossAttentionWeights = "upstream",
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.weights = weights
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_k_ip = nn.Linear(context_dim, inner, bias=False)
        self.to_v_ip = nn.Linear(context_dim, inner, bias=False)
        self.to_k_ap = nn.Linear(context_dim, inner, bias=False)
        self.to_v_ap = nn.Linear(context_dim, inner, bias=False)
        nn.init.zeros_(self.to_k_ap.weight)
        nn.init.zeros_(self.to_v_ap.weight)
        if weights == "upstream":
            self.beta = nn.Parameter(torch.tensor(0.0))
        elif weights == "paper":
            self.image_scale = nn.Parameter(torch.tensor(1.0))
            self.audio_scale = nn.Parameter(torch.tensor(1.0))
        else:
            raise ValueError(f"cross_attention_weights must be 'upstream' or 'paper', got {weights!r}")
        self.to_out = nn.Linear(inner, dim)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """x: "(b t) n c"; text: "b 77 c" shared by the t frames; image: "(b t) 16 c"; audio: "(b t) L c"."""
        frames = x.shape[0] // text.shape[0]
        q = self.to_q(x)
        # Project the text once per sample and repeat the keys, instead of repeating 77
        # tokens per frame before the projection as upstream does (same values).
        k_txt = self.to_k(text).repeat_interleave(frames, dim=0)
        v_txt = self.to_v(text).repeat_interleave(frames, dim=0)
        out_txt = attend(q, k_txt, v_txt, self.heads)
        out_img = attend(q, self.to_k_ip(image), self.to_v_ip(image), self.heads)
        out_aud = attend(q, self.to_k_ap(audio), self.to_v_ap(audio), self.heads)
        if self.weights == "upstream":
            out = out_txt + out_img + out_aud * (torch.tanh(self.beta) + 1)
        else:
            out = out_txt + self.image_scale * out_img + self.audio_scale * out_aud
        return self.to_out(out)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: self-attention, second attention, GEGLU feed-forward.

    Spatial blocks pass text/image/audio to a :class:`TextImageAudioAttention` as
    ``attn2``. Temporal blocks (``cross=None``) make ``attn2`` a second
    self-attention over frames, as upstream's ``only_self_att`` temporal
    transformer does (its context is ignored).
    """

    def __init__(self, dim: int, heads: int, dim_head: int, cross: TextImageAudioAttention | None) -> None:
        super().__init__()
        self.attn1 = SelfAttention(dim, heads, dim_head)
        self.attn2 = cross if cross is not None else SelfAttention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        audio: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        if text is None:
            x = self.attn2(self.norm2(x)) + x
        else:
            x = self.attn2(self.norm2(x), text, image, audio) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Per-frame transformer over the h*w positions, conditioned on text, image and audio tokens.

    GroupNorm(32, eps 1e-6), linear in/out projections (upstream ``use_linear=True``),
    ``proj_out`` zero-initialised so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        dim_head: int,
        depth: int,
        context_dim: int,
        cross_attention_weights: CrossAttentionWeights = "upstream",
    ) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(
                inner,
                heads,
                dim_head,
                TextImageAudioAttention(inner, context_dim, heads, dim_head, cross_attention_weights),
            )
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(
        self, x: torch.Tensor, text: torch.Tensor, image: torch.Tensor, audio: torch.Tensor
    ) -> torch.Tensor:
        """x: "(b t) c h w" -> same (and in the same memory layout: free views when channels-last)."""
        n, c, h, w = x.shape
        z = self.norm(x).permute(0, 2, 3, 1).reshape(n, h * w, c)
        z = self.proj_in(z)
        for block in self.transformer_blocks:
            z = block(z, text, image, audio)
        z = self.proj_out(z)
        return z.reshape(n, h, w, c).permute(0, 3, 1, 2) + x


class TemporalTransformer(nn.Module):
    """Self-attention over the frames of each spatial position; no causal mask, no positional term.

    Upstream builds it with ``use_relative_position=False`` and
    ``use_causal_attention=False``; the frame order only enters through the
    time embedding (frame index) and the temporal convolutions.

    ``conv_proj=True`` keeps upstream's kernel-1 ``Conv1d`` projections, which the
    ``init_attn`` block uses (it is built without ``use_linear``). A kernel-1 Conv1d is
    a Linear; the Conv1d is kept so that checkpoints load without reshaping.
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, conv_proj: bool = False) -> None:
        super().__init__()
        inner = heads * dim_head
        self.conv_proj = conv_proj
        self.norm = nn.GroupNorm(32, channels, eps=1e-6)
        if conv_proj:
            self.proj_in = nn.Conv1d(channels, inner, kernel_size=1)
            self.proj_out = nn.Conv1d(inner, channels, kernel_size=1)
        else:
            self.proj_in = nn.Linear(channels, inner)
            self.proj_out = nn.Linear(inner, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.transformer_blocks = nn.ModuleList(
            TransformerBlock(inner, heads, dim_head, cross=None) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: "(b t) c h w" -> same, in x's memory layout (NCHW or channels-last)."""
        n, c, h, w = x.shape
        b, t = n // num_frames, num_frames
        # The GroupNorm statistics span all frames of a sample, as upstream normalises (b, c, t, h, w);
        # "b c t (h w)" is a view of x in either layout.
        z = self.norm(x.unflatten(0, (b, t)).transpose(1, 2).flatten(3))
        z = z.permute(0, 3, 2, 1).reshape(b * h * w, t, c)  # "(b h w) t c": the one copy in
        if self.conv_proj:  # a kernel-1 Conv1d is a Linear on the last axis
            z = F.linear(z, self.proj_in.weight[..., 0], self.proj_in.bias)
        else:
            z = self.proj_in(z)
        for block in self.transformer_blocks:
            z = block(z)
        if self.conv_proj:
            z = F.linear(z, self.proj_out.weight[..., 0], self.proj_out.bias)
        else:
            z = self.proj_out(z)
        z = z.unflatten(0, (b, h, w))  # "b h w t c"; the one copy out, into x's layout:
        if x.is_contiguous():
            z = z.permute(0, 3, 4, 1, 2).reshape(n, c, h, w)
        else:
            z = z.permute(0, 3, 1, 2, 4).reshape(n, h, w, c).permute(0, 3, 1, 2)
        return z + x
