"""Train the keyframe generator (Section 3.2.2): v-prediction on keyframe clips, the first frame's
latent as the concat condition (``keyvid.training.tasks.video_task``, stage ``generator``).

    accelerate launch --config_file launch/accelerate/zero2.yaml launch/train_generator.py data=avsync15 run_dir=runs/gen
"""

import hydra
import torch
from omegaconf import DictConfig

from keyvid.training.config import register
from keyvid.training.recipe import train
from keyvid.training.tasks import video_task

register()


@hydra.main(config_path="../conf", config_name="train_generator", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg, video_task())


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    main()
