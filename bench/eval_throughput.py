"""Evaluation scorer throughput (clips/s) per metric, with random-initialised full-size networks.

    python bench/eval_throughput.py --device cuda --out bench_eval_gpu.json     # meant to take < 5 min on one H100
    python bench/eval_throughput.py --device cpu --clips 8 --out bench_eval_cpu.json

Random weights (no pretrained file on the benchmark machine): the arithmetic is that of the real
networks at the protocol's sizes, so the speed is representative. The clips are synthetic
(``data_prep.synthetic``, rendered in memory at 256x256, 48 frames at 24 fps: a KeyVID output),
taken to the protocol's 12 frames at 6 fps as ``launch/evaluate.py`` does. Decoding is not timed.
On the GPU machine, install ``../shared/tools/gpu_wheels.sh`` with av (the synthetic clips and the
mel front end import it) and run from the repository root with ``PYTHONPATH=/tmp/site:$PWD``.

One JSON line per metric, each timed as ``launch/evaluate.py: clip_features`` calls it (one clip
per call unless ``--batch``; frames moved to the device inside the timed loop, float32, default
cuDNN/TF32 settings), after one untimed warm-up call:

- ``sync``: classic DIS flow + peaks on the 48 native frames (CPU, whatever ``--device`` says);
- ``fid``: InceptionV3 (FID variant) pool3 features of frames 1-11 at 229x229;
- ``fvd``: I3D logits of the 12-frame clip at 224x224;
- ``mel``: ImageBind's log-mel of the clip's audio (CPU), which ``avsync`` and ``imagebind`` share;
- ``avsync``: AVSync classifier logits (R(2+1)D-18 video net at 224x224 + audio net), for RelSync;
- ``imagebind``: ImageBind-huge vision embeddings of the 12 frames and audio embedding (stride
  10 x 10), for AlignSync;
- ``total``: all of the above one after another, as the scorer runs them per clip. Scoring a run
  extracts features from every reference clip and every generated clip, so a run of N clips costs
  2N clips of this (the reference half once per sweep).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from data_prep.synthetic import ClipSpec, make_clip
from keyvid.eval import avsync as av
from keyvid.eval.fid import InceptionFeatures, fid_inception_v3
from keyvid.eval.fvd import I3DFeatures, i3d
from keyvid.eval.protocol import crop_resize, frame_indices, spec_for
from keyvid.eval.sync import video_peaks
from keyvid.models.imagebind_audio import imagebind_audio_huge
from keyvid.models.imagebind_vision import imagebind_vision_huge

METRICS = ("sync", "fid", "fvd", "mel", "avsync", "imagebind")


def synthetic_clips(n: int, seed: int = 0):
    """n clips: native "48 h w 3" uint8 frames, protocol "12 3 256 256" frames, "1 32000" audio at 16 kHz
    and its "1 128 204" mel (computed here once: the ``mel`` line times it on its own)."""
    spec, cs = spec_for("avsync15"), ClipSpec(256, 256, 24.0, 2.0, 16000)
    out = []
    for i in range(n):
        frames, audio, _ = make_clip(i, seed, cs)
        proto = crop_resize(frames[frame_indices(len(frames), cs.fps, 0.0, spec)], spec.size)
        wave = np.atleast_2d(audio).astype(np.float32)
        out.append((frames, proto, wave, av.audio_mel(wave, cs.sample_rate)))
    return out


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(step, batches, dev) -> float:
    """Seconds for ``step`` over every batch, after one untimed warm-up call on the first."""
    step(batches[0])
    _sync(dev)
    t = time.perf_counter()
    for b in batches:
        step(b)
    _sync(dev)
    return time.perf_counter() - t


def build(metric: str, dev: torch.device):
    """The metric's networks (random init, eval mode, on ``dev``) and a ``step(batch)`` timing one call."""

    def frames_of(b):
        return torch.stack([c[1] for c in b]).to(dev)

    def mel_of(b):
        return torch.stack([c[3] for c in b]).to(dev)

    if metric == "sync":
        return [], lambda b: [video_peaks(c[0]) for c in b]
    if metric == "mel":
        return [], lambda b: [av.audio_mel(c[2], 16000) for c in b]
    if metric == "fid":
        net = InceptionFeatures(fid_inception_v3("fid")).to(dev)
        return [net], lambda b: net(frames_of(b)[:, 1:].flatten(0, 1)).cpu()
    if metric == "fvd":
        net = I3DFeatures(i3d()).to(dev)
        return [net], lambda b: net(frames_of(b)).cpu()
    if metric == "avsync":
        net = av.avsync_classifier().eval().to(dev)
        return [net], lambda b: av.avsync_logits(net, mel_of(b), frames_of(b)).cpu()
    if metric == "imagebind":
        vision = imagebind_vision_huge().eval().to(dev)
        audio = imagebind_audio_huge(stride=(10, 10)).eval().to(dev)  # AVSyncD's original audio branch
        return [vision, audio], lambda b: av.image_audio_similarity(
            vision, audio, frames_of(b), mel_of(b)).cpu()
    raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--batch", type=int, default=1, help="clips per network call (the scorer uses 1)")
    p.add_argument("--metrics", default=",".join(METRICS))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    dev = torch.device(a.device)
    t = time.perf_counter()
    clips = synthetic_clips(a.clips)
    print(f"rendered {a.clips} synthetic clips in {time.perf_counter() - t:.1f} s", flush=True)
    batches = [clips[i : i + a.batch] for i in range(0, len(clips), a.batch)]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    rows = []
    for metric in a.metrics.split(","):
        nets, step = build(metric, dev)
        on_cpu = metric in ("sync", "mel")
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():
            secs = timed(step, batches, dev)
        row = {"metric": metric, "device": f"cpu ({torch.get_num_threads()} threads)" if on_cpu else name,
               "clips": a.clips, "batch": a.batch, "clips_per_s": round(a.clips / secs, 2),
               "ms_per_clip": round(1000 * secs / a.clips, 2),
               "params_m": round(sum(q.numel() for n in nets for q in n.parameters()) / 1e6, 1)}
        if dev.type == "cuda" and not on_cpu:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
        del nets, step
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    if len(rows) > 1:
        total_ms = sum(r["ms_per_clip"] for r in rows)
        row = {"metric": "total", "device": name, "clips": a.clips, "batch": a.batch,
               "clips_per_s": round(1000 / total_ms, 2), "ms_per_clip": round(total_ms, 2),
               "of": [r["metric"] for r in rows]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
