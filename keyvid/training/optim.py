"""Optimizer and LR schedule from the optim config. Torch optimizers only: DeepSpeed's fused
ones are JIT-built with a compiler at first use (../shared/ENV_NOTES.md)."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler


def setup_optimizer(cfg, params) -> torch.optim.Optimizer:
    """AdamW over the parameters that train (its state comes back with accelerate's checkpoint)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters: check the trainable-parameter config")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                            weight_decay=cfg.weight_decay, fused=bool(cfg.fused) or None)
    return opt


def setup_lr_scheduler(cfg, optimizer, max_steps: int, num_processes: int = 1):
    # accelerate steps a prepared scheduler once per process per optimizer step
    return get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=cfg.warmup_steps * num_processes,
                         num_training_steps=max_steps * num_processes)
