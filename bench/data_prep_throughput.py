"""CPU data-prep throughput on the machine it runs on: classic flow, shard writer, shard loader.

    python bench/data_prep_throughput.py --out bench_data_prep.jsonl

One JSON line per measurement (also appended to ``--out``):

* ``classic_flow``: OpenCV DIS (``ClassicFlow``, preset ``medium``) frame pairs/s on a 2 s synthetic
  clip at the training size (320x512), limited to 2 cores (CPU affinity + ``cv2.setNumThreads(2)``)
  and on all cores;
* ``shard_writer``: ``write_shards`` samples/s (decode, 24 fps, resize, DIS flow, keypoints, JPEG,
  tar, per-clip records) on synthetic 2 s clips: ``workers=1`` on 8 of them, ``min(16, cores)``
  workers on all ``--clips``; the wall time includes spawning the worker processes, as a real job
  pays it once per run. Each worker's OpenCV uses its default thread count (all cores);
* ``loader``: ``make_dataset(..., resampled=True, batch_size=8)`` samples/s through a ``DataLoader``
  with 0, 2 and 8 workers: 12 keyframes per sample (generator training) and all 48 frames
  (``all_frames=True``, the interpolator), after the first batch (worker start-up) is out.

Everything lives in a temporary directory that is removed at the end.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count()))


def limit_cores(n: int | None) -> None:
    """Pin this process to ``n`` of its cores (None: all) and size OpenCV's thread pool to match."""
    import cv2

    allowed = ALL_CORES if n is None else ALL_CORES[:n]
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, allowed)
    cv2.setNumThreads(len(allowed))


def emit(row: dict, out: str | None) -> None:
    row = {**row, "cpu_cores": len(ALL_CORES)}
    print(json.dumps(row), flush=True)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


def bench_flow(height: int, width: int, seconds: float, out: str | None) -> None:
    from data_prep.synthetic import ClipSpec, make_clip
    from keyvid.data.motion import ClassicFlow

    frames, _, _ = make_clip(0, 0, ClipSpec(height, width, 24.0, 2.0))  # bouncing ball, 48 frames
    flow = ClassicFlow("medium")
    for n in (2, None):
        limit_cores(n)
        flow(frames[:4])  # warm-up
        reps, t = 0, time.perf_counter()
        while reps == 0 or time.perf_counter() - t < seconds:
            flow(frames)
            reps += 1
        dt = time.perf_counter() - t
        emit({"bench": "classic_flow", "preset": "medium", "size": f"{height}x{width}",
              "cores": n or len(ALL_CORES), "pairs_per_s": round(reps * (len(frames) - 1) / dt, 1)}, out)
    limit_cores(None)


def bench_writer(root: Path, tmp: Path, height: int, width: int, out: str | None) -> Path:
    from data_prep.ingest import list_videos
    from data_prep.shards import ShardConfig, write_shards

    records = list_videos(root, "avsyncd", "train")
    cfg = ShardConfig(ingest_kwargs={"height": height, "width": width})
    shards = None
    for workers in sorted({1, min(16, len(ALL_CORES))}):
        out_dir = tmp / f"shards_w{workers}"
        todo = records[:8] if workers == 1 else records  # one process: a few clips give its rate
        t = time.perf_counter()
        summary = write_shards(todo, out_dir, "train", cfg, videos_per_shard=100, job_index=0, num_jobs=1,
                               workers=workers)
        dt = time.perf_counter() - t
        emit({"bench": "shard_writer", "size": f"{height}x{width}", "workers": workers, "clips": len(todo),
              "samples": summary["samples"], "samples_per_s": round(summary["samples"] / dt, 2),
              "seconds": round(dt, 1)}, out)
        shards = Path(summary["urls"])
    return shards


def bench_loader(urls: str, samples: int, seconds: float, out: str | None) -> None:
    import torch
    from torch.utils.data import DataLoader

    from keyvid.data.dataset import make_dataset

    batch = 8
    for all_frames in (False, True):
        for workers in (0, 2, 8):
            ds = make_dataset(urls, resampled=True, batch_size=batch, all_frames=all_frames, seed=0)
            it = iter(DataLoader(ds, batch_size=None, num_workers=workers))
            next(it)  # worker start-up and the first shard open
            n, t = 0, time.perf_counter()
            while n < samples and (n == 0 or time.perf_counter() - t < seconds):
                b = next(it)
                n += len(b["key"])
            dt = time.perf_counter() - t
            del it
            emit({"bench": "loader", "frames": "all_48" if all_frames else "keyframes_12", "num_workers": workers,
                  "batch_size": batch, "samples": n, "samples_per_s": round(n / dt, 1),
                  "main_torch_threads": torch.get_num_threads()}, out)


ALL_CORES = cores()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="320x512", help="HxW of the training frames (and of the flow)")
    p.add_argument("--clips", type=int, default=None, help="synthetic 2 s clips for the multi-worker writer "
                   "(default: 4 per worker, at least 16)")
    p.add_argument("--flow-seconds", type=float, default=5.0, help="time per flow measurement")
    p.add_argument("--loader-samples", type=int, default=512, help="samples per loader measurement, at most")
    p.add_argument("--loader-seconds", type=float, default=8.0, help="time per loader measurement, at most")
    p.add_argument("--tmp", default=None, help="parent of the temporary directory")
    p.add_argument("--out", default=None, help="append the JSON lines to this file")
    a = p.parse_args()
    h, w = (int(v) for v in a.size.lower().split("x"))
    clips = a.clips or max(16, 4 * min(16, len(ALL_CORES)))

    from data_prep.synthetic import ClipSpec, write_dataset

    bench_flow(h, w, a.flow_seconds, a.out)
    with tempfile.TemporaryDirectory(dir=a.tmp) as d:
        tmp = Path(d)
        t = time.perf_counter()
        root = write_dataset(tmp / "syn", clips, seed=0, spec=ClipSpec(h, w, 24.0, 2.0), test_fraction=0,
                             workers=min(16, len(ALL_CORES)))
        print(json.dumps({"note": f"wrote {clips} synthetic clips in {time.perf_counter() - t:.1f} s"}), flush=True)
        shards = bench_writer(root, tmp, h, w, a.out)
        bench_loader(str(shards), a.loader_samples, a.loader_seconds, a.out)


if __name__ == "__main__":
    main()
