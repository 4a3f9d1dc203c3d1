"""Named sizes, so configs pick a model as ``size: huge`` and ``debug=tiny`` can shrink any job's
model with one key (``model.size=tiny``) whatever the job is."""

from __future__ import annotations


def localizer(size: str = "huge", variant: str = "paper"):
    from keyvid.models.localizer import keyframe_localizer_huge, keyframe_localizer_small, keyframe_localizer_tiny

    sizes = {"huge": keyframe_localizer_huge, "small": keyframe_localizer_small, "tiny": keyframe_localizer_tiny}
    if size not in sizes:
        raise ValueError(f"unknown localizer size {size!r}; expected one of {sorted(sizes)}")
    return sizes[size](variant=variant)


def unet(size: str = "512", interpolator: bool = False, frame_index_mode: str | None = None,
         cross_attention_weights: str = "upstream", dropout: float = 0.1):
    from keyvid.models.unet import keyframe_unet, keyframe_unet_small, keyframe_unet_tiny

    if size == "512":
        return keyframe_unet(interpolator=interpolator, frame_index_mode=frame_index_mode,
                             cross_attention_weights=cross_attention_weights, dropout=dropout)
    small = {"tiny": keyframe_unet_tiny, "small": keyframe_unet_small}
    if size in small:
        return small[size](interpolator, frame_index_mode=frame_index_mode,
                           cross_attention_weights=cross_attention_weights, dropout=dropout)
    raise ValueError(f"unknown UNet size {size!r}; expected '512', 'small' or 'tiny'")


def image_projector(size: str = "512", video_length: int = 48, embedding_dim: int = 1280):
    """OpenCLIP-H image tokens (1280) -> 16 tokens per frame; tiny and small (the encoders' random
    stand-ins are 40 wide): narrow inputs, 1 layer."""
    from keyvid.models.resampler import Resampler

    if size == "512":
        return Resampler(video_length=video_length, embedding_dim=embedding_dim)
    if size in ("tiny", "small"):
        return Resampler(dim=64, depth=1, dim_head=16, heads=2, embedding_dim=40, video_length=video_length)
    raise ValueError(f"unknown image projector size {size!r}; expected '512', 'small' or 'tiny'")
