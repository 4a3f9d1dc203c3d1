"""Three trainers' exports + the frozen encoders -> one KeyVIDPipeline folder.

    python launch/assemble_pipeline.py localizer=runs/loc/export generator=runs/gen/export \
        interpolator=runs/int/export out=weights/keyvid height=320 width=512
"""

import hydra
from omegaconf import DictConfig

from keyvid.pipeline import KeyVIDPipeline
from keyvid.models.io import build_encoders


@hydra.main(config_path="../conf", config_name="assemble_pipeline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    pipe = KeyVIDPipeline.from_exports(cfg.localizer, cfg.generator, cfg.interpolator, build_encoders(cfg.encoders),
                                       height=cfg.height, width=cfg.width, num_keyframes=cfg.num_keyframes,
                                       audio_layout=cfg.audio_layout)
    print(f"pipeline saved: {pipe.save_pretrained(cfg.out)}")


if __name__ == "__main__":
    main()
