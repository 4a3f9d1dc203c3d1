"""The noise schedule and the training loss of KeyVID's video diffusion (DynamiCrafter's process).

The process is an object that takes the denoiser as an argument
(openai/guided-diffusion ``gaussian_diffusion.py: training_losses(model, x_start, t, model_kwargs)``):

    schedule = DiffusionSchedule()
    loss = schedule.training_loss(model, x0, t, cond)

Settings follow upstream KeyVID ``configs/training/keyframe_generation.yaml`` (inherited from
DynamiCrafter 512): 1000 steps, betas from 0.00085 to 0.012 spaced linearly in sqrt (upstream calls it
"linear", diffusers "scaled_linear"), zero-terminal-SNR rescale (Lin et al. 2023, arXiv:2305.08891,
Algorithm 1), v-prediction, and DynamiCrafter's dynamic rescale of x0 with base scale 0.7.
"""

from __future__ import annotations

from typing import Protocol, TypedDict

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr


class Conditioning(TypedDict):
    """Everything the denoiser sees besides the noisy latent and the timestep.

    concat:    "b 4 t h w"  latent concatenated to the noisy latent on channels (the repeated first
               frame for the keyframe generator, zero-padded keyframes for the interpolator; Fig. 6).
    context:   "b (77 + t*16) 1024"  text tokens, then 16 projected image tokens per frame.
    audio:   "b t L 768"  ImageBind audio tokens split per frame.
    fs:        "b"  frame-rate condition (int).
    frame_idx: "b t"  index of each generated frame in the full clip (int).
    """

    concat: torch.Tensor
    context: torch.Tensor
    audio: torch.Tensor
    fs: torch.Tensor
    frame_idx: torch.Tensor


class Denoiser(Protocol):
    """The UNet's call signature: ``x`` is "b 8 t h w" = cat(noisy latent, concat condition); returns v."""

    def __call__(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        *,
        context: torch.Tensor,
        audio: torch.Tensor,
        fs: torch.Tensor,
        frame_idx: torch.Tensor,
    ) -> torch.Tensor: ...


def apply_model(model: Denoiser, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """One denoiser call: the concat condition joins the noisy latent on channels (DynamiCrafter's
    "hybrid" conditioning key); every other entry of ``cond`` goes in as a keyword, so a training
    wrapper that projects raw encoder outputs inside its forward (and so under DDP) can take
    its own keys."""
    x = torch.cat([x_t, cond["concat"].to(x_t.dtype)], dim=1)
    return model(x, t, **{k: v for k, v in cond.items() if k != "concat"})


def _per_sample(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Gather ``values[t]`` and shape it to broadcast over ``like`` ("b" -> "b 1 1 1 1")."""
    out = values.to(t.device)[t].to(like.dtype)
    return out.view(-1, *([1] * (like.ndim - 1)))


class DiffusionSchedule:
    """Scaled-linear betas with zero terminal SNR, v-prediction, and DynamiCrafter's dynamic rescale.

    Tables are float64 (upstream builds them in numpy float64); each use casts to the input's dtype.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        dynamic_rescale: bool = True,
        rescale_base: float = 0.7,
        rescale_turning_step: int = 400,
    ):
        self.num_timesteps = num_timesteps
        self.beta_start = beta_start
        self.beta_end = beta_end
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=torch.float64) ** 2
        # Lin et al. 2023 Algorithm 1: shift sqrt(alpha_bar) so the last step is pure noise (SNR 0),
        # which v-prediction needs to be trained and sampled from t = T-1.
        self.betas = rescale_zero_terminal_snr(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()

        # DynamiCrafter ddpm3d.py LatentDiffusion.__init__ (use_dynamic_rescale, base_scale, turning_step):
        # x0 is scaled by 1 -> base_scale linearly over the first `turning_step` timesteps, then held at
        # base_scale. Upstream concatenates linspace(1, base, turning) with full(num_timesteps, base), a
        # table of 1400 entries of which only the first 1000 are ever indexed; we keep its shape.
        self.dynamic_rescale = dynamic_rescale
        self.scale_arr = torch.cat(
            [
                torch.linspace(1.0, rescale_base, rescale_turning_step, dtype=torch.float64),
                torch.full((num_timesteps,), rescale_base, dtype=torch.float64),
            ]
        )

    # -- forward process and v-parameterisation (Salimans & Ho 2022, arXiv:2202.00512, Sec. 4) --

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return _per_sample(self.sqrt_alphas_cumprod, t, x0) * x0 + _per_sample(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * noise

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _per_sample(self.sqrt_alphas_cumprod, t, x0) * noise - _per_sample(
            self.sqrt_one_minus_alphas_cumprod, t, x0
        ) * x0

    def predict_x0_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _per_sample(self.sqrt_alphas_cumprod, t, x_t) * x_t - _per_sample(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        ) * v

    def predict_eps_from_v(self, x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _per_sample(self.sqrt_alphas_cumprod, t, x_t) * v + _per_sample(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        ) * x_t

    def x0_scale(self, t: torch.Tensor) -> torch.Tensor:
        """The dynamic-rescale factor of x0 at each timestep ("b"), 1 when dynamic rescale is off."""
        if not self.dynamic_rescale:
            return torch.ones(t.shape, dtype=torch.float64, device=t.device)
        return self.scale_arr.to(t.device)[t]

    def scale_x0(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x0 as the model sees it at ``t``: times the dynamic-rescale factor (itself when rescale is off).
        Training noises this; so must anything that writes known latents into a sample (the anchor)."""
        return x0 * _per_sample(self.scale_arr, t, x0) if self.dynamic_rescale else x0

    # -- training --

    def sample_timesteps(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        """Uniform integer timesteps, as upstream ``LatentDiffusion.forward``."""
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=device)

    def training_loss(
        self,
        model: Denoiser,
        x0: torch.Tensor,
        t: torch.Tensor,
        cond: Conditioning,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean squared error on v ("b c t h w" latents -> scalar).

        Upstream ``LatentDiffusion.forward`` scales x0 (not the concat condition) by ``scale_arr[t]``
        before noising, so the model learns to predict a shrunken x0 at high noise; ``ddim_sample``
        undoes it step by step. With ``learn_logvar=False`` and ``original_elbo_weight=0`` (upstream
        defaults) upstream's loss reduces to this plain mean.
        """
        x0 = self.scale_x0(x0, t)
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        v_pred = apply_model(model, x_t, t, cond)
        return F.mse_loss(v_pred.float(), self.v_target(x0, noise, t).float())

    # -- sampling --

    def ddim_scheduler(self) -> DDIMScheduler:
        """diffusers' DDIMScheduler configured as this schedule (its tables match ours; tested).

        ``timestep_spacing="trailing"`` is upstream's ``uniform_trailing`` (KeyVID scripts/generation.sh)
        and ``set_alpha_to_one=False`` matches upstream's last DDIM step, whose "previous" alpha_bar is
        ``alphas_cumprod[0]`` (lvdm/models/utils_diffusion.py make_ddim_sampling_parameters).
        """
        return DDIMScheduler(
            num_train_timesteps=self.num_timesteps,
            beta_start=self.beta_start,
            beta_end=self.beta_end,
            beta_schedule="scaled_linear",
            prediction_type="v_prediction",
            rescale_betas_zero_snr=True,
            timestep_spacing="trailing",
            clip_sample=False,
            set_alpha_to_one=False,
            steps_offset=0,
        )
