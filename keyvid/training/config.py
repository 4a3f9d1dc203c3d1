"""Structured schema for the non-model parts of the training configs (Hydra ConfigStore).

Model configs stay free-form (`_target_` + builder arguments); these dataclasses type-check the
rest, so a misspelt key in train/optim/data fails at composition, not hours into a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class TrainConfig:
    max_steps: int = 20000
    # wall-clock budget: stop (checkpoint + export) at the first step past it; null = none
    time_limit_minutes: float | None = None
    batch_size: int = 8  # per process, per micro-step
    grad_accum: int = 1
    mixed_precision: str = "bf16"  # no | bf16 | fp16 (CPU runs fall back to no)
    save_every: int = 1000
    keep_last: int = 3
    log_every: int = 50
    resume: str = "auto"  # auto | never | <checkpoint path>
    max_grad_norm: float = 1.0
    num_workers: int = 4
    gradient_checkpointing: bool = False
    # with gradient_checkpointing: recompute only the UNet stages at these resolution levels
    # (0 = full latent: half the activations, a third of the FLOPs); null = every stage
    checkpoint_levels: list[int] | None = None
    # generator/interpolator UNet: regional torch.compile (KeyframeUNet.compile_blocks) and
    # channels-last activations; 1.5x clips/s on an H100 (BENCHMARKS.md), minutes of compiling first
    compile_blocks: bool = False
    # or torch.compile of the whole UNet: the small UNets are launch-bound (1.7x at batch 64 on an H200)
    compile_model: bool = False
    channels_last: bool = False
    ema_decay: float = 0.0  # 0 disables EMA
    sample_every: int = 1000  # generator/interpolator: a preview video every N steps (0: never)
    sample_steps: int = 10  # DDIM steps of a preview
    # with data.val_shards: the mean loss over val_batches batches every val_every steps (TensorBoard
    # "val_loss"), with the same batches, timesteps and noise each time
    val_every: int = 500
    val_batches: int = 8


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 500
    scheduler: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name
    fused: bool = False  # torch's fused AdamW (CUDA only)


@dataclass
class DataConfig:
    name: str = "synthetic"
    train_shards: str = "???"
    val_shards: str | None = None  # held-out shards for the validation loss (train.val_every); null: none
    num_keyframes: int = 12
    num_frames: int = 48
    sampling: str = "keyframe"  # keyframe | uniform | mixed (upstream's mix)
    keyframe_ratio: float = 1.0  # with sampling=mixed: the share of keyframe samples
    selection_mode: str = "paper"  # paper | upstream (keyvid/data/keyframes.py)
    height: int = 320
    width: int = 512
    shuffle_buffer: int = 256
    # read VAE moments stored by data_prep/latents.py instead of encoding frames (generator and
    # interpolator; the shards' frame size must then be the training size)
    precomputed_latents: bool = False


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(group="train", name="schema", node=TrainConfig)
    cs.store(group="optim", name="schema", node=OptimConfig)
    cs.store(group="data", name="schema", node=DataConfig)
