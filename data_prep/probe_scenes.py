"""A second, independent renderer of sounding scenes: held-out footage for testing sync metrics.

The sync metrics were first checked on ``data_prep.synthetic`` clips, the very renderer the models
train on; a metric tuned to one renderer can rank videos wrongly elsewhere (issue 18). This one
shares nothing with it but the output layout:

* any size and frame rate (``ProbeSpec``; defaults 180x240 at 30 fps, audio at 22.05 kHz);
* a tiled, textured world (checks, stripes or blotches) seen through a **panning, slightly
  bobbing camera**, so every pixel moves even when nothing happens;
* one to three objects of different shapes (square, triangle, diamond, ellipse, bar) and sizes,
  each with its own events and its own sound. Two laws of motion, both with the object's speed
  largest at the event:
  ``drop``: falls and rebounds off a ledge (parabolic arcs whose ends are the impacts);
  ``kick``: rests, is struck (a sudden velocity that friction damps) and recoils;
* the audio is a thud (drop) or a knock (kick) starting at each event, over hum and brown noise.

Events of one scene are at least ``min_gap`` apart across all its objects, so each sound has one
visible cause. Ground truth (``impact_times`` in s) is stored as ``<clip>.json`` beside the mp4,
as ``data_prep.synthetic`` does, so ``launch/evaluate.py`` reads either.

``python -m data_prep.probe_scenes --out data/probe --num-clips 12 --size 270x480 --fps 25``
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from keyvid.data.io import write_av

SHAPES = ("square", "triangle", "diamond", "ellipse", "bar")
LAWS = ("drop", "kick")


@dataclass(frozen=True)
class ProbeSpec:
    height: int = 180
    width: int = 240
    fps: float = 30.0
    duration: float = 2.0
    sample_rate: int = 22050
    pan: float = 30.0  # camera speed, px/s at this size (0: a fixed camera)
    max_objects: int = 3
    min_gap: float = 0.3  # s between any two events of a scene


def _event_times(rng: np.random.Generator, count: int, spec: ProbeSpec, taken: list[float]) -> list[float]:
    """Up to ``count`` event times in [0.25, duration - 0.15], ``min_gap`` from each other and ``taken``."""
    out: list[float] = []
    for _ in range(40 * count):
        if len(out) == count:
            break
        t = float(rng.uniform(0.25, spec.duration - 0.15))
        if all(abs(t - s) >= spec.min_gap for s in out + taken):
            out.append(t)
    return sorted(out)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """"h w 3" float world texture in [0, 1]: coloured checks, stripes or blotches."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(0.15, 0.55, 3), rng.uniform(0.35, 0.8, 3)
    kind = rng.integers(3)
    if kind == 0:
        cell = rng.uniform(10, 28)
        mask = ((xx // cell + yy // cell) % 2)[..., None]
    elif kind == 1:
        angle, period = rng.uniform(0, np.pi), rng.uniform(9, 25)
        mask = (0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period))[..., None]
    else:
        import cv2

        coarse = rng.random((max(2, h // 24), max(2, w // 24))).astype(np.float32)
        mask = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    return (a * (1 - mask) + b * mask).astype(np.float32)


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    dy, dx = (yy - cy) / r, (xx - cx) / r
    if shape == "square":
        return (np.abs(dy) <= 1) & (np.abs(dx) <= 1)
    if shape == "diamond":
        return np.abs(dy) + np.abs(dx) <= 1.2
    if shape == "ellipse":
        return (dy / 0.8) ** 2 + (dx / 1.3) ** 2 <= 1
    if shape == "bar":
        return (np.abs(dy) <= 0.45) & (np.abs(dx) <= 1.6)
    return (dy <= 1) & (dy >= -1) & (np.abs(dx) <= (dy + 1) * 0.6)  # triangle, apex up


def _drop_height(t: np.ndarray, events: list[float], duration: float) -> np.ndarray:
    """Height above the ledge in [0, 1]: a fall onto the first event, then arcs between events."""
    h = np.zeros_like(t)
    bounds = list(events) + [max(events[-1] + 0.6, duration + 0.1)]
    first = events[0]
    before = t < first
    h[before] = min(1.0, 1.6 * first) * (1 - (t[before] / first) ** 2)
    for a, b in zip(bounds[:-1], bounds[1:]):
        sel = (t >= a) & (t < b)
        amp = min(1.0, (b - a) / 0.7)
        h[sel] = 4 * amp * (t[sel] - a) * (b - t[sel]) / (b - a) ** 2
    return h


def _kick_offset(t: np.ndarray, events: list[float], rng: np.random.Generator) -> np.ndarray:
    """Displacement (in object radii) of a resting object struck at each event: v0 e^(-t/tau)."""
    x = np.zeros_like(t)
    direction = 1.0
    for e in events:
        v0, tau = rng.uniform(9, 14), rng.uniform(0.06, 0.1)  # radii/s, s
        after = t >= e
        x[after] += direction * v0 * tau * (1 - np.exp(-(t[after] - e) / tau))
        direction = -direction  # alternate, so the object stays in view
    return x


def _sound(law: str, rng: np.random.Generator, sr: int) -> np.ndarray:
    n = int(0.35 * sr)
    k = np.arange(n) / sr
    if law == "drop":  # a low thud
        f = rng.uniform(70, 160)
        wave = np.sin(2 * np.pi * f * k * (1 - 0.3 * k)) * np.exp(-k / 0.07)
    else:  # a hollow knock with two partials
        f = rng.uniform(500, 1100)
        wave = (np.sin(2 * np.pi * f * k) + 0.5 * np.sin(2 * np.pi * 2.3 * f * k)) * np.exp(-k / 0.04)
    click = int(0.003 * sr)
    wave[:click] += rng.standard_normal(click)
    return wave / np.abs(wave).max()


def make_scene(index: int, seed: int = 0, spec: ProbeSpec = ProbeSpec()) -> tuple[np.ndarray, np.ndarray, dict]:
    """Frames "t h w 3" uint8, audio "1 n" float32 and ground truth of scene ``index``."""
    rng = np.random.default_rng([seed, index, 7919])
    H, W = spec.height, spec.width
    n = int(round(spec.duration * spec.fps))
    t = np.arange(n) / spec.fps
    pan = spec.pan * rng.choice([-1, 1])
    margin = int(abs(pan) * spec.duration + 0.1 * H) + 2
    world = _texture(rng, H + 2 * margin, W + 2 * margin)
    cam_x = margin + pan * t - (pan * spec.duration if pan < 0 else 0)
    cam_y = margin + 0.03 * H * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * t + rng.uniform(0, 6.3))
    objects, taken = [], []
    for _ in range(int(rng.integers(1, spec.max_objects + 1))):
        events = _event_times(rng, int(rng.integers(1, 4)), spec, taken)
        if not events:
            continue
        taken += events
        law = LAWS[int(rng.integers(2))]
        r = float(rng.uniform(0.06, 0.12) * H)
        objects.append(dict(law=law, shape=SHAPES[int(rng.integers(len(SHAPES)))], r=r, events=events,
                            color=rng.uniform(0.0, 1.0, 3).astype(np.float32),
                            x=float(rng.uniform(cam_x.max() + 1.6 * r, cam_x.min() + W - 1.6 * r)),
                            ledge=margin + float(rng.uniform(0.7, 0.88)) * H,
                            path=_drop_height(t, events, spec.duration) if law == "drop" else _kick_offset(t, events, rng)))
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    frames = np.empty((n, H, W, 3), np.uint8)
    for i in range(n):
        y0, x0 = int(round(cam_y[i])), int(round(cam_x[i]))
        fy, fx = cam_y[i] - y0, cam_x[i] - x0  # sub-pixel camera: bilinear between 4 integer crops
        crop = lambda dy, dx: world[y0 + dy:y0 + dy + H, x0 + dx:x0 + dx + W]  # noqa: E731
        frame = ((1 - fy) * ((1 - fx) * crop(0, 0) + fx * crop(0, 1)) + fy * ((1 - fx) * crop(1, 0) + fx * crop(1, 1)))
        for ob in objects:
            if ob["law"] == "drop":
                cy, cx = ob["ledge"] - ob["r"] - ob["path"][i] * 0.5 * H, ob["x"]
            else:
                cy, cx = ob["ledge"] - ob["r"], ob["x"] + ob["path"][i] * ob["r"]
            inside = _shape_mask(ob["shape"], yy, xx, cy - cam_y[i], cx - cam_x[i], ob["r"])
            shade = 0.8 + 0.2 * np.sign(np.sin((xx - cx + cam_x[i]) / ob["r"] * 5))
            frame[inside] = ob["color"] * shade[inside][:, None]
        frames[i] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    sr = spec.sample_rate
    m = int(round(spec.duration * sr))
    wave = 0.01 * np.cumsum(rng.standard_normal(m)) / np.sqrt(sr) * 30  # brown noise
    wave += 0.01 * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * np.arange(m) / sr)
    wave -= wave.mean()
    for ob in objects:
        snd = _sound(ob["law"], rng, sr)
        for e in ob["events"]:
            s = int(round(e * sr))
            end = min(m, s + len(snd))
            wave[s:end] += rng.uniform(0.4, 0.7) * snd[: end - s]
    truth = dict(clip_id=f"probe_{seed}_{index:04d}", impact_times=sorted(round(e, 6) for e in taken),
                 objects=[dict(law=o["law"], shape=o["shape"], events=o["events"]) for o in objects],
                 fps=spec.fps, height=H, width=W, sample_rate=sr, duration=spec.duration, seed=seed)
    return frames, np.clip(wave, -1, 1)[None].astype(np.float32), truth


def write_scenes(root: str | Path, num_clips: int, seed: int = 0, spec: ProbeSpec = ProbeSpec()) -> list[str]:
    """Scenes as ``root/videos/probe/<id>.mp4`` + ``.json`` and a ``root/test.txt`` listing them."""
    root = Path(root)
    rels = []
    for i in range(num_clips):
        frames, audio, truth = make_scene(i, seed, spec)
        rel = f"probe/{truth['clip_id']}.mp4"
        video = root / "videos" / rel
        write_av(video, frames, spec.fps, audio, spec.sample_rate)
        video.with_suffix(".json").write_text(json.dumps(truth, indent=1))
        rels.append(rel)
    (root / "test.txt").write_text("\n".join(rels) + "\n")
    return rels


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--num-clips", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="180x240", help="HxW")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--pan", type=float, default=30.0, help="camera speed in px/s (0: fixed)")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.lower().split("x"))
    rels = write_scenes(a.out, a.num_clips, a.seed, replace(ProbeSpec(), height=h, width=w, fps=a.fps, pan=a.pan))
    print(f"wrote {len(rels)} scenes to {a.out}")


if __name__ == "__main__":
    main()
