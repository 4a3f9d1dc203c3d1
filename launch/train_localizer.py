"""Train the keyframe localizer (Section 3.1, Appendix A): audio -> per-frame motion score.

    accelerate launch launch/train_localizer.py data=avsync15 run_dir=runs/localizer
    python launch/train_localizer.py debug=tiny data.train_shards='shards/train-{000000..000001}.tar' run_dir=/tmp/loc
"""

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from keyvid.models.imagebind_audio import load_imagebind_audio
from keyvid.training.checkpoint import resume_if_possible
from keyvid.training.config import register
from keyvid.training.data import add_mel, setup_batches
from keyvid.training.export import export_model
from keyvid.training.loop import exit_on_preemption, train_loop
from keyvid.training.optim import setup_lr_scheduler, setup_optimizer
from keyvid.training.setup import setup_run
from keyvid.training.state import TrainState

register()


def setup_model(cfg: DictConfig):
    model = instantiate(cfg.model.net)
    if cfg.pretrained_imagebind:
        load_imagebind_audio(cfg.pretrained_imagebind, model.encoder)
    return model


@hydra.main(config_path="../conf", config_name="train_localizer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    accelerator, run_dir = setup_run(cfg)
    model = setup_model(cfg)
    optimizer = setup_optimizer(cfg.optim, model.parameters())
    scheduler = setup_lr_scheduler(cfg.optim, optimizer, cfg.train.max_steps, accelerator.num_processes)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    state = TrainState()
    accelerator.register_for_checkpointing(state)
    resumed = resume_if_possible(accelerator, run_dir / "checkpoints", cfg.train.resume)
    if resumed:
        accelerator.print(f"resumed from {resumed} at step {state.step}")

    def make_batches(step):
        return setup_batches(cfg.data, cfg.train, seed=cfg.seed + 1000003 * step, per_sample=add_mel)

    loss_fn = accelerator.unwrap_model(model).loss

    def loss_step(batch):
        pred = model(batch["mel"].to(accelerator.device))
        return loss_fn(pred.float(), batch["motion"].to(accelerator.device)), {}

    with exit_on_preemption(accelerator):  # SIGTERM / SIGUSR1: checkpoint saved, exit 143
        train_loop(accelerator, model, optimizer, scheduler, make_batches, loss_step, state,
                   max_steps=cfg.train.max_steps, ckpt_dir=run_dir / "checkpoints", save_every=cfg.train.save_every,
                   keep_last=cfg.train.keep_last, log_every=cfg.train.log_every, max_grad_norm=cfg.train.max_grad_norm,
                   time_limit_minutes=cfg.train.time_limit_minutes)
    export_model(accelerator, model, run_dir / "export", cfg.model.net)
    accelerator.end_training()


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    main()
