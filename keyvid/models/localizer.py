"""Keyframe localizer: audio log-mel -> one motion/keyframe score per video frame (paper Section 3.1, Appendix A).

Two variants, chosen with ``variant``:

``"paper"`` (default)
    Appendix A: ImageBind's audio encoder with the stem stride changed from (10, 10) to (10, 4),
    its pretrained position embedding interpolated to the new grid and **frozen**; the rest of the
    encoder is trained (we read "keep them frozen" as singling out the position embedding). Then
    Eq. 2, ``s = sigmoid(W F + b)`` with ``W`` of shape (C, 1) shared over time and one bias per time
    step, trained with the L1 loss of Eq. 3 against the [0, 1] motion-score label.

``"upstream"`` (XingruiWang/KeyVID ``motion_scores/network/model.py``: ``init_imagebind`` + ``ScoreModel_mel``)
    The released code differs: stem kernel 16 with stride 4 on *both* axes and no cls token
    (a 29 x 48 grid here; upstream cropped the mel to 198 frames, giving 29 x 46), the whole encoder
    trainable including the position embedding (upstream's non-strict load left that at random
    init because its shape differs from the checkpoint's; ``load_imagebind_audio`` interpolates it
    instead), and a head that mixes all tokens: ``Linear(N -> 48)`` over the token axis, ReLU,
    ``Linear(C -> 16)``, ReLU, ``Linear(16*48 -> 48)``, plus the channel mean of the first layer's
    output. No sigmoid; MSE loss (upstream also adds 0.3 x MSE against a mel-energy curve, which
    belongs to the training script, not here).

How the token grid's time axis maps to frames (paper variant). With 10 ms mel hops and a time
stride of 4, time column ``t`` sees mel frames ``4t .. 4t+15``, i.e. audio from ``40t`` to
``40t + 175`` ms, centred at ``40t + 87.5`` ms; video frame ``j`` at 24 fps is centred at
``41.7j + 20.8`` ms. So column ``t`` is taken as frame ``t``: the audio leads by about 67 ms
(1.6 frames) at the first frame and lags by about 11 ms at frame 47. Features per column are the
mean over the 12 frequency rows (the cls token is dropped). When the grid has a different number
of columns than frames (stride (10, 10) gives 19; a 198-frame mel with stride 4 gives 46), the
column features are resampled to ``num_frames`` with linear interpolation, ``align_corners=False``,
which maps column centres to frame centres proportionally. For a 2 s clip the last 6 of the 204
mel frames are padding (see ``audio_frontend``), which columns 46 and 47 partly see.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from keyvid.models.imagebind_audio import ImageBindAudio

VARIANTS = ("paper", "upstream")


class KeyframeLocalizer(nn.Module):
    """``(b, 1, 128, mel_frames)`` normalised log-mel -> ``(b, num_frames)`` scores."""

    def __init__(
        self, encoder: ImageBindAudio, variant: str = "paper", num_frames: int = 48, upstream_hidden: int = 16
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.num_frames = num_frames
        self.encoder = encoder
        dim = encoder.pos_embed.shape[-1]
        if variant == "paper":
            self.encoder.pos_embed.requires_grad_(False)  # Appendix A: interpolated, then frozen
            self.readout = nn.Linear(dim, 1, bias=False)  # Eq. 2: W in R^{C x 1}
            self.frame_bias = nn.Parameter(torch.zeros(num_frames))  # Eq. 2: b in R^{T'}
        else:
            num_tokens = encoder.grid[0] * encoder.grid[1]
            self.token_mix = nn.Linear(num_tokens, num_frames)  # upstream linear1
            self.channel_proj = nn.Linear(dim, upstream_hidden)  # upstream linear2
            self.frame_mix = nn.Linear(upstream_hidden * num_frames, num_frames)  # upstream linear3

    def frame_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Paper variant: trunk tokens ``(b, prefix + F*T, C)`` -> per-frame features ``(b, num_frames, C)``."""
        grid = tokens[:, self.encoder.num_prefix_tokens:]
        feats = reduce(grid, "b (f t) c -> b t c", "mean", f=self.encoder.grid[0])
        if feats.shape[1] != self.num_frames:
            feats = rearrange(feats, "b t c -> b c t")
            feats = F.interpolate(feats, size=self.num_frames, mode="linear", align_corners=False)
            feats = rearrange(feats, "b c t -> b t c")
        return feats

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(mel)
        if self.variant == "paper":
            logits = self.readout(self.frame_features(tokens)).squeeze(-1) + self.frame_bias
            return torch.sigmoid(logits)  # "b t", in [0, 1]
        h = self.token_mix(rearrange(tokens, "b n c -> b c n"))  # "b c t"
        h = rearrange(h, "b c t -> b t c")
        out = self.frame_mix(F.relu(self.channel_proj(F.relu(h))).flatten(1))  # "b t"
        return out + h.mean(dim=-1)  # upstream's residual: the channel mean of linear1's output

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 3 (L1) for the paper variant, MSE for upstream's; mean over frames and batch."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        if self.variant == "paper":
            return F.l1_loss(pred, target)
        return F.mse_loss(pred, target)


def keyframe_localizer(
    embed_dim: int,
    num_blocks: int,
    num_heads: int,
    variant: str = "paper",
    num_frames: int = 48,
    mel_frames: int = 204,
    drop_path: float = 0.0,
) -> KeyframeLocalizer:
    """Build the encoder for ``variant`` and the localizer on top. Load pretrained ImageBind weights
    into ``.encoder`` with ``keyvid.models.imagebind_audio.load_imagebind_audio(path, model.encoder)``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    paper = variant == "paper"
    encoder = ImageBindAudio(
        embed_dim,
        num_blocks,
        num_heads,
        kernel_size=16,
        stride=(10, 4) if paper else (4, 4),
        mel_frames=mel_frames,
        cls_token=paper,
        # No joint-space head: it would be parameters without gradients (DDP rejects those).
        out_embed_dim=None,
        drop_path=drop_path,
    )
    return KeyframeLocalizer(encoder, variant=variant, num_frames=num_frames)


def keyframe_localizer_huge(variant: str = "paper") -> KeyframeLocalizer:
    """ImageBind-huge audio width (768, 12 blocks, 12 heads); drop_path 0.1 as upstream builds it."""
    return keyframe_localizer(768, 12, 12, variant=variant, drop_path=0.1)


def keyframe_localizer_small(variant: str = "paper") -> KeyframeLocalizer:
    """256 wide, 4 blocks: the synthetic reproduction's localizer (REPRODUCTION.md)."""
    return keyframe_localizer(256, 4, 4, variant=variant)


def keyframe_localizer_tiny(variant: str = "paper") -> KeyframeLocalizer:
    """CPU-sized model for tests and ``debug=tiny`` runs."""
    return keyframe_localizer(32, 2, 2, variant=variant)
