"""Train the motion interpolator (Section 3.3, Fig. 6b): the generator's network conditioned on
keyframe latents at their positions (zeros elsewhere), on 12-frame windows of the 48
(``keyvid.training.tasks.video_task``, stage ``interpolator``).

    accelerate launch --config_file launch/accelerate/zero2.yaml launch/train_interpolator.py data=avsync15 run_dir=runs/interp
"""

import hydra
import torch
from omegaconf import DictConfig

from keyvid.training.config import register
from keyvid.training.recipe import train
from keyvid.training.tasks import video_task

register()


@hydra.main(config_path="../conf", config_name="train_interpolator", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg, video_task())


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    main()
