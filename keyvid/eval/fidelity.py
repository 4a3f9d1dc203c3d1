"""Two weight-free fidelity diagnostics that stand beside every quality table (docs/learning.md):

* **frame-0 PSNR**: the generated first frame against the reference clip's first frame. The first frame
  is the conditioning image, so a model that has learnt anything reproduces it up to what the VAE
  loses; the real clips through the same VAE (encode, decode) give the ceiling, measured the same way.
* **flicker**: the mean absolute frame-to-frame difference (0-255 scale). Its ratio to the reference
  clip's says whether a video moves as much as the real one; far above 1 is noise or flicker, which
  peak-based sync scores then mistake for motion.

Both run on the protocol's frames ("t c h w" float in [0, 1], keyvid.eval.protocol), so every row of a
table is measured at the same size.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from keyvid.eval.bootstrap import interval, resample


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (peak 1); inf when identical."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def flicker(frames: torch.Tensor) -> float:
    """Mean absolute difference of consecutive frames, on the 0-255 scale ("t c h w" in [0, 1])."""
    if frames.shape[0] < 2:
        raise ValueError(f"flicker needs at least 2 frames, got {frames.shape[0]}")
    return 255.0 * (frames[1:].double() - frames[:-1].double()).abs().mean().item()


def reference_stats(frames: torch.Tensor) -> dict:
    """What the diagnostics keep of a reference clip: its first frame and its flicker."""
    return {"frame0": frames[0].clone(), "flicker": flicker(frames)}


def clip_fidelity(frames: torch.Tensor, ref: dict) -> dict:
    """Per-clip row: ``PSNR-0`` (dB) and the generated and reference flicker."""
    return {"PSNR-0": psnr(frames[0], ref["frame0"]), "flicker": flicker(frames), "flicker_ref": ref["flicker"]}


def pooled_fidelity(rows: list[dict], seed: int = 0, draws: int = 2000) -> dict:
    """Over clips: mean PSNR-0 and the flicker ratio (mean generated / mean reference flicker), each
    with a 95 % bootstrap interval over clips."""
    p = np.array([min(r["PSNR-0"], 100.0) for r in rows])
    g = np.array([r["flicker"] for r in rows])
    f = np.array([r["flicker_ref"] for r in rows])
    idx = resample(len(rows), draws, seed)
    ratio = g[idx].mean(1) / np.maximum(f[idx].mean(1), 1e-12)
    return {"PSNR-0": float(p.mean()), "PSNR-0_ci95": list(interval(p[idx].mean(1))),
            "Flicker": float(g.mean() / max(f.mean(), 1e-12)), "Flicker_ci95": list(interval(ratio))}
