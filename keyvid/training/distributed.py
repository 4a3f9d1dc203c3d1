"""Building the Accelerator: the one place that knows about processes, devices and DeepSpeed.

Two shims make the same code run multi-process on CPU (CI) as on GPUs (../shared/ENV_NOTES.md):

* without CUDA the process group must use gloo, else every process believes it is rank 0 of 1;
* DeepSpeed JIT-compiles a shared-memory op with g++ at start-up (about 55 s); on CPU we replace
  its builder with a no-op, since gloo does the communication anyway.

A third, on every device: DeepSpeed (0.19) broadcasts each parameter at start-up as
``p.data.view(torch.uint8)``, which fails on 0-dim parameters (the generator's cross-attention
gates ``attn2.beta``, 0-dim as in upstream's checkpoints). They are broadcast through a 1-element
view of the same storage instead.
"""

from __future__ import annotations

import importlib
import os
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, ProjectConfiguration


def _skip_deepspeed_shm_build() -> None:
    try:
        ds_comm = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return
    if hasattr(ds_comm, "build_shm_op"):
        ds_comm.build_shm_op = lambda: None


def _deepspeed_broadcasts_scalars() -> None:
    try:
        engine = importlib.import_module("deepspeed.runtime.engine")
        zero3 = importlib.import_module("deepspeed.runtime.zero.partition_parameters")
    except ImportError:
        return
    cls = engine.DeepSpeedEngine
    if getattr(cls._broadcast_model, "_keyvid_scalars", False):
        return
    original = cls._broadcast_model

    def _broadcast_model(self):
        scalars = [(p, p.data) for p in self.module.parameters() if p.dim() == 0]
        for p, data in scalars:
            p.data = data.reshape(1)  # a view: the broadcast writes into the parameter's storage
        try:
            original(self)
        finally:
            for p, data in scalars:
                p.data = data

    _broadcast_model._keyvid_scalars = True
    cls._broadcast_model = _broadcast_model

    # ZeRO-3 broadcasts each parameter the same way while converting it; a 0-dim one goes through
    # as 1 element (ZeRO-3 then keeps it as shape (1,), which broadcasts the same in the forward;
    # keyvid.training.export restores the model's shapes).
    init_param = zero3.Init._zero_init_param

    def _zero_init_param(self, param):
        if param.dim() == 0:
            param.data = param.data.reshape(1)
            param.keyvid_0dim = True  # read by keyvid.training.export
        init_param(self, param)

    zero3.Init._zero_init_param = _zero_init_param


def build_accelerator(run_dir: str | Path, *, mixed_precision: str = "no", grad_accum: int = 1,
                      log_with: str | None = "tensorboard", timeout_minutes: int = 30) -> Accelerator:
    """The Accelerator for a run; distribution (DDP / DeepSpeed ZeRO) comes from `accelerate launch`."""
    multi = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # a backend given to a single plain process makes accelerate expect a process group
    backend = "gloo" if multi and not torch.cuda.is_available() else None
    kwargs = [InitProcessGroupKwargs(timeout=timedelta(minutes=timeout_minutes), backend=backend)]
    if not torch.cuda.is_available():
        _skip_deepspeed_shm_build()
        if mixed_precision in ("bf16", "fp16"):
            mixed_precision = "no"  # CPU runs (CI, debug=tiny) stay in float32
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        _deepspeed_broadcasts_scalars()
        if not torch.cuda.is_available():
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=grad_accum,
        log_with=log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "logs")),
        kwargs_handlers=kwargs,
    )


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.state.deepspeed_plugin is not None
