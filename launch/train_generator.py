"""Train the keyframe generator (Section 3.2.2): v-prediction on keyframe clips, the first frame's
latent as the concat condition. ``run`` is shared with train_interpolator.py.

    accelerate launch --config_file launch/accelerate/zero2.yaml launch/train_generator.py data=avsync15 run_dir=runs/gen
"""

import hydra
import torch
from omegaconf import DictConfig

from keyvid.diffusion import DiffusionSchedule
from keyvid.models.io import build_encoders
from keyvid.training.checkpoint import resume_if_possible
from keyvid.training.config import register
from keyvid.training.data import add_mel, setup_batches
from keyvid.training.ema import setup_ema
from keyvid.training.export import export_denoiser
from keyvid.training.loop import exit_on_preemption, train_loop
from keyvid.training.optim import setup_lr_scheduler, setup_optimizer
from keyvid.training.setup import setup_run, weight_dtype
from keyvid.training.state import TrainState
from keyvid.training.logging import write_preview
from keyvid.training.video_diffusion import BatchConditioner, interpolation_window, sample_preview, setup_denoiser

register()


def run(cfg: DictConfig, interpolator: bool) -> None:
    accelerator, run_dir = setup_run(cfg)
    denoiser = setup_denoiser(cfg.model, cfg.train.gradient_checkpointing, compile_blocks=cfg.train.compile_blocks,
                              compile_model=cfg.train.compile_model,
                              channels_last=cfg.train.channels_last, checkpoint_levels=cfg.train.checkpoint_levels)
    optimizer = setup_optimizer(cfg.optim, denoiser.parameters())
    scheduler = setup_lr_scheduler(cfg.optim, optimizer, cfg.train.max_steps, accelerator.num_processes)
    dtype = weight_dtype(accelerator)
    encoders = build_encoders(cfg.encoders, accelerator.device).to(accelerator.device, dtype)  # kept out of prepare()/ZeRO
    denoiser, optimizer, scheduler = accelerator.prepare(denoiser, optimizer, scheduler)
    state, ema = TrainState(), setup_ema(cfg.train, accelerator.unwrap_model(denoiser))
    accelerator.register_for_checkpointing(state, *([ema] if ema else []))
    if resumed := resume_if_possible(accelerator, run_dir / "checkpoints", cfg.train.resume):
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    conditioner = BatchConditioner(encoders, accelerator.device, dtype, interpolator=interpolator,
                                   audio_layout=cfg.model.audio_layout, uncond_prob=cfg.model.uncond_prob,
                                   cond_dropout=cfg.model.cond_dropout)
    schedule = DiffusionSchedule()

    def make_batches(step):
        seed = cfg.seed + 1000003 * step
        if interpolator:
            def per_sample(s):
                return add_mel(interpolation_window(s, cfg.model.window_frames, seed))
        else:
            per_sample = add_mel
        return setup_batches(cfg.data, cfg.train, seed=seed, all_frames=interpolator, per_sample=per_sample)

    def loss_step(batch):
        latents, cond = conditioner(batch)
        t = schedule.sample_timesteps(latents.shape[0], device=accelerator.device)
        return schedule.training_loss(denoiser, latents, t, cond), {}

    def on_step(step, batch):
        # Every rank samples: under ZeRO-3 each forward gathers parameters from all ranks, so a preview
        # on rank 0 alone waits forever for the others. Only rank 0 writes it.
        if cfg.train.sample_every and step % cfg.train.sample_every == 0:
            frames = sample_preview(accelerator.unwrap_model(denoiser), conditioner, batch,
                                    steps=cfg.train.sample_steps)
            if accelerator.is_main_process:
                write_preview(accelerator, run_dir, step, frames, batch)

    with exit_on_preemption(accelerator):  # SIGTERM / SIGUSR1: checkpoint saved, exit 143
        train_loop(accelerator, denoiser, optimizer, scheduler, make_batches, loss_step, state,
                   max_steps=cfg.train.max_steps, ckpt_dir=run_dir / "checkpoints", save_every=cfg.train.save_every,
                   keep_last=cfg.train.keep_last, log_every=cfg.train.log_every,
                   max_grad_norm=cfg.train.max_grad_norm, ema=ema, on_step=on_step,
                   time_limit_minutes=cfg.train.time_limit_minutes)
    export_denoiser(accelerator, denoiser, run_dir / "export", ema)
    accelerator.end_training()


@hydra.main(config_path="../conf", config_name="train_generator", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg, interpolator=False)


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    main()
