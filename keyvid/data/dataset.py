"""WebDataset loader for the shards written by ``launch/prepare_data.py`` (docs/data.md).

Each stored sample is 24 fps frames + 16 kHz mono audio + the raw motion score + keypoints. At load
time a sample becomes a training example:

1. a ``window_frames`` (48 = 2 s) window: the whole sample when it is one window; a random one
   for ``windows="full"`` samples (upstream's ``start_idx = random.randint(0, frames - 2 s)``),
   the stored keypoints re-windowed with ``KeyPoints.window``;
2. ``num_keyframes`` frame indices into the window: Algorithm 1 (``sampling="keyframe"``),
   evenly spaced (``"uniform"``, the Table 2 ablation), or a per-sample coin with probability
   ``keyframe_ratio`` of keyframes (``"mixed"``, upstream's ``rand_num < keyframe_ratio``);
3. only those frames are decoded (JPEG members), resized if ``image_size`` differs from the stored
   size, and scaled to [-1, 1].

Randomness is per sample: a NumPy generator seeded with ``(seed, epoch, crc32(key), visit)``,
``visit`` counting how often this loader copy has seen the key (so an infinite resampled stream
does not repeat one window forever). The same seed gives the same windows and keyframes whatever
the worker count or shuffle order.
"""

from __future__ import annotations

import io
import json
import re
import zlib
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from keyvid.data import FPS
from keyvid.data.keyframes import KeyPoints, keyframe_fs, normalize_curve, select_keyframes, smooth_curve, \
    uniform_keyframes

SAMPLINGS = ("keyframe", "uniform", "mixed")
_FRAME = re.compile(r"^f(\d+)\.jpg$")


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _decode_frames(sample: dict, idx: np.ndarray) -> np.ndarray:
    """The frames ``idx`` of a stored sample, "t h w c" uint8 RGB; only those are decoded."""
    if "frames.mp4" in sample:
        import av

        with av.open(io.BytesIO(sample["frames.mp4"])) as c:
            all_frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
        return all_frames[idx]
    import cv2

    members = {int(m.group(1)): k for k in sample if (m := _FRAME.match(k))}
    out = []
    for i in idx:
        bgr = cv2.imdecode(np.frombuffer(sample[members[int(i)]], np.uint8), cv2.IMREAD_COLOR)
        out.append(bgr[..., ::-1])
    return np.stack(out)


def frames_to_tensor(frames: np.ndarray, image_size: tuple[int, int] | None) -> torch.Tensor:
    """"t h w c" uint8 -> "c t h w" float in [-1, 1], resized (bilinear, antialiased) to ``image_size``."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # "t c h w"
    if image_size is not None and tuple(x.shape[-2:]) != tuple(image_size):
        x = F.interpolate(x, size=tuple(image_size), mode="bilinear", antialias=True, align_corners=False)
    return (x / 127.5 - 1.0).clamp(-1, 1).permute(1, 0, 2, 3).contiguous()


class SampleDecoder:
    """Stored sample (dict of bytes) -> training example; the ``map`` stage of ``make_dataset``."""

    def __init__(self, *, num_keyframes: int = 12, sampling: str = "keyframe", keyframe_ratio: float = 1.0,
                 mode: str = "paper", seed: int = 0, epoch: int = 0, window_frames: int = 48,
                 image_size: tuple[int, int] | None = None, all_frames: bool = False, latents: bool = False):
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling={sampling!r}; expected one of {SAMPLINGS}")
        self.num_keyframes, self.sampling, self.keyframe_ratio, self.mode = num_keyframes, sampling, keyframe_ratio, mode
        self.seed, self.epoch, self.window_frames = seed, epoch, window_frames
        self.image_size, self.all_frames, self.latents = image_size, all_frames, latents
        self.visits: Counter = Counter()

    def rng(self, key: str) -> np.random.Generator:
        visit = self.visits[key]
        self.visits[key] += 1
        return np.random.default_rng([self.seed, self.epoch, zlib.crc32(key.encode()), visit])

    def select(self, kp: KeyPoints, rng: np.random.Generator) -> np.ndarray:
        use_keyframes = self.sampling == "keyframe" or (self.sampling == "mixed" and rng.random() < self.keyframe_ratio)
        if not use_keyframes:
            return uniform_keyframes(kp.num_frames, self.num_keyframes)
        # upstream mode replays NumPy's legacy RNG, so it gets a RandomState seeded from this sample's generator
        sel_rng = rng if self.mode == "paper" else np.random.RandomState(int(rng.integers(2**31)))
        return select_keyframes(kp, self.num_keyframes, rng=sel_rng, mode=self.mode)

    def __call__(self, sample: dict) -> dict:
        key = sample["__key__"]
        meta = json.loads(sample["meta.json"])
        motion = _load_npy(sample["motion.npy"]).astype(np.float64)
        audio = _load_npy(sample["audio.npy"]).astype(np.float32)
        T, W = int(meta["num_frames"]), self.window_frames
        if T < W:
            raise ValueError(f"sample {key} has {T} frames, fewer than window_frames={W}")
        rng = self.rng(key)
        start = int(rng.integers(0, T - W + 1))  # 0 for single-window samples
        # the stored keypoints were detected on the min-max normalised, smoothed curve (detect_keypoints' default)
        kp = KeyPoints(np.asarray(meta["peaks"], np.int64), np.asarray(meta["valleys"], np.int64),
                       smooth_curve(normalize_curve(motion)), T).window(start, W)
        idx = self.select(kp, rng).astype(np.int64)
        chosen = start + (np.arange(W) if self.all_frames else idx)
        extra = {}
        if self.latents:  # precomputed VAE moments (data_prep/latents.py): decode only the first frame
            if "latents.npy" not in sample:
                raise ValueError(f"sample {key} has no latents.npy: run data_prep/latents.py or set latents off")
            extra["latent_moments"] = torch.from_numpy(_load_npy(sample["latents.npy"])[:, chosen].astype(np.float32))
            video = frames_to_tensor(_decode_frames(sample, chosen[:1]), self.image_size)
        else:
            video = frames_to_tensor(_decode_frames(sample, chosen), self.image_size)  # "c t h w"
        spf = meta.get("sample_rate", 16000) / FPS
        a0, n = int(round(start * spf)), int(round(W * spf))
        wave = np.zeros(n, np.float32)
        clip = audio[a0 : a0 + n]
        wave[: len(clip)] = clip
        return {
            "__key__": key,
            "key": key,
            "video": video,
            "first_frame": video[:, 0],  # frame_idx always starts at 0
            "frame_idx": torch.from_numpy(idx),
            "fs": keyframe_fs(idx, FPS)[1],
            "audio": torch.from_numpy(wave)[None],  # "1 n", n = 32000 for 2 s at 16 kHz
            "motion": torch.from_numpy(normalize_curve(motion[start : start + W]).astype(np.float32)),
            "caption": meta.get("caption", ""),
            # the last draw of this visit's generator, for per-visit choices made after decoding
            # (the interpolator's window, keyvid.training.video_diffusion.interpolation_window)
            "visit_seed": int(rng.integers(2**62)),
            **extra,
        }


def collate(batch: list[dict]) -> dict:
    """torch's default collate (captions and keys become lists), without WebDataset's ``__key__``."""
    return default_collate([{k: v for k, v in s.items() if k != "__key__"} for s in batch])


class ShardErrors:
    """WebDataset handler for reading shards: a tar (or member) that cannot be read is skipped with a
    warning naming it, and counted in ``count``, instead of stopping the run (``on_error="skip"``)."""

    def __init__(self, on_error: str = "skip"):
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error, self.count = on_error, 0

    def __call__(self, exn: Exception) -> bool:
        if self.on_error == "raise":
            raise exn
        self.count += 1
        import logging

        logging.getLogger(__name__).warning("skipped unreadable shard data (%d so far): %s", self.count, exn)
        return True


def make_dataset(
    shard_urls,
    *,
    num_keyframes: int = 12,
    sampling: str = "keyframe",
    keyframe_ratio: float = 1.0,
    mode: str = "paper",
    seed: int = 0,
    epoch: int = 0,
    window_frames: int = 48,
    image_size: tuple[int, int] | None = None,
    shuffle_buffer: int = 0,
    resampled: bool = False,
    all_frames: bool = False,
    batch_size: int | None = None,
    latents: bool = False,
    on_error: str = "skip",
):
    """A WebDataset pipeline over ``shard_urls`` (a brace pattern, e.g. ``train-{000000..000009}.tar``, or a list).

    Yields dicts (per sample, or batched with ``batch_size`` through ``collate``):
    ``video`` "c t h w" float in [-1, 1] (the ``num_keyframes`` frames; all ``window_frames`` frames
    with ``all_frames=True``, for the interpolator, ``frame_idx`` then indexing into them),
    ``frame_idx`` (T_K,) int64 on the 24 fps grid, ``fs`` int, ``audio`` (1, 32000) float32,
    ``motion`` (window_frames,) float32 in [0, 1], ``caption`` str, ``first_frame`` "c h w", ``key``.

    ``resampled=True`` is an infinite stream for training: each rank and DataLoader worker draws
    shards with its own generator seeded by ``(rank, worker, seed)`` (WebDataset's
    ``ResampledShards`` with ``deterministic=True``; its default reseeds from the clock), so no
    node or worker splitting is applied. Otherwise one pass over the data, shards split by node
    (``split_by_node``) then DataLoader worker (``split_by_worker``) and, with
    ``shuffle_buffer > 0``, shuffled with ``seed + epoch``.

    Built as a ``wds.DataPipeline`` (the class ``wds.WebDataset`` assembles) so the resampled
    source can be seeded; ``.with_epoch(n)`` sets a nominal epoch length as usual.

    A shard or member that cannot be read (truncated tar, duplicate member names) is skipped with a
    warning and counted in the returned pipeline's ``shard_errors.count`` (``on_error="raise"``
    stops instead).
    """
    import webdataset as wds

    decoder = SampleDecoder(num_keyframes=num_keyframes, sampling=sampling, keyframe_ratio=keyframe_ratio,
                            mode=mode, seed=seed, epoch=epoch, window_frames=window_frames,
                            image_size=image_size, all_frames=all_frames, latents=latents)
    if resampled:
        stages = [wds.ResampledShards(shard_urls, seed=seed + epoch, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(shard_urls), wds.split_by_node, wds.split_by_worker]
        if shuffle_buffer > 0:
            stages.append(wds.detshuffle(100, seed=seed + epoch))
    errors = ShardErrors(on_error)
    stages.append(wds.tarfile_to_samples(handler=errors))
    if shuffle_buffer > 0:
        stages.append(wds.shuffle(shuffle_buffer, seed=seed + epoch))
    stages.append(wds.map(decoder))
    if batch_size is not None:
        stages.append(wds.batched(batch_size, collation_fn=collate, partial=False))
    pipeline = wds.DataPipeline(*stages)
    pipeline.shard_errors = errors
    return pipeline
