"""Keyframes from audio alone, with a trained localizer.

    python launch/localize.py audio=clip.wav checkpoint=runs/localizer/export
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from keyvid.localize import load_localizer, localize
from keyvid.models.audio_frontend import load_audio


@hydra.main(config_path="../conf", config_name="localize", version_base="1.3")
def main(cfg: DictConfig) -> None:
    model = load_localizer(cfg.checkpoint, cfg.device)
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
