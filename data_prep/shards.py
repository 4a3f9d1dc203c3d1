"""Write ingested samples as WebDataset shards, resumable and split across jobs.

Shard ``s`` of a split holds the samples of input videos ``[s * videos_per_shard, (s + 1) * videos_per_shard)``
of ``list_videos``'s fixed order. The plan is by videos, not samples, so it is known before
anything is decoded: every job and every restart agree on which video goes where without
talking to each other (with ``windows="all"`` a video yields a variable number of windows, so a
sample-count plan would need a decoding pass first).

Per shard (video2dataset's ``data_writer.py`` habit):

* ``{split}-{s:06d}.tar``  written to ``.tar.tmp`` and renamed when complete;
* ``{split}-{s:06d}.json`` the sidecar (keys, sample and video counts, seconds, errors), written
  last, also atomically. A shard with a sidecar is done: a restart skips it; a shard without one
  (a crash mid-way, a tar left behind) is written again from scratch;
* rejected videos go to ``errors-{split}-{job}.jsonl`` with the path, the reason and the shard
  (a rewritten shard first drops its lines left by a killed run);
* one JSON record per good video, ``records/{split}/{source_id}.json`` (``data_prep/records.py``),
  written after the tar and before the sidecar.

Tar members carry a fixed mtime, so a rerun after a kill writes byte-identical shards.

Jobs: shard ``s`` belongs to job ``s % num_jobs``; ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``
are the defaults, so one ``sbatch --array=0-N`` line splits the work.

Sample layout in the tar (key ``<source_id>_w<window>``, no dots):
``f000.jpg ...`` (one JPEG per frame, ``frame_codec="jpg"``) or ``frames.mp4`` (H.264, ``"mp4"``),
``audio.npy`` (float16, 16 kHz mono), ``motion.npy`` (float32 raw score), ``meta.json``.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.ingest import Rejected, Sample, VideoRecord, build_flow_backend, ingest_video
from data_prep.records import clip_record, write_record

FRAME_CODECS = ("jpg", "mp4")
# member mtime (webdataset stamps time.time() otherwise): the same inputs give the same tar bytes
TAR_MTIME = 0.0


# Workers are spawned, not forked: forking a process that already runs threads (torch's pools,
# DataLoader or test-runner threads) can deadlock the child on a lock held at fork time.
_SPAWN = multiprocessing.get_context("spawn")


@dataclass
class ShardConfig:
    """Everything a worker needs to turn one video into encoded samples (picklable)."""

    flow: str = "classic"
    flow_kwargs: dict = field(default_factory=dict)
    ingest_kwargs: dict = field(default_factory=dict)  # keyword arguments of ingest_video
    frame_codec: str = "jpg"
    jpeg_quality: int = 95


def shard_name(split: str, shard: int) -> str:
    return f"{split}-{shard:06d}"


def check_unique_sources(records: list[VideoRecord]) -> None:
    """One source id listed twice would write two samples under one key: refuse before writing."""
    seen: dict[str, Path] = {}
    dups = []
    for r in records:
        if r.source_id in seen:
            dups.append(f"{r.source_id} ({seen[r.source_id]} and {r.path})")
        seen.setdefault(r.source_id, r.path)
    if dups:
        raise ValueError(f"{len(dups)} duplicate source ids in the video list (fix the split file): "
                         + "; ".join(dups[:5]))


def shard_plan(records: list[VideoRecord], videos_per_shard: int) -> list[list[VideoRecord]]:
    if videos_per_shard < 1:
        raise ValueError(f"videos_per_shard={videos_per_shard} must be at least 1")
    return [records[i : i + videos_per_shard] for i in range(0, len(records), videos_per_shard)]


def job_shards(num_shards: int, job_index: int, num_jobs: int) -> list[int]:
    """The shards job ``job_index`` of ``num_jobs`` writes: every ``num_jobs``-th, starting at ``job_index``."""
    if not 0 <= job_index < num_jobs:
        raise ValueError(f"job_index={job_index} is outside 0..{num_jobs - 1}")
    return list(range(job_index, num_shards, num_jobs))


def slurm_job() -> tuple[int, int]:
    """(job_index, num_jobs) of this SLURM array task, or (0, 1) outside SLURM.

    Array ids need not start at 0 (``--array=1-8``): the index is taken relative to ``SLURM_ARRAY_TASK_MIN``.
    """
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" not in env:
        return 0, 1
    task = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
    return task, int(env.get("SLURM_ARRAY_TASK_COUNT", 1))


def is_done(out_dir: str | Path, split: str, shard: int) -> bool:
    return (Path(out_dir) / f"{shard_name(split, shard)}.json").is_file()


# ---------------------------------------------------------------------------------------------
# encoding


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def encode_frames(frames: np.ndarray, codec: str = "jpg", quality: int = 95, fps: float = 24.0) -> dict[str, bytes]:
    """"t h w c" uint8 -> tar members: ``f000.jpg``... or one ``frames.mp4``."""
    if codec == "jpg":
        import cv2

        digits = max(3, len(str(len(frames) - 1)))
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        out = {}
        for i, f in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", f[..., ::-1], params)  # cv2 wants BGR
            if not ok:
                raise RuntimeError(f"JPEG encoding failed for frame {i}")
            out[f"f{i:0{digits}d}.jpg"] = buf.tobytes()
        return out
    if codec == "mp4":
        from keyvid.data.io import write_av

        with tempfile.TemporaryDirectory() as d:
            return {"frames.mp4": write_av(Path(d) / "frames.mp4", frames, fps).read_bytes()}
    raise ValueError(f"unknown frame_codec {codec!r}; expected one of {FRAME_CODECS}")


def encode_sample(sample: Sample, codec: str = "jpg", quality: int = 95) -> dict:
    """A ``Sample`` -> the dict ``webdataset.TarWriter`` writes (all values bytes)."""
    return {
        "__key__": sample.key,
        **encode_frames(sample.frames, codec, quality, sample.meta.get("fps", 24)),
        "audio.npy": _npy(sample.audio.astype(np.float16)),
        "motion.npy": _npy(sample.motion.astype(np.float32)),
        "meta.json": json.dumps({**sample.meta, "frame_codec": codec}).encode(),
    }


# ---------------------------------------------------------------------------------------------
# workers: the flow backend is built once per process


_BACKEND = None


def _init_worker(flow: str, flow_kwargs: dict) -> None:
    global _BACKEND
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV's own pool would oversubscribe
    _BACKEND = build_flow_backend(flow, **flow_kwargs)


def process_video(record: VideoRecord, cfg: ShardConfig) -> tuple[list[dict], dict | None, dict | None]:
    """One video -> (encoded samples, error or None, per-clip record or None).

    Never raises: a bad video is an error record.
    """
    try:
        samples = ingest_video(record, _BACKEND, **cfg.ingest_kwargs)
        encoded = [encode_sample(s, cfg.frame_codec, cfg.jpeg_quality) for s in samples]
        return encoded, None, clip_record(record, samples)
    except Rejected as e:
        return [], {"path": str(record.path), "reason": e.reason}, None
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a job of thousands
        tb = traceback.format_exc(limit=3).strip().splitlines()[-1]
        return [], {"path": str(record.path), "reason": f"{type(e).__name__}: {e}", "where": tb}, None


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _write_errors(out_dir: Path, split: str, shard: int, job_index: int, errors: list[dict]) -> None:
    """Replace shard ``shard``'s lines in this job's errors manifest: a killed run may have left them."""
    path = out_dir / f"errors-{split}-{job_index}.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("shard") != shard]
    if errors or len(kept) != len(lines):
        _atomic_write_text(path, "".join(ln + "\n" for ln in kept + [json.dumps(e) for e in errors]))


def write_shard(out_dir: Path, split: str, shard: int, results, job_index: int = 0) -> dict:
    """Write the tar, the errors, the per-clip records, then the sidecar of one shard from
    ``process_video`` results ``(samples, error, record)``."""
    import webdataset as wds

    name = shard_name(split, shard)
    t0 = time.time()
    keys, errors, records, frames = [], [], [], 0
    tmp = out_dir / f"{name}.tar.tmp"
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=TAR_MTIME)
        for samples, error, record in results:
            if error is not None:
                errors.append({**error, "split": split, "shard": shard})
            if record is not None:
                records.append(record)
            for s in samples:
                writer.write(s)
                keys.append(s["__key__"])
                frames += json.loads(s["meta.json"])["num_frames"]
        writer.close()
    tmp.replace(out_dir / f"{name}.tar")
    _write_errors(out_dir, split, shard, job_index, errors)
    for rec in records:
        write_record(out_dir, split, {**rec, "windows": [{**w, "shard": name} for w in rec["windows"]]})
    stats = {"shard": name, "keys": keys, "num_samples": len(keys), "seconds": frames / 24.0,
             "errors": len(errors), "elapsed_s": round(time.time() - t0, 3)}
    _atomic_write_text(out_dir / f"{name}.json", json.dumps(stats, indent=1))
    return stats


def write_shards(
    records: list[VideoRecord],
    out_dir: str | Path,
    split: str,
    cfg: ShardConfig,
    *,
    videos_per_shard: int = 100,
    job_index: int | None = None,
    num_jobs: int | None = None,
    workers: int = 1,
) -> dict:
    """Write this job's not-yet-done shards of ``records``; returns a summary (written, skipped, errors)."""
    if cfg.frame_codec not in FRAME_CODECS:
        raise ValueError(f"unknown frame_codec {cfg.frame_codec!r}; expected one of {FRAME_CODECS}")
    slurm_index, slurm_count = slurm_job()
    job_index = slurm_index if job_index is None else job_index
    num_jobs = slurm_count if num_jobs is None else num_jobs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_unique_sources(records)
    plan = shard_plan(records, videos_per_shard)
    mine = job_shards(len(plan), job_index, num_jobs)
    todo = [s for s in mine if not is_done(out_dir, split, s)]
    summary = {"num_shards": len(plan), "job_index": job_index, "num_jobs": num_jobs,
               "skipped": len(mine) - len(todo), "written": [], "samples": 0, "errors": 0}
    pool = ProcessPoolExecutor(workers, mp_context=_SPAWN, initializer=_init_worker, initargs=(cfg.flow, cfg.flow_kwargs)) \
        if workers > 1 else None
    if pool is None:
        _init_worker(cfg.flow, cfg.flow_kwargs)
    try:
        for s in todo:
            videos = plan[s]
            results = pool.map(process_video, videos, [cfg] * len(videos)) if pool else \
                (process_video(v, cfg) for v in videos)
            stats = write_shard(out_dir, split, s, results, job_index)
            summary["written"].append(stats["shard"])
            summary["samples"] += stats["num_samples"]
            summary["errors"] += stats["errors"]
    finally:
        if pool is not None:
            pool.shutdown()
    last = len(plan) - 1
    summary["urls"] = str(out_dir / f"{split}-{{000000..{last:06d}}}.tar") if plan else None
    summary["records"] = str(out_dir / "records" / split)
    return summary


def write_tiny_shards(root: str | Path) -> str:
    """8 synthetic clips at 64x96 -> 2 train shards under ``root/shards``, the input of ``debug=tiny``
    training in the tests and ``bench/faults.py``; written once (an existing set is reused). Returns
    the shard pattern."""
    from data_prep.ingest import list_videos
    from data_prep.synthetic import ClipSpec, write_dataset

    root = Path(root)
    if not (root / "shards" / "train-000001.json").exists():
        write_dataset(root / "synthetic", num_clips=8, seed=3, spec=ClipSpec(64, 96), test_fraction=0.25)
        records = list_videos(root / "synthetic", "avsyncd", "train")
        write_shards(records, root / "shards", "train", ShardConfig(ingest_kwargs={"height": 64, "width": 96}),
                     videos_per_shard=3)
    return f"{root}/shards/train-{{000000..000001}}.tar"
