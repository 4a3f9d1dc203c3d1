"""Full-size generation latency (random weights): keyframes (12 frames, 4 guidance branches in one
batched forward per step) and FreeNoise interpolation (48 frames), bf16, one GPU.

    python bench/pipeline_latency.py --steps 10

The paper's 90 DDIM steps scale linearly: the per-step figures are reported.
"""

import argparse
import contextlib
import json
import time

import torch

from keyvid.diffusion.guidance import GuidanceScales, guided_v
from keyvid.diffusion.freenoise import temporal_windows
from keyvid.models.unet import keyframe_unet_512


def cond(b, t, dev):
    return {"concat": torch.randn(b, 4, t, 40, 64, device=dev), "context": torch.randn(b, 77 + 16 * t, 1024, device=dev),
            "audio": torch.randn(b, t, 12, 768, device=dev), "fs": torch.full((b,), 6, device=dev),
            "frame_idx": torch.arange(t, device=dev).expand(b, t) % 48}


def per_step(model, t, steps, window=None):
    dev = "cuda"
    c = cond(1, t, dev)
    null = {"text": torch.zeros(1, 77, 1024, device=dev), "image": torch.zeros(1, 16 * t, 1024, device=dev),
            "audio": torch.zeros(1, t, 12, 768, device=dev)}
    x = torch.randn(1, 4, t, 40, 64, device=dev)
    ts = torch.full((1,), 500, device=dev)

    def one():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            return guided_v(model, x, ts, c, null, GuidanceScales(), 0.7)

    with temporal_windows(model, window, window // 2) if window else contextlib.nullcontext():
        one()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            one()
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    a = p.parse_args()
    with torch.device("cuda"):
        gen, interp = keyframe_unet_512(), keyframe_unet_512(interpolator=True)
    k = per_step(gen, 12, a.steps)
    row = {"device": torch.cuda.get_device_name(), "keyframe_step_s": round(k, 3)}
    try:
        i = per_step(interp, 48, a.steps, window=12)
        row.update(interp_step_s=round(i, 3), est_90_steps_both_s=round(90 * (k + i), 1))
    except torch.OutOfMemoryError:
        row["interp"] = "out of memory (4 branches x 48 frames in one forward)"
    row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    print(json.dumps(row))


if __name__ == "__main__":
    main()
