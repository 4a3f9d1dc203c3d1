"""Synthetic audio-visual clips with known impact times: the embedded demo data and test set.

Three classes, deterministic per (seed, index):

* ``bouncing_ball``: a textured ball falls and bounces. Between impacts it follows a parabola,
  so its speed is largest at each impact and zero at the apex: every impact is a peak of the
  motion score (and each apex a valley). Each impact makes a low "thump" in the audio.
* ``hammering``: a hammer head strikes an anvil at a fixed period (rhythmic hits), same motion
  law; each strike makes a metallic ring.
* ``calm``: a slowly drifting texture with wind-like noise; no impacts.

Written in AVSyncD's layout, so the data prep reads it like AVSync15::

    root/classes.txt  root/train.txt  root/test.txt   (lines "class/clip_id.mp4")
    root/videos/<class>/<clip_id>.mp4                 (H.264 + AAC)
    root/videos/<class>/<clip_id>.json                (ground truth: impact_times in s, caption, ...)

``python -m data_prep.synthetic --out data/synthetic --num-clips 24``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keyvid.data.io import write_av

# 1 / std of these clips' pixels in [-1, 1] (0.171 over the first 12 clips of seed 0 at 64x96, after 4x
# average pooling 0.169): the PixelVAE scale factor that gives unit-variance latents, as SD's 0.18215
# does for its VAE. At scale 1 the latents' std is 0.17, so the diffusion sees the clip 34x below the
# noise level it was designed for and the v-loss plateaus (0.0055) with frame 0 blurred (docs/learning.md).
PIXEL_LATENT_SCALE = 5.8

CLASSES = {
    "bouncing_ball": "a ball bouncing on the floor",
    "hammering": "a hammer hitting an anvil",
    "calm": "calm water with wind noise",
}


@dataclass
class ClipSpec:
    height: int = 320
    width: int = 512
    fps: float = 24.0
    duration: float = 2.0
    sample_rate: int = 16000


@dataclass
class GroundTruth:
    clip_id: str
    label: str
    caption: str
    impact_times: list[float]
    fps: float
    num_frames: int
    height: int
    width: int
    sample_rate: int
    duration: float
    seed: int


def impact_schedule(label: str, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Impact times in seconds. Spacing >= 0.3 s keeps peaks >= 7 frames apart at 24 fps."""
    if label == "calm":
        return np.empty(0)
    if label == "hammering":
        period = rng.uniform(0.3, 0.55)
        first = rng.uniform(0.2, 0.2 + period)
        return np.arange(first, duration - 0.1, period)
    n = int(rng.integers(1, 5))
    for _ in range(100):
        t = np.sort(rng.uniform(0.25, duration - 0.15, n))
        if n == 1 or np.diff(t).min() >= 0.3:
            return t
    return np.array([duration / 2])


def bounce_height(t: np.ndarray, impacts: np.ndarray, duration: float) -> np.ndarray:
    """Height in [0, 1] above the floor; zero exactly at impacts, parabolic arcs between.

    Arc i spans impacts (a, b) with height 4 A (t - a)(b - t) / (b - a)^2, whose speed 4 A / (b - a)
    is largest at both ends. Before the first impact the object falls from rest; after the last
    it rebounds and does not come down again before the clip ends.
    """
    if len(impacts) == 0:
        return np.full_like(t, 0.5)
    h = np.empty_like(t)
    # the rebound after the last impact must not land again inside the clip: its arc ends at
    # least one arc length after the clip does
    last_arc = np.diff(impacts)[-1] if len(impacts) > 1 else 0.6
    bounds = np.concatenate([impacts, [max(impacts[-1] + last_arc, duration + 0.05)]])
    first = impacts[0]
    before = t < first
    # falling from rest reaches speed 2 h0 / first: capped at the arcs' impact speed 4 * 0.7 / 0.8
    h0 = min(0.7, 1.75 * first)
    h[before] = h0 * (1 - (t[before] / first) ** 2)
    for a, b in zip(bounds[:-1], bounds[1:]):
        sel = (t >= a) & (t < b)
        amp = 0.7 * min(1.0, (b - a) / 0.8)
        h[sel] = 4 * amp * (t[sel] - a) * (b - t[sel]) / (b - a) ** 2
    h[t >= bounds[-1]] = 0.0
    return h


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int = 8) -> np.ndarray:
    import cv2

    coarse = rng.random((cells, cells * max(1, w // h)), dtype=np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def render_video(label: str, impacts: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """"t h w c" uint8 frames of the scene."""
    H, W = spec.height, spec.width
    n = int(round(spec.duration * spec.fps))
    t = np.arange(n) / spec.fps
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    base_color = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    bg = 0.35 + 0.3 * _smooth_noise(rng, H, W)[..., None] * base_color
    frames = np.empty((n, H, W, 3), np.float32)
    if label == "calm":
        # A sum of low-frequency waves drifting at a constant sub-pixel speed: steady motion,
        # no speed peaks (an integer-pixel roll would make the flow jitter between 0 and 1 px).
        k = rng.uniform(0.04, 0.12, (6, 2)) * rng.choice([-1, 1], (6, 2))
        phase = rng.uniform(0, 2 * np.pi, 6)
        tint = rng.uniform(0.3, 0.9, 3).astype(np.float32)
        speed = rng.uniform(20, 40)  # px / s
        for i, ti in enumerate(t):
            tex = sum(np.sin(k[j, 0] * (xx - speed * ti) + k[j, 1] * yy + phase[j]) for j in range(6)) / 6
            frames[i] = 0.45 + 0.35 * tex[..., None] * tint
        return (np.clip(frames, 0, 1) * 255).astype(np.uint8)
    floor_y = int(H * 0.85)
    bg[floor_y:] = 0.25
    height = bounce_height(t, impacts, spec.duration)
    color = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    if label == "bouncing_ball":
        r = H * 0.11
        cx = rng.uniform(0.3, 0.7) * W
        for i, hi in enumerate(height):
            cy = floor_y - r - hi * (floor_y - 2.2 * r)
            d2 = (xx - cx) ** 2 + (yy - cy) ** 2
            inside = d2 <= r * r
            stripes = 0.75 + 0.25 * np.sign(np.sin((yy - cy) / r * 6 + (xx - cx) / r * 3))
            frame = bg.copy()
            frame[inside] = color * stripes[inside][:, None]
            frames[i] = frame
    else:  # hammering: a striped hammer head over an anvil
        anvil = (yy > floor_y - H * 0.1) & (yy < floor_y) & (np.abs(xx - W / 2) < W * 0.15)
        hw, hh = W * 0.08, H * 0.09
        for i, hi in enumerate(height):
            top = floor_y - H * 0.1 - hh - hi * H * 0.5
            head = (yy >= top) & (yy < top + hh) & (np.abs(xx - W / 2) < hw)
            handle = (yy < top) & (np.abs(xx - W / 2) < hw * 0.2)
            stripes = 0.75 + 0.25 * np.sign(np.sin((xx - W / 2) / hw * 8))
            frame = bg.copy()
            frame[anvil] = 0.15
            frame[handle] = (0.45, 0.3, 0.15)
            frame[head] = color * stripes[head][:, None]
            frames[i] = frame
    return (np.clip(frames, 0, 1) * 255).astype(np.uint8)


def _impact_speeds(impacts: np.ndarray) -> np.ndarray:
    if len(impacts) == 0:
        return impacts
    gaps = np.diff(np.concatenate([[0.0], impacts]))
    return np.clip(gaps / 0.6, 0.4, 1.0)


def render_audio(label: str, impacts: np.ndarray, spec: ClipSpec, rng: np.random.Generator) -> np.ndarray:
    """"1 n" float32 mono: a transient starting exactly at each impact, over a low noise floor."""
    sr = spec.sample_rate
    n = int(round(spec.duration * sr))
    wave = 0.004 * rng.standard_normal(n)
    if label == "calm":
        wind = np.convolve(rng.standard_normal(n), np.ones(64) / 8, mode="same")
        wave += 0.05 * wind * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * np.arange(n) / sr))
        return wave[None].astype(np.float32)
    tone = rng.uniform(110, 220) if label == "bouncing_ball" else rng.uniform(900, 1600)
    decay = 0.05 if label == "bouncing_ball" else 0.12
    length = int(0.3 * sr)
    k = np.arange(length) / sr
    env = np.exp(-k / decay)
    for ti, amp in zip(impacts, _impact_speeds(impacts)):
        start = int(round(ti * sr))
        burst = np.sin(2 * np.pi * tone * k) + 0.6 * np.sin(2 * np.pi * 2.7 * tone * k)
        burst[: int(0.004 * sr)] += 1.5 * rng.standard_normal(int(0.004 * sr))  # the click of contact
        seg = 0.6 * amp * env * burst
        end = min(n, start + length)
        wave[start:end] += seg[: end - start]
    return np.clip(wave, -1, 1)[None].astype(np.float32)


def make_clip(index: int, seed: int, spec: ClipSpec, label: str | None = None) -> tuple[np.ndarray, np.ndarray, GroundTruth]:
    """Frames, audio and ground truth of clip ``index``: the same (seed, index) always gives the same clip."""
    rng = np.random.default_rng([seed, index])
    labels = list(CLASSES)
    label = label or labels[index % len(labels)]
    if label not in CLASSES:
        raise ValueError(f"unknown synthetic class {label!r}; expected one of {labels}")
    impacts = impact_schedule(label, spec.duration, rng)
    frames = render_video(label, impacts, spec, rng)
    audio = render_audio(label, impacts, spec, rng)
    gt = GroundTruth(
        clip_id=f"{label}_{seed}_{index:05d}", label=label, caption=CLASSES[label],
        impact_times=[round(float(x), 6) for x in impacts], fps=spec.fps, num_frames=len(frames),
        height=spec.height, width=spec.width, sample_rate=spec.sample_rate, duration=spec.duration, seed=seed,
    )
    return frames, audio, gt


def _write_one(args) -> str:
    root, index, seed, spec = args
    frames, audio, gt = make_clip(index, seed, spec)
    rel = f"{gt.label}/{gt.clip_id}.mp4"
    video = Path(root) / "videos" / rel
    if not (video.exists() and video.with_suffix(".json").exists()):  # restart skips finished clips
        write_av(video, frames, spec.fps, audio, spec.sample_rate)
        video.with_suffix(".json").write_text(json.dumps(asdict(gt), indent=1))
    return rel


def write_dataset(root: str | Path, num_clips: int, seed: int = 0, spec: ClipSpec | None = None,
                  test_fraction: float = 0.25, workers: int = 1) -> Path:
    """Write ``num_clips`` clips in AVSyncD's layout; every 1/test_fraction-th clip goes to test.txt."""
    root = Path(root)
    spec = spec or ClipSpec()
    jobs = [(str(root), i, seed, spec) for i in range(num_clips)]
    if workers > 1:
        # spawned workers: forking a threaded process can deadlock (see data_prep/shards.py)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            rels = list(pool.map(_write_one, jobs, chunksize=8))
    else:
        rels = [_write_one(j) for j in jobs]
    every = max(1, round(1 / test_fraction)) if test_fraction > 0 else 0
    test = [r for i, r in enumerate(rels) if every and i % every == every - 1]
    train = [r for r in rels if r not in set(test)]
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num-clips", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="320x512", help="HxW")
    p.add_argument("--fps", type=float, default=24.0)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--test-fraction", type=float, default=0.25)
    p.add_argument("--workers", type=int, default=1)
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    spec = ClipSpec(h, w, a.fps, a.duration, a.sample_rate)
    root = write_dataset(a.out, a.num_clips, a.seed, spec, a.test_fraction, a.workers)
    print(f"wrote {a.num_clips} clips to {root}")


if __name__ == "__main__":
    main()
