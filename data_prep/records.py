"""One JSON record per input clip, beside the shards, so a person can inspect what the job decided.

``<out_dir>/records/<split>/<source_id>.json`` (issue 3 item 7)::

    source, source_id, caption, label
    fps            24
    num_frames     frames of ``motion_score``: the 24 fps frames the job computed flow on (the clip up to
                   the end of its last window: with ``windows=all`` a tail shorter than a window is
                   dropped; ``first`` keeps the first window, ``full`` up to ``max_seconds``)
    motion_score   one float per frame (raw flow magnitude, ``ingest.reduction``); null for frames between
                   windows when ``stride_seconds > window_seconds`` (never stored in a sample)
    peaks, valleys detect_keypoints on the whole ``motion_score`` (frame indices into it; null with gaps)
    keyframes      T_K = 12 indices in the first 2 s window: Algorithm 1, paper mode, seed 0, on the
                   first sample's stored keypoints windowed to frames [0, 48), as the loader does
    windows        the samples written: key, shard, start_frame, num_frames, and the peaks / valleys
                   stored in that sample (detected on its own curve)

Built from the ingested samples, so it costs no extra decoding or flow. Rejected clips get no record:
they are in the errors manifest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from data_prep.ingest import FPS, Sample, VideoRecord
from keyvid.data.keyframes import KeyPoints, detect_keypoints, normalize_curve, select_keyframes, smooth_curve

RECORD_KEYFRAMES = 12  # T_K
RECORD_SEED = 0
RECORD_WINDOW = 2 * FPS  # the first 2 s window


def _float(x) -> float:
    return float(f"{float(x):.7g}")  # float32 precision, short JSON


def clip_record(record: VideoRecord, samples: list[Sample]) -> dict:
    """The per-clip record of one ingested video (``windows[*].shard`` is filled in by the shard writer)."""
    starts = [int(round(s.meta["start_seconds"] * FPS)) for s in samples]
    num_frames = max(st + len(s.motion) for st, s in zip(starts, samples))
    curve = np.full(num_frames, np.nan)
    for st, s in zip(starts, samples):
        curve[st : st + len(s.motion)] = s.motion  # overlapping windows hold the same slice of one curve
    complete = bool(np.isfinite(curve).all())
    whole = detect_keypoints(curve) if complete else None

    first = samples[0]
    t = len(first.motion)
    win = min(RECORD_WINDOW, t)
    kp = KeyPoints(np.asarray(first.meta["peaks"], np.int64), np.asarray(first.meta["valleys"], np.int64),
                   smooth_curve(normalize_curve(first.motion.astype(np.float64))), t).window(0, win)
    # a window shorter than T_K frames (ingest.window_seconds < 0.5) has no keyframes, but is still a sample
    keyframes = select_keyframes(kp, RECORD_KEYFRAMES, rng=RECORD_SEED, mode="paper") if win >= RECORD_KEYFRAMES \
        else None
    return {
        "source": str(record.path), "source_id": record.source_id, "caption": record.caption, "label": record.label,
        "fps": FPS, "num_frames": num_frames,
        "motion_score": [_float(v) if np.isfinite(v) else None for v in curve],
        "peaks": whole.peaks.tolist() if complete else None,
        "valleys": whole.valleys.tolist() if complete else None,
        "keyframes": None if keyframes is None else keyframes.tolist(), "keyframe_seed": RECORD_SEED, "keyframe_mode": "paper",
        "windows": [{"key": s.key, "shard": None, "start_frame": st, "num_frames": len(s.motion),
                     "peaks": s.meta["peaks"], "valleys": s.meta["valleys"]} for st, s in zip(starts, samples)],
    }


def record_path(out_dir: str | Path, split: str, source_id: str) -> Path:
    return Path(out_dir) / "records" / split / f"{source_id}.json"


def write_record(out_dir: str | Path, split: str, rec: dict) -> Path:
    """Write one record atomically (``.tmp`` then rename): a killed job leaves no half record."""
    path = record_path(out_dir, split, rec["source_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # one top-level field per line, values compact: a 10 s motion_score stays one line
    tmp.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in rec.items()) + "\n}\n")
    tmp.replace(path)
    return path
