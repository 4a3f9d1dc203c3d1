"""Keyframe-localizer inference throughput (2 s audio clips per second), mel front end included.

    python bench/localizer_throughput.py --device cuda --batch 64 --out loc_gpu.json
    python bench/localizer_throughput.py --device cpu --batch 8

Huge (ImageBind-huge audio trunk) localizer, random weights (the arithmetic of a trained one).
"mel" is the per-clip Kaldi fbank on the CPU (done by DataLoader workers in training);
"model" is the forward pass alone; "end_to_end" is both, single process.
"""

import argparse
import json
import time

import numpy as np
import torch

from keyvid.models.audio_frontend import waveform_to_mel
from keyvid.models.builders import localizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    dev = torch.device(a.device)
    model = localizer("huge").to(dev).eval()
    waves = np.random.RandomState(0).uniform(-0.5, 0.5, (a.batch, 32000)).astype(np.float32)
    t = time.perf_counter()
    mels = torch.stack([waveform_to_mel(w[None], 16000) for w in waves])
    mel_s = (time.perf_counter() - t) / a.batch
    x = mels.to(dev)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)

    def fwd():
        with torch.no_grad(), ctx:
            return model(x)

    fwd()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(a.reps):
        fwd()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    model_s = (time.perf_counter() - t) / (a.reps * a.batch)
    row = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
           "batch": a.batch, "mel_clips_per_s": round(1 / mel_s, 1), "model_clips_per_s": round(1 / model_s, 1),
           "end_to_end_clips_per_s": round(1 / (mel_s + model_s), 1)}
    print(json.dumps(row))
    if a.out:
        json.dump(row, open(a.out, "w"))


if __name__ == "__main__":
    main()
