"""The recipe the three trainers share: set-up -> resume -> loop -> export (torchtune's recipe shape).

Each trainer says only what is its own (``Task``): which model, how a step's batches are made, what a
step's loss is, and how the model is exported. ``keyvid.training.tasks`` has the localizer's and the
video models' tasks; the launch scripts pick one and call ``train``.

With ``data.val_shards`` set, a validation loss (``validation_loss``) is logged every
``train.val_every`` steps and at the last.

Order, kept because the random stream depends on it: the run's seed is set (``setup_run``), the model
is built, the optimizer, scheduler and ``accelerator.prepare``, EMA, then the task's steps (the video
tasks build their frozen encoders there, outside ZeRO), and resume last, which restores every random
state a checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from keyvid.training.checkpoint import resume_if_possible
from keyvid.training.data import check_shards
from keyvid.training.ema import setup_ema
from keyvid.training.loop import exit_on_preemption, train_loop
from keyvid.training.optim import setup_lr_scheduler, setup_optimizer
from keyvid.training.setup import setup_run
from keyvid.training.state import TrainState


@dataclass
class Run:
    """What a task's step functions may use: the config, the accelerator, the prepared model."""

    cfg: DictConfig
    accelerator: object
    run_dir: Path
    model: nn.Module  # as prepared (DDP / DeepSpeed engine); accelerator.unwrap_model for the module
    state: TrainState


@dataclass
class Steps:
    # (step, split) -> batches of data.<split>_shards from that step on (re-seeded on resume)
    make_batches: Callable[..., Iterable[dict]]
    loss_step: Callable[[dict], tuple]  # batch -> (loss, logs)
    on_step: Callable[[int, dict], None] | None = None  # after each optimizer step (previews)


@dataclass
class Task:
    build_model: Callable[[DictConfig], nn.Module]
    build_steps: Callable[[Run], Steps]
    export: Callable[[Run, object], None]  # (run, ema or None): writes run.run_dir / "export"
    ema: bool = True  # whether train.ema_decay applies


def train(cfg: DictConfig, task: Task) -> Path:
    """Train ``task`` as ``cfg`` says; returns the run directory (its ``export/`` holds the result)."""
    accelerator, run_dir = setup_run(cfg)
    model = task.build_model(cfg)
    optimizer = setup_optimizer(cfg.optim, model.parameters())
    scheduler = setup_lr_scheduler(cfg.optim, optimizer, cfg.train.max_steps, accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainState()
    ema = setup_ema(cfg.train, accelerator.unwrap_model(model)) if task.ema else None
    accelerator.register_for_checkpointing(state, *([ema] if ema else []))
    run = Run(cfg, accelerator, run_dir, model, state)
    steps = task.build_steps(run)
    if resumed := resume_if_possible(accelerator, run_dir / "checkpoints", cfg.train.resume):
        accelerator.print(f"resumed from {resumed} at step {state.step}")
    on_step = steps.on_step
    if cfg.data.get("val_shards"):
        on_step = _with_validation(run, steps, on_step)
    with exit_on_preemption(accelerator):  # SIGTERM / SIGUSR1: checkpoint saved, exit 143
        train_loop(accelerator, model, optimizer, scheduler, steps.make_batches, steps.loss_step, state,
                   max_steps=cfg.train.max_steps, ckpt_dir=run_dir / "checkpoints", save_every=cfg.train.save_every,
                   keep_last=cfg.train.keep_last, log_every=cfg.train.log_every,
                   max_grad_norm=cfg.train.max_grad_norm, ema=ema, on_step=on_step,
                   time_limit_minutes=cfg.train.time_limit_minutes)
    task.export(run, ema)
    accelerator.end_training()
    return run_dir


@torch.no_grad()
def validation_loss(run: Run, steps: Steps) -> float:
    """Mean loss over ``train.val_batches`` batches of ``data.val_shards``, averaged over ranks.

    The same batches, timesteps, noise and condition dropout every time (the random state is seeded
    from ``seed`` inside and restored after), so the curve moves only with the model, and the
    training run is the same with or without it. Eval mode: no dropout."""
    cfg, accelerator, model = run.cfg, run.accelerator, run.model
    cuda = [accelerator.device] if accelerator.device.type == "cuda" else []
    model.eval()
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(cfg.seed)
            batches = steps.make_batches(0, "val")
            total = [steps.loss_step(next(batches))[0].detach().float() for _ in range(cfg.train.val_batches)]
    finally:
        model.train()
    return float(accelerator.reduce(torch.stack(total).mean(), "mean"))


def _with_validation(run: Run, steps: Steps, on_step):
    every = run.cfg.train.val_every
    if every <= 0:
        raise ValueError(f"train.val_every must be positive when data.val_shards is set, got {every}")
    check_shards(run.cfg.data.val_shards, "data.val_shards")  # at start-up, not at the first validation

    def hook(step, batch):
        if on_step is not None:
            on_step(step, batch)
        if step % every == 0 or step == run.cfg.train.max_steps:
            value = validation_loss(run, steps)
            run.accelerator.log({"val_loss": value}, step=step)
            run.accelerator.print(f"val step {step} val_loss={value:.4g}")

    return hook
