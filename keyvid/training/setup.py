"""Run set-up shared by the launch scripts: config checks, run directory, accelerator, resume."""

from __future__ import annotations

import logging

import torch
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf

from keyvid.training.distributed import build_accelerator, uses_deepspeed
from keyvid.training.run_dir import record_run, resolve_run_dir

log = logging.getLogger(__name__)


def validate_train_config(cfg: DictConfig) -> None:
    """Fail at start-up with the key's name, not hours later."""
    t = cfg.train
    for key in ("max_steps", "batch_size", "grad_accum", "save_every", "log_every"):
        if t[key] <= 0:
            raise ValueError(f"train.{key} must be positive, got {t[key]}")
    if t.num_workers < 0:
        raise ValueError(f"train.num_workers must be >= 0, got {t.num_workers}")
    if t.mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"train.mixed_precision must be no|bf16|fp16, got {t.mixed_precision!r}")
    if cfg.optim.lr <= 0:
        raise ValueError(f"optim.lr must be positive, got {cfg.optim.lr}")
    if cfg.data.sampling not in ("keyframe", "uniform", "mixed"):
        raise ValueError(f"data.sampling must be keyframe|uniform|mixed, got {cfg.data.sampling!r}")


def setup_run(cfg: DictConfig):
    """Validate, fix the run directory, build the accelerator, record config + git revision."""
    validate_train_config(cfg)
    run_dir = resolve_run_dir(cfg.run_dir, cfg.paths.runs, cfg.name)
    accelerator = build_accelerator(run_dir, mixed_precision=cfg.train.mixed_precision,
                                    grad_accum=cfg.train.grad_accum)
    if accelerator.is_main_process:
        record_run(run_dir, OmegaConf.to_yaml(cfg, resolve=True))
        accelerator.init_trackers(cfg.name)
    if uses_deepspeed(accelerator):
        # The DeepSpeed JSONs leave batch fields "auto"; our loaders are iterable, so say the size here.
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds["train_micro_batch_size_per_gpu"] = cfg.train.batch_size
        ds["gradient_clipping"] = cfg.train.max_grad_norm
    set_seed(cfg.seed, device_specific=True)
    return accelerator, run_dir


def weight_dtype(accelerator) -> torch.dtype:
    """Frozen encoders run in the training precision; trainable weights stay float32 masters."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(accelerator.mixed_precision, torch.float32)
