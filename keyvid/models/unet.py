"""KeyVID keyframe UNet: DynamiCrafter's 3D latent video UNet with audio cross-attention.

Re-implements upstream KeyVID ``lvdm/modules/networks/openaimodel3d_v4.py::UNetModel``
on its plain (non-xformers) attention path, with the configuration of
``configs/training/keyframe_generation.yaml`` (generator) and
``keyframe_interpolation.yaml`` (interpolator). The forward matches the recorded
upstream outputs (``../shared/fixtures/upstream/keyvid_unet_tiny_parity.*``).

Layout, as upstream: ``input_blocks.0`` is conv_in, followed by ``init_attn`` (a
temporal transformer); every later input/middle/output block is a stage of
[ResBlock (+ temporal conv), SpatialTransformer, TemporalTransformer] at the
attention resolutions, plus Down/Upsample between levels. Activations are kept
as "(b t) c h w"; the temporal layers fold the frames back in.

Parameter names equal upstream's up to ``keyvid.models.convert.UNET_RENAMES``.
Save/load with config comes from diffusers' ``ModelMixin``/``ConfigMixin``
(``save_pretrained`` writes ``config.json`` + safetensors, ``from_pretrained``
reads them back); gradient checkpointing via ``enable_gradient_checkpointing()``.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import nn

from keyvid.models.attention import CrossAttentionWeights, SpatialTransformer, TemporalTransformer

FrameIndexMode = Literal["upstream", "latent", "none"]

# Context layout fixed by upstream (openaimodel3d_v4.py raises unless l_context == 77 + 16 t):
# 77 OpenCLIP text tokens shared by all frames, then 16 Resampler image tokens per frame.
TEXT_TOKENS = 77
IMAGE_TOKENS_PER_FRAME = 16
# ImageBind-huge audio token width; upstream hard-codes audio_proj_2 = Linear(768, 1024).
AUDIO_DIM = 768


def sinusoidal_embedding(values: torch.Tensor, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """[cos | sin] embedding of integer-valued ``values`` "n" -> "n dim", computed in float32.

    Upstream ``timestep_embedding`` (cos first, frequencies exp(-ln(1e4) i / half)) is
    diffusers' ``get_timestep_embedding`` with flip_sin_to_cos=True and shift 0.
    """
    return get_timestep_embedding(values, dim, flip_sin_to_cos=True, downscale_freq_shift=0).to(dtype)


def embedding_mlp(in_dim: int, hidden_dim: int, out_dim: int, zero_out: bool) -> nn.Sequential:
    """Linear, SiLU, Linear; ``zero_out`` zero-initialises the last layer so a new condition starts at 0."""
    mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, out_dim))
    if zero_out:
        nn.init.zeros_(mlp[2].weight)
        nn.init.zeros_(mlp[2].bias)
    return mlp


class Float32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in at least float32.

    Upstream's ``normalization()`` (ResBlocks and the output head) casts to float32 so
    half-precision activations are normalised stably; float64 stays float64.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(x.dtype, torch.float32)
        return F.group_norm(
            x.to(dtype), self.num_groups, self.weight.to(dtype), self.bias.to(dtype), self.eps
        ).to(x.dtype)


class TemporalConvBlock(nn.Module):
    """Four (3,1,1) Conv3d over frames with a residual; the last conv starts at zero (identity block).

    From ModelScope's ``unet_sd.py`` via DynamiCrafter. Upstream fixes its dropout at 0.1,
    which is also the UNet dropout of both KeyVID configs.
    """

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()

        def conv(with_dropout: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.GroupNorm(32, channels), nn.SiLU()]
            if with_dropout:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0)))
            return nn.Sequential(*layers)

        self.conv1 = conv(with_dropout=False)
        self.conv2 = conv(with_dropout=True)
        self.conv3 = conv(with_dropout=True)
        self.conv4 = conv(with_dropout=True)
        nn.init.zeros_(self.conv4[-1].weight)
        nn.init.zeros_(self.conv4[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: "b c t h w" -> same.

        Runs as 2-D convolutions over a "b c t (h w)" view (a (3,1,1) kernel never mixes
        positions), with the Conv3d weights viewed as (3,1) kernels. For activations stored
        frames-outer, channels-last ("b t h w c" in memory, see ``KeyframeUNet.set_channels_last``)
        that view costs no copy and the convolutions run in cuDNN's native NHWC layout.
        """
        h, w = x.shape[-2:]
        x4 = x.flatten(3)
        y = x4
        for block in (self.conv1, self.conv2, self.conv3, self.conv4):
            *pre, conv = block
            for layer in pre:
                y = layer(y)
            y = F.conv2d(y, conv.weight[..., 0], conv.bias, padding=(1, 0))
        return (x4 + y).unflatten(3, (h, w))


class ResBlock(nn.Module):
    """Time-conditioned residual block (additive embedding, no scale-shift) followed by a temporal conv."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            Float32GroupNorm(32, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            Float32GroupNorm(32, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        nn.init.zeros_(self.out_layers[-1].weight)
        nn.init.zeros_(self.out_layers[-1].bias)
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)
        self.temporal_conv = TemporalConvBlock(out_channels, dropout)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x: "(b t) c h w", emb: "(b t) e" -> "(b t) c' h w"."""
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.skip_connection(x) + self.out_layers(h)
        h = rearrange(h, "(b t) c h w -> b c t h w", t=num_frames)
        return rearrange(self.temporal_conv(h), "b c t h w -> (b t) c h w")


class Downsample(nn.Module):
    """3x3 convolution with stride 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.ModuleList):
    """One UNet block: runs its layers in order, handing each the conditioning it takes.

    ``level`` is the resolution level of its input (0 = the full latent, 1 = half, ...)."""

    def __init__(self, layers, level: int = 0):
        super().__init__(layers)
        self.level = level

    def forward(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        text: torch.Tensor,
        image: torch.Tensor,
        audio: torch.Tensor,
        num_frames: int,
    ) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, num_frames)
            elif isinstance(layer, SpatialTransformer):
                h = layer(h, text, image, audio)
            elif isinstance(layer, TemporalTransformer):
                h = layer(h, num_frames)
            else:
                h = layer(h)
        return h


def _contiguous_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: channels-last weights (``set_channels_last(weights=True)``) are packed
    contiguous, as safetensors requires; other tensors are returned as they are."""
    for key, value in state_dict.items():
        if key.startswith(prefix) and isinstance(value, torch.Tensor) and not value.is_contiguous():
            state_dict[key] = value.contiguous()


class KeyframeUNet(ModelMixin, ConfigMixin):
    """KeyVID generator / interpolator UNet.

    Args:
        in_channels: latent channels in (4 noisy + 4 concatenated condition latents).
        out_channels: latent channels out.
        model_channels: base width; the time embedding is 4x this.
        channel_mult: width multiplier per level.
        num_res_blocks: ResBlocks per level in the encoder (one more per level in the decoder).
        attention_resolutions: downsampling factors (1, 2, 4, ...) that get spatial and temporal transformers.
        num_head_channels: width of every attention head; heads = channels // num_head_channels.
        transformer_depth: transformer blocks per spatial/temporal transformer.
        context_dim: width of text, image and projected audio tokens.
        dropout: dropout in the ResBlocks and temporal convolutions.
        default_fs: frame-stride condition used when ``forward`` gets ``fs=None`` (upstream 10).
        frame_index_mode: where the keyframe index (position in the 48-frame grid) enters.
            ``"upstream"`` (default, because the released KeyVID generator checkpoint expects
            it): a zero-initialised MLP on the sinusoidal index is added to each frame's time
            embedding (``frame_idx_embedding``). ``"latent"``: Sec. 3.2.2 of the paper says the
            embedding "is added up with the latent features"; here a zero-initialised MLP maps
            the sinusoidal index to ``model_channels`` and it is added to the features right
            after conv_in (the raw 8-channel input mixes noisy and condition latents, so the
            first feature map is the earliest place with a per-frame latent of width C).
            ``"none"``: no index embedding (the interpolator).
        cross_attention_weights: ``"upstream"`` (default, checkpoints expect it) uses image
            weight 1.0 and audio weight ``tanh(beta)+1`` with beta=0 at init; ``"paper"`` uses
            learnable scalars lambda (init 1.0) for image and audio. See
            :class:`keyvid.models.attention.TextImageAudioAttention`.

    ``temporal_length`` of the upstream config has no counterpart: without relative
    positions or a causal mask it does not enter the network, and the frame count is
    read from the input.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        out_channels: int = 4,
        model_channels: int = 320,
        channel_mult: Sequence[int] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (4, 2, 1),
        num_head_channels: int = 64,
        transformer_depth: int = 1,
        context_dim: int = 1024,
        dropout: float = 0.1,
        default_fs: int = 10,
        frame_index_mode: FrameIndexMode = "upstream",
        cross_attention_weights: CrossAttentionWeights = "upstream",
    ) -> None:
        super().__init__()
        if frame_index_mode not in ("upstream", "latent", "none"):
            raise ValueError(f"frame_index_mode must be 'upstream', 'latent' or 'none', got {frame_index_mode!r}")
        self.model_channels = model_channels
        self.default_fs = default_fs
        self.channels_last = False
        self.frame_index_mode = frame_index_mode
        self.gradient_checkpointing = False
        self.checkpoint_levels: frozenset[int] | None = None  # set_checkpoint_levels
        self.register_state_dict_post_hook(_contiguous_state)  # channels-last weights save as usual
        emb_dim = model_channels * 4

        self.time_embed = embedding_mlp(model_channels, emb_dim, emb_dim, zero_out=False)
        self.fps_embedding = embedding_mlp(model_channels, emb_dim, emb_dim, zero_out=True)
        if frame_index_mode == "upstream":
            self.frame_idx_embedding = embedding_mlp(model_channels, emb_dim, emb_dim, zero_out=True)
        elif frame_index_mode == "latent":
            self.frame_idx_latent_embedding = embedding_mlp(model_channels, emb_dim, model_channels, zero_out=True)
        self.audio_proj_2 = nn.Linear(AUDIO_DIM, context_dim)

        def spatial_temporal(ch: int) -> list[nn.Module]:
            heads = ch // num_head_channels
            return [
                SpatialTransformer(
                    ch, heads, num_head_channels, transformer_depth, context_dim, cross_attention_weights
                ),
                TemporalTransformer(ch, heads, num_head_channels, transformer_depth),
            ]

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(in_channels, model_channels, 3, padding=1)])])
        # Upstream hard-codes 8 heads for init_attn, whatever the width.
        self.init_attn = Stage(
            [TemporalTransformer(model_channels, 8, num_head_channels, transformer_depth, conv_proj=True)]
        )
        skip_channels = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += spatial_temporal(ch)
                self.input_blocks.append(Stage(layers, level))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(ch)], level))
                skip_channels.append(ch)
                ds *= 2

        self.middle_block = Stage(
            [ResBlock(ch, emb_dim, ch, dropout), *spatial_temporal(ch), ResBlock(ch, emb_dim, ch, dropout)],
            len(channel_mult) - 1,
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, mult * model_channels, dropout)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers += spatial_temporal(ch)
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Stage(layers, level))

        self.out = nn.Sequential(
            Float32GroupNorm(32, ch), nn.SiLU(), nn.Conv2d(model_channels, out_channels, 3, padding=1)
        )
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def set_channels_last(self, enabled: bool = True, weights: bool = False) -> "KeyframeUNet":
        """Keep activations channels-last ("(b t) h w c" in memory) through the whole network.

        Values do not change, only strides. The spatial transformers' "n c h w -> n (h w) c" and
        the temporal convolutions' frame views then cost no copy, and cuDNN convolves without its
        NCHW <-> NHWC transposes; the temporal transformers keep one transpose each way. It pays
        most under ``compile_blocks`` (eager GroupNorm on CUDA makes its input contiguous).

        ``weights=True`` also stores the convolution weights channels-last, which saves cuDNN a
        weight transpose per call (and, in training, a gradient transpose back). Call it before
        creating the optimizer (its state takes the weights' layout). ``state_dict()`` still
        returns contiguous tensors (a post-hook packs these weights), so ``save_pretrained``,
        accelerate's safetensors checkpoints and exports write as usual, and ``load_state_dict``
        copies into either layout.
        """
        self.channels_last = enabled
        if weights:
            self._conv_weight_format(torch.channels_last if enabled else torch.contiguous_format)
        return self

    def _conv_weight_format(self, fmt: torch.memory_format) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=fmt)

    def compile_blocks(self, scope: Literal["layer", "block"] = "layer", **compile_kwargs) -> None:
        """Regional compilation: ``torch.compile`` the UNet's repeated modules in place.

        ``scope="layer"`` (default) compiles every ResBlock (with its temporal convolutions),
        SpatialTransformer and TemporalTransformer whole, so each graph spans a norm, its layout
        changes, the projections, the attention blocks and the residual add. ``scope="block"``
        compiles ResBlocks and the inner TransformerBlocks only (the GroupNorm and rearranges
        around each transformer stay eager). Modules of one class and shape share a compiled
        graph (parameters are graph inputs), so this compiles a few dozen small graphs instead
        of one huge one.

        Shapes are specialised (``dynamic=False`` unless given): a dynamic-shape graph for the
        varying channel counts would lose the static kernels that are the point. Dynamo's
        per-function recompile limit (8) would be hit by the UNet's dozen-odd ResBlock shapes,
        after which it silently runs the rest eagerly, so it is raised to at least 64.
        """
        from keyvid.models.attention import SpatialTransformer, TemporalTransformer, TransformerBlock

        if scope == "layer":
            kinds: tuple[type, ...] = (ResBlock, SpatialTransformer, TemporalTransformer)
        elif scope == "block":
            kinds = (ResBlock, TransformerBlock)
        else:
            raise ValueError(f"scope must be 'layer' or 'block', got {scope!r}")
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        compile_kwargs.setdefault("dynamic", False)
        for module in self.modules():
            if isinstance(module, kinds):
                module.compile(**compile_kwargs)

    def set_checkpoint_levels(self, levels: Iterable[int] | None) -> "KeyframeUNet":
        """Selective gradient checkpointing: with ``enable_gradient_checkpointing()``, recompute
        only the stages at these resolution levels (0 = the full latent). ``None``: every stage.

        A level's activation memory scales with its channels x area (halving per level of this
        UNet), its FLOPs with channels^2 x area (about equal per level), so checkpointing level 0
        alone frees about half the activations for about a third of the full recompute.
        """
        if levels is None:
            self.checkpoint_levels = None
            return self
        levels = frozenset(int(v) for v in levels)
        n_levels = 1 + max(s.level for s in self.input_blocks)
        bad = sorted(v for v in levels if not 0 <= v < n_levels)
        if bad:
            raise ValueError(f"checkpoint levels {bad} out of range: this UNet has levels 0..{n_levels - 1}")
        self.checkpoint_levels = levels
        return self

    def _run(self, stage: Stage, h: torch.Tensor, *cond) -> torch.Tensor:
        if (
            self.gradient_checkpointing
            and torch.is_grad_enabled()
            and (self.checkpoint_levels is None or stage.level in self.checkpoint_levels)
        ):
            # diffusers' default: torch.utils.checkpoint with use_reentrant=False, which
            # replays dropout with the saved RNG state, so outputs and grads are unchanged.
            return self._gradient_checkpointing_func(stage, h, *cond)
        return stage(h, *cond)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor,
        audio: torch.Tensor,
        fs: torch.Tensor | None = None,
        frame_idx: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the diffusion target for a clip of t frames.

        Args:
            x: "b c t h w" noisy latents concatenated with the condition latents along c.
            timesteps: "b" diffusion steps.
            context: "b (77 + t*16) d": 77 text tokens shared by all frames, then 16 image
                tokens per frame (token 77 + 16 f + q is image token q of frame f).
            audio: "b t L 768" raw ImageBind audio tokens per frame; projected by
                ``audio_proj_2`` and L2-normalised here, as upstream.
            fs: "b" per-sample or "b t" per-frame frame-stride condition; None -> ``default_fs``.
            frame_idx: "b t" index of each frame in the full-rate grid; required unless
                ``frame_index_mode == "none"``.

        Returns:
            "b out_channels t h w".
        """
        b, _, t, _, _ = x.shape
        if context.shape[1] != TEXT_TOKENS + t * IMAGE_TOKENS_PER_FRAME:
            raise ValueError(
                f"context has {context.shape[1]} tokens; expected {TEXT_TOKENS} text + "
                f"{IMAGE_TOKENS_PER_FRAME} image tokens x {t} frames"
            )
        if audio.shape[:2] != (b, t):
            raise ValueError(f"audio must be (b, t, L, {AUDIO_DIM}) with b={b}, t={t}; got {tuple(audio.shape)}")
        mc = self.model_channels
        text = context[:, :TEXT_TOKENS]
        image = rearrange(context[:, TEXT_TOKENS:], "b (t l) d -> (b t) l d", t=t)
        audio = F.normalize(self.audio_proj_2(audio), dim=-1)
        audio = rearrange(audio, "b t l d -> (b t) l d")

        emb = self.time_embed(sinusoidal_embedding(timesteps, mc, x.dtype)).repeat_interleave(t, dim=0)
        if fs is None:
            fs = torch.full((b,), self.default_fs, dtype=torch.long, device=x.device)
        # "b" or "b t" -> "(b t)": a per-sample fs is the same for every frame.
        fs = fs.reshape(b, -1).expand(b, t).reshape(b * t)
        emb = emb + self.fps_embedding(sinusoidal_embedding(fs, mc, x.dtype))

        conv_in = self.input_blocks[0][0]
        x = rearrange(x, "b c t h w -> (b t) c h w")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = conv_in(x)
        if self.frame_index_mode != "none":
            if frame_idx is None:
                raise ValueError(f"frame_index_mode={self.frame_index_mode!r} needs frame_idx (b, t)")
            idx_emb = sinusoidal_embedding(frame_idx.reshape(b * t), mc, x.dtype)
            if self.frame_index_mode == "upstream":
                emb = emb + self.frame_idx_embedding(idx_emb)
            else:
                h = h + self.frame_idx_latent_embedding(idx_emb)[:, :, None, None]

        cond = (emb, text, image, audio, t)
        h = self._run(self.init_attn, h, *cond)
        skips = [h]
        for stage in self.input_blocks[1:]:
            h = self._run(stage, h, *cond)
            skips.append(h)
        h = self._run(self.middle_block, h, *cond)
        for stage in self.output_blocks:
            h = self._run(stage, torch.cat([h, skips.pop()], dim=1), *cond)
        y = self.out(h).contiguous()
        return rearrange(y, "(b t) c h w -> b c t h w", b=b)


def keyframe_unet(
    *,
    model_channels: int = 320,
    channel_mult: Sequence[int] = (1, 2, 4, 4),
    num_res_blocks: int = 2,
    attention_resolutions: Sequence[int] = (4, 2, 1),
    num_head_channels: int = 64,
    transformer_depth: int = 1,
    context_dim: int = 1024,
    dropout: float = 0.1,
    interpolator: bool = False,
    frame_index_mode: FrameIndexMode | None = None,
    cross_attention_weights: CrossAttentionWeights = "upstream",
) -> KeyframeUNet:
    """Parameterised builder. ``interpolator=True`` selects ``frame_index_mode="none"``
    (upstream ``add_frame_idx: false`` in keyframe_interpolation.yaml) unless a mode is given."""
    if frame_index_mode is None:
        frame_index_mode = "none" if interpolator else "upstream"
    return KeyframeUNet(
        in_channels=8,
        out_channels=4,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(attention_resolutions),
        num_head_channels=num_head_channels,
        transformer_depth=transformer_depth,
        context_dim=context_dim,
        dropout=dropout,
        frame_index_mode=frame_index_mode,
        cross_attention_weights=cross_attention_weights,
    )


def keyframe_unet_512(interpolator: bool = False) -> KeyframeUNet:
    """Full size (1.47 B parameters), the UNet of upstream keyframe_generation.yaml /
    keyframe_interpolation.yaml and DynamiCrafter-512."""
    return keyframe_unet(interpolator=interpolator)


def keyframe_unet_small(
    interpolator: bool = False,
    *,
    frame_index_mode: FrameIndexMode | None = None,
    cross_attention_weights: CrossAttentionWeights = "upstream",
    dropout: float = 0.1,
) -> KeyframeUNet:
    """The synthetic reproduction's UNet (REPRODUCTION.md): 64 channels, 3 levels, attention at all
    of them, 32-wide heads: 40 M parameters (the 512 model has 1.47 B), for 32x48 latents."""
    return keyframe_unet(
        model_channels=64,
        channel_mult=(1, 2, 4),
        num_res_blocks=1,
        attention_resolutions=(4, 2, 1),
        num_head_channels=32,
        dropout=dropout,
        interpolator=interpolator,
        frame_index_mode=frame_index_mode,
        cross_attention_weights=cross_attention_weights,
    )


def keyframe_unet_tiny(
    interpolator: bool = False,
    *,
    frame_index_mode: FrameIndexMode | None = None,
    cross_attention_weights: CrossAttentionWeights = "upstream",
    dropout: float = 0.1,
) -> KeyframeUNet:
    """The tiny config of the parity fixture (32 channels, 2 levels, 16-wide heads): CPU tests in seconds."""
    return keyframe_unet(
        model_channels=32,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(2, 1),
        num_head_channels=16,
        dropout=dropout,
        interpolator=interpolator,
        frame_index_mode=frame_index_mode,
        cross_attention_weights=cross_attention_weights,
    )
