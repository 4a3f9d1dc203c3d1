"""Training previews a person can look at: an mp4 with the clip's audio in the run directory, and
the frames as one image strip in TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from keyvid.data.io import write_av


def write_preview(accelerator, run_dir: Path, step: int, frames: torch.Tensor, batch: dict) -> Path:
    """frames: "t h w c" uint8; the mp4 plays the keyframes at 6 fps (12 keyframes = 2 s)."""
    audio = batch["audio"][0].float().numpy() if "audio" in batch else None
    path = write_av(run_dir / "samples" / f"step-{step:07d}.mp4", frames.numpy(), fps=max(1, len(frames) // 2),
                    audio=audio, sample_rate=16000)
    strip = np.concatenate(list(frames.numpy()), axis=1)  # "h (t w) c"
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("preview", strip, step, dataformats="HWC")
    return path
