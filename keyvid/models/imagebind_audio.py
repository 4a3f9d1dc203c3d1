"""ImageBind's audio encoder (Girdhar et al., 2023), as KeyVID builds and uses it.

The layout follows ``ImageBindModel.forward_audio`` in KeyVID's vendored ImageBind
(README section 3a of ``../shared/fixtures/upstream``):

1. stem: ``Conv2d(1, D, 16, stride)`` over the ``(1, 128, 204)`` log-mel, tokens in ``(f t)`` order
   (token ``1 + f * T + t`` for frequency row ``f`` and time column ``t``), then ``LayerNorm`` (eps 1e-5);
2. a learnt cls token in front, plus a learnt position embedding over all tokens;
3. pre-LN blocks: ``x += MHA(LN1 x)``, ``x += MLP(LN2 x)`` (LN eps 1e-6), where MHA is
   ``nn.MultiheadAttention(add_bias_kv=True)``: one learnt key/value position appended at the end;
4. no final LayerNorm: ``forward`` returns the trunk output, which is what KeyVID consumes.
   The CLIP-space head (``embed``) is kept for key coverage and for ImageBind embeddings.

Stride ``(10, 10)`` is ImageBind's original 12 x 19 grid; KeyVID (Appendix A) uses ``(10, 4)``,
a 12 x 48 grid whose 48 time columns line up with 48 video frames (2 s at 24 fps), and
interpolates the pretrained 12 x 19 position embedding to it (``interpolate_pos_embed``).

Our parameter names are short; ``UPSTREAM_KEYS`` maps them to ImageBind's state-dict names
(``../shared/fixtures/upstream/imagebind_huge_audio_keys.json``), and ``load_imagebind_audio``
reads a real ``imagebind_huge.pth`` through that map.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# (our name, ImageBind name) for prefixes ending in "." and exact names otherwise.
UPSTREAM_KEYS: tuple[tuple[str, str], ...] = (
    ("cls_token", "modality_preprocessors.audio.cls_token"),
    ("stem.proj.", "modality_preprocessors.audio.rgbt_stem.proj."),
    ("stem.norm.", "modality_preprocessors.audio.rgbt_stem.norm_layer."),
    ("pos_embed", "modality_preprocessors.audio.pos_embedding_helper.pos_embed"),
    ("blocks.", "modality_trunks.audio.blocks."),
    ("head_norm.", "modality_heads.audio.0."),
    ("head_proj.", "modality_heads.audio.2."),
    ("log_logit_scale", "modality_postprocessors.audio.1.log_logit_scale"),
)
# imagebind_huge.pth was trained with stride (10, 10) on 128 x 204 mels: a 12 x 19 grid.
IMAGEBIND_GRID = (12, 19)
LAYOUTS = ("aligned", "upstream")


def to_upstream_key(key: str) -> str:
    """Our state-dict key -> ImageBind's (``ImageBindModel.state_dict()``, no ``imagebind_model.``)."""
    for ours, theirs in UPSTREAM_KEYS:
        if key == ours or (ours.endswith(".") and key.startswith(ours)):
            return theirs + key[len(ours):]
    raise KeyError(f"{key!r} has no ImageBind counterpart")


class BiasKVAttention(nn.Module):
    """``nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=True)`` on batch-first input, via SDPA.

    Same parameter names and packing as torch's module (``in_proj_weight`` = [q; k; v]), so ImageBind
    weights load unchanged. ``bias_k``/``bias_v`` are appended *after* the in-projection as one extra
    key/value position at the end of the sequence, as ``F.multi_head_attention_forward`` does.
    Written out so SDPA's fused kernels are used with a plain ``(b, n, d)`` layout.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.bias_k = nn.Parameter(torch.empty(1, 1, dim))
        self.bias_v = nn.Parameter(torch.empty(1, 1, dim))
        self.out_proj = nn.Linear(dim, dim)
        # torch's own MultiheadAttention initialisation.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_normal_(self.bias_k)
        nn.init.xavier_normal_(self.bias_v)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # "b n d" -> "b n d"
        b = x.shape[0]
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        k = torch.cat([k, self.bias_k.expand(b, -1, -1)], dim=1)  # "b (n+1) d"
        v = torch.cat([v, self.bias_v.expand(b, -1, -1)], dim=1)
        q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=self.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b h n e -> b n (h e)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as ImageBind's nn.GELU


class Block(nn.Module):
    """ImageBind ``BlockWithMasking`` for audio: pre-LN, no layer scale, stochastic depth."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = BiasKVAttention(dim, num_heads)
        self.norm_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)
        self.drop_path = drop_path

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        # Stochastic depth per sample (timm DropPath); matters only when the encoder is fine-tuned.
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty(x.shape[0], 1, 1).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._drop(self.attn(self.norm_1(x)))
        return x + self._drop(self.mlp(self.norm_2(x)))


class PatchStem(nn.Module):
    def __init__(self, embed_dim: int, kernel_size: int, stride: tuple[int, int]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, embed_dim, kernel_size, stride=stride, bias=False)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # "b 1 f t" -> "b (f' t') d"
        return self.norm(rearrange(self.proj(mel), "b d f t -> b (f t) d"))


def patch_grid(num_mel_bins: int, mel_frames: int, kernel_size: int, stride: tuple[int, int]) -> tuple[int, int]:
    """Token grid ``(freq rows, time columns)`` of a Conv2d stem without padding."""
    return ((num_mel_bins - kernel_size) // stride[0] + 1, (mel_frames - kernel_size) // stride[1] + 1)


class ImageBindAudio(nn.Module):
    """ImageBind's audio preprocessor + trunk (+ optional head): ``(b, 1, 128, 204)`` -> tokens."""

    def __init__(
        self,
        embed_dim: int,
        num_blocks: int,
        num_heads: int,
        kernel_size: int = 16,
        stride: tuple[int, int] = (10, 4),
        num_mel_bins: int = 128,
        mel_frames: int = 204,
        cls_token: bool = True,
        out_embed_dim: int | None = 1024,
        drop_path: float = 0.0,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.mel_shape = (num_mel_bins, mel_frames)
        self.grid = patch_grid(num_mel_bins, mel_frames, kernel_size, tuple(stride))
        self.num_prefix_tokens = int(cls_token)
        self.stem = PatchStem(embed_dim, kernel_size, tuple(stride))
        if cls_token:
            self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
            nn.init.normal_(self.cls_token, std=0.02)
        else:
            self.register_parameter("cls_token", None)
        num_tokens = self.num_prefix_tokens + self.grid[0] * self.grid[1]
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # ImageBind spreads drop_path linearly over depth: linspace(0, drop_path, num_blocks).
        rates = torch.linspace(0, drop_path, num_blocks, device="cpu").tolist()
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates)
        self.has_head = out_embed_dim is not None
        if self.has_head:
            # modality_heads.audio = (LayerNorm, SelectElement(0), Linear(bias=False));
            # modality_postprocessors.audio = (Normalize, LearnableLogitScaling(20, learnable=False)).
            self.head_norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head_proj = nn.Linear(embed_dim, out_embed_dim, bias=False)
            self.register_buffer("log_logit_scale", torch.tensor(math.log(20.0)))
        for module in self.modules():
            if isinstance(module, nn.Linear):  # ImageBind SimpleTransformer._init_weights
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """``(b, 1, bins, frames)`` normalised log-mel -> trunk tokens ``(b, prefix + F*T, D)``."""
        if mel.ndim != 4 or mel.shape[1] != 1 or tuple(mel.shape[2:]) != self.mel_shape:
            bins, frames = self.mel_shape
            raise ValueError(f"expected a mel of shape (b, 1, {bins}, {frames}), got {tuple(mel.shape)}")
        x = self.stem(mel)  # "b (f t) d"
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """ImageBind's joint-space audio embedding ``(b, out_embed_dim)`` (unit norm x 20)."""
        if not self.has_head or self.cls_token is None:
            raise RuntimeError("this encoder was built without the cls token or the embedding head")
        x = self.head_proj(self.head_norm(self.forward(mel))[:, 0])
        return F.normalize(x, dim=-1) * self.log_logit_scale.exp().clamp(max=100.0)

    def upstream_state_dict(self) -> dict[str, torch.Tensor]:
        """Our weights under ImageBind's names (``ImageBindModel.state_dict()`` keys)."""
        return {to_upstream_key(k): v for k, v in self.state_dict().items()}


def imagebind_audio(
    embed_dim: int,
    num_blocks: int,
    num_heads: int,
    stride: tuple[int, int] = (10, 4),
    out_embed_dim: int | None = 1024,
    drop_path: float = 0.0,
) -> ImageBindAudio:
    return ImageBindAudio(
        embed_dim, num_blocks, num_heads, stride=stride, out_embed_dim=out_embed_dim, drop_path=drop_path
    )


def imagebind_audio_huge(stride: tuple[int, int] = (10, 4), out_embed_dim: int | None = 1024) -> ImageBindAudio:
    """The audio branch of ``imagebind_huge`` (768 wide, 12 blocks, 12 heads). KeyVID keeps it frozen
    in the generator, so drop_path (0.1 upstream, inactive in eval) is left at 0."""
    return imagebind_audio(768, 12, 12, stride=stride, out_embed_dim=out_embed_dim)


def imagebind_audio_tiny(stride: tuple[int, int] = (10, 4), out_embed_dim: int | None = 32) -> ImageBindAudio:
    """The reduced-width configuration of the upstream parity fixture (64 wide, 2 blocks, 4 heads)."""
    return imagebind_audio(64, 2, 4, stride=stride, out_embed_dim=out_embed_dim)


def interpolate_pos_embed(
    pos_embed: torch.Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Resize a ``(1, prefix + Fs*Ts, D)`` position embedding to ``(1, prefix + Fd*Td, D)``.

    Prefix (cls) rows are kept; the grid part is resized with bilinear, ``align_corners=False``,
    as upstream ``lvdm/models/ddpm3d.py::interpolate_pos_embed`` does for 12x19 -> 12x48.
    Half-precision input is resized in float32 (CPU bilinear has no fp16 kernel everywhere).
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if grid.shape[1] != src_grid[0] * src_grid[1]:
        raise ValueError(f"pos_embed has {grid.shape[1]} grid tokens, not {src_grid[0]}x{src_grid[1]}")
    work = grid if grid.dtype in (torch.float32, torch.float64) else grid.float()
    work = rearrange(work, "b (f t) d -> b d f t", f=src_grid[0])
    work = F.interpolate(work, size=tuple(dst_grid), mode="bilinear", align_corners=False)
    work = rearrange(work, "b d f t -> b (f t) d").to(pos_embed.dtype)
    return torch.cat([prefix, work], dim=1)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    # mmap: imagebind_huge.pth is 4.5 GB and only the audio branch (~90 M params) is needed.
    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    if "state_dict" in sd and isinstance(sd["state_dict"], dict):  # a Lightning checkpoint (KeyVID)
        sd = sd["state_dict"]
    return sd


def _find_prefix(sd: dict[str, torch.Tensor], path: Path) -> str:
    """'' for imagebind_huge.pth, 'imagebind_model.' inside a KeyVID checkpoint, and so on."""
    anchor = "modality_preprocessors.audio.rgbt_stem.proj.weight"
    found = [k[: -len(anchor)] for k in sd if k.endswith(anchor)]
    if len(found) != 1:
        raise KeyError(f"{path}: expected one ImageBind audio stem ({anchor!r}), found {len(found)}")
    return found[0]


def load_imagebind_audio(path: str | Path, model: ImageBindAudio | None = None) -> ImageBindAudio:
    """Load ImageBind's audio branch from ``imagebind_huge.pth`` (or a safetensors/KeyVID checkpoint).

    ``model`` defaults to ``imagebind_audio_huge()``. The checkpoint's position embedding is resized
    from its grid (12 x 19 for imagebind_huge) to the model's; a model without a cls token drops the
    cls row and ignores ``cls_token``, a model without a head ignores the head. Every other tensor
    must be present with the model's shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    model = imagebind_audio_huge() if model is None else model
    sd = read_state_dict(path)
    prefix = _find_prefix(sd, path)
    ours = {}
    missing = []
    for key, target in model.state_dict().items():
        name = prefix + to_upstream_key(key)
        src = sd.get(name)
        if src is None:
            missing.append(name)
            continue
        if key == "pos_embed":
            src = _resize_checkpoint_pos_embed(src, model, path)
        if tuple(src.shape) != tuple(target.shape):
            raise ValueError(f"{path}: {name} has shape {tuple(src.shape)}, model expects {tuple(target.shape)}")
        ours[key] = src.to(target.dtype)
    if missing:
        raise KeyError(f"{path} lacks {len(missing)} ImageBind audio tensors: {missing}")
    model.load_state_dict(ours, strict=True)
    return model


def _resize_checkpoint_pos_embed(src: torch.Tensor, model: ImageBindAudio, path: Path) -> torch.Tensor:
    # ImageBind checkpoints always carry the cls row; find the grid from the token count.
    grid_tokens = src.shape[1] - 1
    if grid_tokens == model.grid[0] * model.grid[1]:
        src_grid = model.grid
    elif grid_tokens == IMAGEBIND_GRID[0] * IMAGEBIND_GRID[1]:
        src_grid = IMAGEBIND_GRID
    else:
        raise ValueError(
            f"{path}: pos_embed with {src.shape[1]} tokens fits neither the model grid {model.grid}"
            f" nor ImageBind's {IMAGEBIND_GRID}"
        )
    out = interpolate_pos_embed(src.float(), src_grid, model.grid, num_prefix_tokens=1)
    return out[:, 1 - model.num_prefix_tokens:]


def frame_token_index(
    num_tokens: int,
    num_frames: int = 48,
    tokens_per_frame: int = 12,
    layout: str = "aligned",
    freq_rows: int = 12,
) -> torch.Tensor:
    """Index table ``(num_frames, tokens_per_frame)``: row ``v`` = token indices fed for frame value ``v``.

    Built from upstream's ``split_audio(tokens, num_frames)``: segment ``s`` = the cls token followed
    by, for each frequency row ``f``, the ``k = T / num_frames`` time columns ``s*k .. s*k+k-1``
    (README 3a, ``idx.split48`` / ``idx.split12``).

    ``layout="upstream"`` reproduces the trained KeyVID generator: the segments are flattened and cut
    into chunks of ``tokens_per_frame`` (``select_keyframes(num_queries=12)``), and frame ``v`` takes
    chunk ``v``. With 13-token segments and 12-token chunks this drifts by one token per frame: frame
    1 gets row 11 of column 0, the cls token and rows 0..9 of column 1, and frame 47 gets mostly
    column 43. Use it only with upstream checkpoints.

    ``layout="aligned"`` (default for new training) gives frame ``v`` its own segment: all ``F*k``
    grid tokens of its time columns, preceded by the cls token when ``tokens_per_frame == F*k + 1``.
    With the KeyVID grid (12 x 48) and 12 tokens this is the 12 frequency rows of column ``v``; the
    cls token (a clip-level summary, identical for every frame) is dropped to keep the UNet's
    ``L = 12`` audio tokens per frame.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    grid_tokens = num_tokens - 1
    if grid_tokens % freq_rows:
        raise ValueError(f"{num_tokens} tokens are not cls + {freq_rows} frequency rows")
    time_cols = grid_tokens // freq_rows
    if time_cols % num_frames:
        raise ValueError(f"{time_cols} time columns do not split into {num_frames} frames")
    k = time_cols // num_frames
    cols = torch.arange(num_frames)[:, None] * k + torch.arange(k)  # "s j"
    grid = 1 + torch.arange(freq_rows)[None, :, None] * time_cols + cols[:, None, :]  # "s f j"
    segments = torch.cat([torch.zeros(num_frames, 1, dtype=torch.long), grid.flatten(1)], dim=1)
    if layout == "upstream":
        flat = segments.flatten()
        if num_frames * tokens_per_frame > flat.numel():
            raise ValueError(f"{num_frames} x {tokens_per_frame} tokens exceed the {flat.numel()} split tokens")
        return flat[: num_frames * tokens_per_frame].view(num_frames, tokens_per_frame)
    if tokens_per_frame == segments.shape[1]:
        return segments
    if tokens_per_frame == segments.shape[1] - 1:
        return segments[:, 1:]
    per_frame = segments.shape[1] - 1
    raise ValueError(f"aligned layout has {per_frame} grid tokens per frame (+1 with cls), not {tokens_per_frame}")


def audio_tokens_per_frame(
    tokens: torch.Tensor,
    frame_idx: torch.Tensor,
    num_frames: int = 48,
    tokens_per_frame: int = 12,
    layout: str = "aligned",
    freq_rows: int = 12,
) -> torch.Tensor:
    """Per-keyframe audio tokens for the generator: ``(b, N, D)`` + ``(b, T_K)`` -> ``(b, T_K, L, D)``.

    ``frame_idx`` holds each keyframe's index in the ``num_frames`` grid (0..47 for 2 s at 24 fps).
    See ``frame_token_index`` for the two layouts.
    """
    table = frame_token_index(tokens.shape[1], num_frames, tokens_per_frame, layout, freq_rows).to(tokens.device)
    if frame_idx.ndim != 2 or frame_idx.shape[0] != tokens.shape[0]:
        raise ValueError(f"frame_idx must be (b, T_K) with b = {tokens.shape[0]}, got {tuple(frame_idx.shape)}")
    if frame_idx.min() < 0 or frame_idx.max() >= num_frames:
        lo, hi = frame_idx.min().item(), frame_idx.max().item()
        raise ValueError(f"frame_idx must lie in [0, {num_frames}), got {lo}..{hi}")
    idx = table[frame_idx.long()]  # "b k l"
    b, t_k, per_frame = idx.shape
    out = torch.gather(tokens, 1, idx.reshape(b, t_k * per_frame, 1).expand(-1, -1, tokens.shape[-1]))
    return rearrange(out, "b (k l) d -> b k l d", k=t_k)
