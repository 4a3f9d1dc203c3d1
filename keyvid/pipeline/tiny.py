"""A tiny random pipeline (every component seeded): CPU tests and ``pipeline=tiny`` runs in seconds."""

from __future__ import annotations

import torch
from torch import nn

from keyvid.models import builders
from keyvid.models.io import tiny_encoders
from keyvid.models.localizer import keyframe_localizer_tiny
from keyvid.pipeline.core import KeyVIDPipeline


def randomize_zero_init(model: nn.Module) -> None:
    """Give zero-initialised layers (UNet output heads, proj_out, audio k/v, ...) torch's default
    init, so that in a random tiny model every input reaches the output and tests can see it."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and not module.weight.any():
            module.reset_parameters()


def tiny_pipeline(seed: int = 0, height: int = 16, width: int = 24) -> KeyVIDPipeline:
    """Every component tiny and random (seeded): CPU tests and ``pipeline=tiny`` runs in seconds.

    The sizes of ``debug=tiny`` training (``keyvid.models.builders`` "tiny" UNets and projectors, the
    trainers' tiny encoders, which are seeded on their own), so a briefly trained tiny export fits in
    via ``from_exports``. 16 x 24 pixels is an 8 x 12 latent with the tiny 2x VAE. Zero-initialised
    layers are re-initialised (``randomize_zero_init``) so every condition reaches the output.
    """
    encoders = tiny_encoders()
    torch.manual_seed(seed)
    generator, interpolator = builders.unet("tiny"), builders.unet("tiny", interpolator=True)
    for unet in (generator, interpolator):
        randomize_zero_init(unet)
    return KeyVIDPipeline(
        localizer=keyframe_localizer_tiny(),
        audio_encoder=encoders.audio,
        generator=generator,
        interpolator=interpolator,
        generator_projector=builders.image_projector("tiny"),
        interpolator_projector=builders.image_projector("tiny"),
        vae=encoders.vae,
        text_encoder=encoders.clip_text,
        image_encoder=encoders.clip_image,
        height=height,
        width=width,
    )
