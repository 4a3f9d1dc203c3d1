"""DDIM sampling with multimodal guidance, as upstream KeyVID's inference (scripts/generation.sh).

Upstream's inference settings: 90 DDIM steps (paper Appendix F), ``uniform_trailing`` timesteps,
``--ddim_eta 1.0``, guidance rescale 0.7, s_txt 7.5, s_img 2.0, s_aud 7.5. We take eta = 1.0 as the
default because that is what upstream's generation script (and DynamiCrafter's scripts/run.sh) runs.

diffusers' ``DDIMScheduler`` supplies the tables and the trailing timesteps. The update itself is
written here because ``DDIMScheduler.step`` cannot express upstream's sampler:
  * it takes the previous timestep as ``t - T // steps``; with trailing spacing and a step count that
    does not divide T (90 of 1000) the actual next timestep is sometimes 12 below, not 11, and
    upstream (lvdm/models/samplers/ddim_multiplecond.py) uses the actual next timestep;
  * DynamiCrafter's dynamic rescale multiplies the predicted x0 by scale(t_prev) / scale(t) between
    the prediction and the update, and ``step`` exposes no hook there.
Where the two coincide (step count dividing T, no dynamic rescale) the update equals
``DDIMScheduler.step`` exactly (tests/diffusion/test_sampling.py).

The last step (``final_step``): upstream goes to alpha_bar = ``alphas_cumprod[0]`` = 0.99915, not 1, and
its dynamic rescale factor there is scale(t)/scale(t) = 1, so its sample keeps sqrt(1 - 0.99915) = 0.029
of fresh noise per frame and the x0 shrink of its smallest timestep (0.976 at t = 33 for 30 steps).
``final_step="x0"`` (the default) returns the model's x0 prediction with the rescale undone instead:
with an oracle denoiser it gives the clip back exactly, where ``"upstream"`` leaves frame-to-frame
noise 4x the real motion of the synthetic clips (docs/learning.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from keyvid.diffusion.guidance import GuidanceScales, guided_v
from keyvid.diffusion.schedule import Conditioning, Denoiser, DiffusionSchedule

FINAL_STEPS = ("x0", "upstream")


def ddim_timesteps(schedule: DiffusionSchedule, steps: int) -> list[int]:
    """Descending trailing timesteps (999, 988, ..., 10 for 90 steps), from diffusers."""
    scheduler = schedule.ddim_scheduler()
    scheduler.set_timesteps(steps)
    return scheduler.timesteps.tolist()


def ddim_step(
    schedule: DiffusionSchedule,
    v: torch.Tensor,
    t: int,
    t_prev: int | None,
    x_t: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None = None,
    final_step: str = "x0",
) -> torch.Tensor:
    """One DDIM update (Song et al. 2021, Eq. 12) from a v-prediction; ``t_prev=None`` on the last step.

    On the last step ``final_step="x0"`` returns the x0 prediction divided by the dynamic-rescale
    factor of ``t`` (the clean sample at the data's scale); ``"upstream"`` steps to
    ``alphas_cumprod[0]`` (not 1) with rescale factor 1, keeping the scale of the smallest timestep
    (0.9925 at t=10 for 90 steps) and a little noise (module docstring).
    """
    if final_step not in FINAL_STEPS:
        raise ValueError(f"final_step must be one of {FINAL_STEPS}, got {final_step!r}")
    ac = schedule.alphas_cumprod
    a_t = ac[t].item()
    x0 = math.sqrt(a_t) * x_t - math.sqrt(1.0 - a_t) * v
    if t_prev is None and final_step == "x0":
        return x0 / schedule.scale_arr[t].item() if schedule.dynamic_rescale else x0
    a_prev = ac[t_prev if t_prev is not None else 0].item()
    eps = math.sqrt(a_t) * v + math.sqrt(1.0 - a_t) * x_t
    if schedule.dynamic_rescale:
        scale = schedule.scale_arr
        x0 = x0 * (scale[t_prev if t_prev is not None else t] / scale[t]).item()
    sigma = eta * math.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    # With eta = 1 at the zero-SNR step this is (1 - a_prev)(1 - eta^2) = 0 up to rounding.
    direction = math.sqrt(max(1.0 - a_prev - sigma**2, 0.0))
    x_prev = math.sqrt(a_prev) * x0 + direction * eps
    if sigma > 0.0:
        x_prev = x_prev + sigma * noise
    return x_prev


@torch.no_grad()
def ddim_sample(
    model: Denoiser,
    shape: Sequence[int],
    cond: Conditioning,
    null_conds: Mapping[str, torch.Tensor],
    steps: int = 90,
    scales: GuidanceScales = GuidanceScales(),
    guidance_rescale: float = 0.7,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    schedule: DiffusionSchedule | None = None,
    final_step: str = "x0",
) -> torch.Tensor:
    """Sample latents "b 4 t h w" of ``shape`` from pure noise with Eq. 4 guidance: x_T drawn from
    ``generator``, then ``denoise``.

    ``null_conds`` as ``guidance_branches``. ``schedule`` defaults to the training schedule
    (``DiffusionSchedule()``), whose dynamic rescale the update undoes. ``final_step``: ``ddim_step``.
    """
    schedule = schedule if schedule is not None else DiffusionSchedule()
    device, dtype = cond["concat"].device, cond["concat"].dtype
    x = randn_tensor(tuple(shape), generator=generator, device=device, dtype=dtype)
    return denoise(model, x, cond, null_conds, schedule, steps=steps, scales=scales, guidance_rescale=guidance_rescale,
                   eta=eta, generators=generator, progress=progress, final_step=final_step)


@torch.no_grad()
def denoise(
    model: Denoiser,
    x: torch.Tensor,
    cond: Conditioning,
    null_conds: Mapping[str, torch.Tensor],
    schedule: DiffusionSchedule,
    *,
    steps: int,
    scales: GuidanceScales,
    guidance_rescale: float,
    eta: float,
    generators: Sequence[torch.Generator] | torch.Generator | None,
    progress: bool = False,
    desc: str = "DDIM",
    sequential: bool = False,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    final_step: str = "x0",
) -> torch.Tensor:
    """The DDIM loop, from a given x_T (FreeNoise's rescheduled noise, or ``ddim_sample``'s plain draw):
    Eq. 4 guidance at every step, then ``ddim_step``. ``generators``: one per sample, or one for the
    batch; they draw the eta > 0 noise. ``sequential``: the guidance branches one forward at a time
    (``guided_v``), the reference path.

    ``known`` = (mask, x0), mask broadcastable to x: after every step the masked entries are replaced
    by x0 noised to the next timestep (RePaint-style, Lugmayr et al. 2022), and by x0 itself after the
    last step, so the result holds x0 exactly there (``anchor_keyframes="replace"``). x0 is noised as in
    training: scaled by the dynamic-rescale factor of that timestep first (without it the known frames
    carry up to 1/0.7 = 1.43x the signal the model saw at t >= 400). ``final_step``: ``ddim_step``."""
    timesteps = ddim_timesteps(schedule, steps)
    if known is not None:
        mask, x0 = known[0], known[1].to(x.dtype)
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=desc)):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else None
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        v = guided_v(model, x, t_batch, cond, null_conds, scales, guidance_rescale, sequential=sequential)
        noise = randn_tensor(x.shape, generator=generators, device=x.device, dtype=x.dtype) if eta > 0 else None
        x = ddim_step(schedule, v, t, t_prev, x, eta, noise, final_step)
        if known is not None:
            if t_prev is None:
                x = torch.where(mask, x0, x)
            else:
                eps = randn_tensor(x.shape, generator=generators, device=x.device, dtype=x.dtype)
                t_next = torch.full((x.shape[0],), t_prev, device=x.device, dtype=torch.long)
                x = torch.where(mask, schedule.q_sample(schedule.scale_x0(x0, t_next), t_next, eps), x)
    return x
