"""Training data streams from the shard config: an infinite, seeded, resumable batch iterator."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import braceexpand
import torch
from torch.utils.data import DataLoader, IterableDataset

from keyvid.data.dataset import collate, make_dataset
from keyvid.models.audio_frontend import SAMPLE_RATE, waveform_to_mel


def check_shards(pattern: str, key: str = "data.train_shards") -> list[str]:
    """Expand a brace pattern and fail at start-up, naming the config key, if a local shard is missing."""
    if not pattern or pattern == "???":
        raise ValueError(f"{key} is not set: give a shard pattern like 'shards/train-{{000000..000009}}.tar'")
    urls = list(braceexpand.braceexpand(pattern))
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{key}: {len(missing)} of {len(urls)} shards missing, e.g. {missing[0]}")
    return urls


def add_mel(sample: dict) -> dict:
    """DataLoader-side: ImageBind's log-mel (1, 128, 204) of the sample's 2 s of audio."""
    sample["mel"] = waveform_to_mel(sample["audio"], SAMPLE_RATE)
    return sample


class _Mapped(IterableDataset):
    def __init__(self, source, fn: Callable[[dict], dict] | None):
        self.source, self.fn = source, fn

    def __iter__(self):
        for sample in self.source:
            yield self.fn(sample) if self.fn else sample


def setup_batches(cfg_data, cfg_train, *, seed: int, all_frames: bool = False,
                  per_sample: Callable[[dict], dict] | None = None, split: str = "train") -> Iterator[dict]:
    """An endless iterator of collated batches (``batch_size`` per process) of ``data.<split>_shards``.

    Resume: the training loop restarts the stream at every checkpoint with
    ``seed = cfg.seed + 1000003 * step``, so a resumed run reads the same batches as the
    uninterrupted one did after that checkpoint.
    """
    urls = check_shards(cfg_data[f"{split}_shards"], f"data.{split}_shards")
    ds = make_dataset(urls, num_keyframes=cfg_data.num_keyframes, sampling=cfg_data.sampling,
                      keyframe_ratio=cfg_data.keyframe_ratio, mode=cfg_data.selection_mode, seed=seed,
                      window_frames=cfg_data.num_frames, image_size=(cfg_data.height, cfg_data.width),
                      shuffle_buffer=cfg_data.shuffle_buffer, resampled=True, all_frames=all_frames,
                      latents=cfg_data.precomputed_latents)
    loader = DataLoader(_Mapped(ds, per_sample), batch_size=cfg_train.batch_size, collate_fn=collate,
                        num_workers=cfg_train.num_workers, pin_memory=torch.cuda.is_available(),
                        persistent_workers=cfg_train.num_workers > 0)
    while True:
        yield from loader
