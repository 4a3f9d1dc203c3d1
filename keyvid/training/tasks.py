"""The three trainers' tasks for ``keyvid.training.recipe.train``: the keyframe localizer (Section 3.1,
Appendix A), and the keyframe generator and motion interpolator (Sections 3.2.2, 3.3), which are one
task with the stage (``model.stage``) choosing the concat condition and the data."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from keyvid.diffusion import DiffusionSchedule
from keyvid.models.imagebind_audio import load_imagebind_audio
from keyvid.models.io import build_encoders
from keyvid.training.data import add_mel, setup_batches
from keyvid.training.export import export_denoiser, export_model
from keyvid.training.logging import write_preview
from keyvid.training.recipe import Run, Steps, Task
from keyvid.training.setup import weight_dtype
from keyvid.training.video_diffusion import BatchConditioner, interpolation_window, sample_preview, setup_denoiser


def _batch_seed(cfg: DictConfig, step: int) -> int:
    return cfg.seed + 1000003 * step  # a resumed run's stream starts afresh from its step


# ----------------------------------------------------------------------------- localizer


def _build_localizer(cfg: DictConfig):
    model = instantiate(cfg.model.net)
    if cfg.pretrained_imagebind:
        load_imagebind_audio(cfg.pretrained_imagebind, model.encoder)
    return model


def _localizer_steps(run: Run) -> Steps:
    cfg, device = run.cfg, run.accelerator.device
    loss_fn = run.accelerator.unwrap_model(run.model).loss

    def make_batches(step, split="train"):
        return setup_batches(cfg.data, cfg.train, seed=_batch_seed(cfg, step), per_sample=add_mel, split=split)

    def loss_step(batch):
        pred = run.model(batch["mel"].to(device))
        return loss_fn(pred.float(), batch["motion"].to(device)), {}

    return Steps(make_batches, loss_step)


def _export_localizer(run: Run, ema) -> None:
    export_model(run.accelerator, run.model, run.run_dir / "export", run.cfg.model.net)


def localizer_task() -> Task:
    return Task(_build_localizer, _localizer_steps, _export_localizer, ema=False)


# ----------------------------------------------------------------------------- video models


def _build_denoiser(cfg: DictConfig):
    t = cfg.train
    return setup_denoiser(cfg.model, t.gradient_checkpointing, compile_blocks=t.compile_blocks,
                          compile_model=t.compile_model, channels_last=t.channels_last,
                          checkpoint_levels=t.checkpoint_levels)


def _video_steps(run: Run) -> Steps:
    cfg, accelerator = run.cfg, run.accelerator
    stage = cfg.model.stage
    dtype = weight_dtype(accelerator)
    encoders = build_encoders(cfg.encoders, accelerator.device).to(accelerator.device, dtype)  # kept out of ZeRO
    conditioner = BatchConditioner(encoders, accelerator.device, dtype, stage=stage,
                                   uncond_prob=cfg.model.uncond_prob, cond_dropout=cfg.model.cond_dropout)
    schedule = DiffusionSchedule()

    def make_batches(step, split="train"):
        seed = _batch_seed(cfg, step)
        if stage == "interpolator":  # 12-frame windows of all 48 frames, keyframes marked
            def per_sample(s):
                return add_mel(interpolation_window(s, cfg.model.window_frames, seed))
        else:
            per_sample = add_mel
        return setup_batches(cfg.data, cfg.train, seed=seed, all_frames=stage == "interpolator",
                             per_sample=per_sample, split=split)

    def loss_step(batch):
        latents, cond = conditioner(batch)
        t = schedule.sample_timesteps(latents.shape[0], device=accelerator.device)
        return schedule.training_loss(run.model, latents, t, cond), {}

    def on_step(step, batch):
        # Every rank samples: under ZeRO-3 each forward gathers parameters from all ranks, so a preview
        # on rank 0 alone waits forever for the others. Only rank 0 writes it.
        if cfg.train.sample_every and step % cfg.train.sample_every == 0:
            frames = sample_preview(accelerator.unwrap_model(run.model), conditioner, batch,
                                    steps=cfg.train.sample_steps)
            if accelerator.is_main_process:
                write_preview(accelerator, run.run_dir, step, frames, batch)

    return Steps(make_batches, loss_step, on_step)


def _export_denoiser(run: Run, ema) -> None:
    export_denoiser(run.accelerator, run.model, run.run_dir / "export", ema)


def video_task() -> Task:
    """The generator or the interpolator, as ``model.stage`` says."""
    return Task(_build_denoiser, _video_steps, _export_denoiser)
