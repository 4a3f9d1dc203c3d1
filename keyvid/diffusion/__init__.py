"""Noise schedule, training loss, multimodal guidance and DDIM sampling."""

from keyvid.diffusion.guidance import (
    GuidanceScales,
    combine_branches,
    drop_conditions,
    drop_masks,
    guidance_branches,
    guided_v,
    rescale_guidance,
)
from keyvid.diffusion.sampling import ddim_sample, ddim_step, ddim_timesteps, denoise
from keyvid.diffusion.schedule import Conditioning, Denoiser, DiffusionSchedule, apply_model

__all__ = [
    "Conditioning",
    "Denoiser",
    "DiffusionSchedule",
    "GuidanceScales",
    "apply_model",
    "combine_branches",
    "ddim_sample",
    "ddim_step",
    "ddim_timesteps",
    "denoise",
    "drop_conditions",
    "drop_masks",
    "guidance_branches",
    "guided_v",
    "rescale_guidance",
]
