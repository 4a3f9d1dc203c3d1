"""Keyframes from audio alone, with a trained localizer.

    python launch/localize.py audio=clip.wav checkpoint=runs/localizer/export
"""

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from keyvid.localize import localize
from keyvid.models.audio_frontend import load_audio
from keyvid.models.builders import localizer
from keyvid.training.export import load_exported


@hydra.main(config_path="../conf", config_name="localize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.checkpoint == "tiny":
        torch.manual_seed(cfg.seed)
        model = localizer("tiny")
    else:
        model = load_exported(cfg.checkpoint)
    model = model.to(cfg.device).eval()
    wave, sr = load_audio(cfg.audio)
    result = localize(model, wave, sr, start_s=cfg.start_s, num_keyframes=cfg.num_keyframes, seed=cfg.seed,
                      mode=cfg.mode)
    record = {"audio": str(cfg.audio), "start_s": cfg.start_s, **result.to_dict()}
    text = json.dumps(record)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
