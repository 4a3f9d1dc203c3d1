"""Train the keyframe localizer (Section 3.1, Appendix A): audio -> per-frame motion score
(``keyvid.training.tasks.localizer_task``).

    accelerate launch launch/train_localizer.py data=avsync15 run_dir=runs/localizer
    python launch/train_localizer.py debug=tiny data.train_shards='shards/train-{000000..000001}.tar' run_dir=/tmp/loc
"""

import hydra
import torch
from omegaconf import DictConfig

from keyvid.training.config import register
from keyvid.training.recipe import train
from keyvid.training.tasks import localizer_task

register()


@hydra.main(config_path="../conf", config_name="train_localizer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg, localizer_task())


if __name__ == "__main__":
    torch.backends.cuda.matmul.allow_tf32 = True
    main()
