"""Ingest: one source video -> training samples (24 fps frames, 16 kHz mono audio, motion score, keypoints).

Stages, each a pure function on arrays, composed by ``ingest_video``:

``list_videos``          a dataset folder -> ``VideoRecord`` (path, caption, source_id, label)
``resample_frames``      any frame rate -> 24 fps, by timestamp (nearest source frame per 1/24 s)
``resize_center_crop``   shorter side to the training size, then a center crop (upstream's
                         ``transforms.Resize(min(res)) + CenterCrop(res)``)
``resample_audio``       any channels / rate -> mono (mean of channels) float32 at 16 kHz
``window_starts``        which 2 s windows of a clip become samples (``windows="all" | "first" | "full"``)
``motion_score``         (keyvid.data.motion) per-frame flow magnitude, flow backend chosen by name
``detect_keypoints``     (keyvid.data.keyframes) peaks and valleys of the score

A video that cannot become a sample (unreadable, no audio, shorter than one window, ...) raises
``Rejected`` with the reason; the shard writer puts it in the errors manifest and goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keyvid.data import FPS
from keyvid.data.io import MediaError, read_av
from keyvid.data.keyframes import detect_keypoints
from keyvid.data.motion import ClassicFlow, FlowBackend, motion_score

SAMPLE_RATE = 16000  # the audio encoders' rate
LAYOUTS = ("avsyncd", "folder")
WINDOWS = ("all", "first", "full")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
# audio may end a little before the video (encoder priming, container rounding): up to this much
# missing audio at a window's end is padded with silence, more rejects the window
AUDIO_SLACK_SECONDS = 0.1


class Rejected(ValueError):
    """A video that cannot become a training sample; ``reason`` says why (for the errors manifest)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True)
class VideoRecord:
    path: Path
    caption: str
    source_id: str  # unique within the dataset, e.g. "class/file" (the shard key is derived from it)
    label: str  # class name, or "" for a plain folder


@dataclass
class Sample:
    key: str  # WebDataset __key__: no dots (WebDataset splits member names at the first dot)
    frames: np.ndarray  # "t h w c" uint8 RGB at 24 fps
    audio: np.ndarray  # "n" float32 mono at 16 kHz, n = t / 24 * 16000
    motion: np.ndarray  # "t" float32 raw motion score (flow magnitude, not normalised)
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# dataset layouts


def _split_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def class_caption(rel: str) -> str:
    """An AVSyncD-layout clip's caption: its class folder, underscores as spaces ("hammering/x.mp4" ->
    "hammering"). Training reads it from the shards; generation from a dataset split uses it too."""
    return rel.split("/")[0].replace("_", " ")


def _list_avsyncd(root: Path, split: str) -> list[VideoRecord]:
    records = []
    for rel in _split_lines(root / f"{split}.txt"):
        label = rel.split("/")[0]
        records.append(VideoRecord(root / "videos" / rel, class_caption(rel), str(Path(rel).with_suffix("")), label))
    return records


def _folder_captions(root: Path) -> dict[str, str]:
    """``captions.csv`` (filename,caption; a header row ``filename,caption`` is optional) or
    ``captions.txt`` (filename<TAB>caption per line); filenames relative to ``root``."""
    if (root / "captions.csv").is_file():
        with open(root / "captions.csv", newline="") as f:
            rows = [r for r in csv.reader(f) if len(r) >= 2]
        return {r[0].strip(): r[1].strip() for r in rows if r[:2] != ["filename", "caption"]}
    if (root / "captions.txt").is_file():
        lines = (root / "captions.txt").read_text().splitlines()
        return dict((p.strip() for p in ln.split("\t", 1)) for ln in lines if "\t" in ln)
    return {}


def _list_folder(root: Path, split: str) -> list[VideoRecord]:
    if (root / f"{split}.txt").is_file():
        rels = _split_lines(root / f"{split}.txt")
    else:
        rels = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    captions = _folder_captions(root)
    records = []
    for rel in rels:
        parent = Path(rel).parent
        records.append(VideoRecord(root / rel, captions.get(rel, captions.get(Path(rel).name, "")),
                                   str(Path(rel).with_suffix("")), "" if parent == Path(".") else parent.name))
    return records


def list_videos(root: str | Path, layout: str = "avsyncd", split: str = "train") -> list[VideoRecord]:
    """The videos of one split, in a fixed order (the shard plan depends on it). docs/data.md shows both layouts."""
    root = Path(root)
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    return _list_avsyncd(root, split) if layout == "avsyncd" else _list_folder(root, split)


def sample_key(source_id: str, window: int) -> str:
    """WebDataset key of window ``window`` of a clip: unique and stable per (source id, window).

    The readable part keeps ``[A-Za-z0-9_-]`` (WebDataset splits member names at the first dot) and
    at most 80 characters; 8 hex digits of the SHA-1 of the full source id keep names that sanitise
    alike apart (``a.b`` / ``a_b``, ``é`` / ``ñ``). Before, both went into one tar under one key and
    the shard could no longer be read ("duplicate file name in tar file").
    """
    digest = hashlib.sha1(source_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_-]', '_', source_id)[:80]}-{digest}_w{window:03d}"


# ---------------------------------------------------------------------------------------------
# stages


def resample_frames(frames: np.ndarray, fps: float, target_fps: float = FPS, max_frames: int | None = None) -> np.ndarray:
    """"t h w c" at ``fps`` -> at ``target_fps``: output frame k shows source frame ``round(k / target_fps * fps)``.

    Assumes a constant source frame rate (frame i at i / fps), as upstream's ``read_video`` + index
    arithmetic does. The output covers the source's duration ``t / fps``.
    """
    n_out = int(np.floor(len(frames) / fps * target_fps + 1e-6))
    if max_frames is not None:
        n_out = min(n_out, max_frames)
    src = np.minimum(np.floor(np.arange(n_out) * fps / target_fps + 0.5).astype(np.int64), len(frames) - 1)
    return frames[src]


def resize_center_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """"t h w c" uint8 -> "t height width c": scale so the frame covers the target, then crop the center."""
    import cv2

    t, h, w, _ = frames.shape
    scale = max(height / h, width / w)
    rh, rw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    y0, x0 = (rh - height) // 2, (rw - width) // 2
    out = np.empty((t, height, width, 3), np.uint8)
    for i, f in enumerate(frames):
        r = f if (rh, rw) == (h, w) else cv2.resize(f, (rw, rh), interpolation=interp)
        out[i] = r[y0 : y0 + height, x0 : x0 + width]
    return out


def resample_audio(audio: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """"c n" float at ``sample_rate`` -> "n" float32 mono (mean of channels) at ``target_rate``."""
    import torch
    import torchaudio.functional as AF

    mono = torch.from_numpy(np.asarray(audio, np.float32)).mean(0)
    if sample_rate != target_rate:
        mono = AF.resample(mono, sample_rate, target_rate)
    return mono.numpy().astype(np.float32)


def window_starts(num_frames: int, window_frames: int, stride_frames: int, windows: str = "all") -> list[int]:
    """Start frames of the windows a clip of ``num_frames`` yields; [] when it is shorter than one window."""
    if windows not in WINDOWS:
        raise ValueError(f"unknown windows={windows!r}; expected one of {WINDOWS}")
    if num_frames < window_frames:
        return []
    if windows != "all":
        return [0]
    return list(range(0, num_frames - window_frames + 1, stride_frames))


def build_flow_backend(name: str = "classic", **kwargs) -> FlowBackend:
    """The flow backend named in the config: ``classic`` (OpenCV DIS, CPU) or ``raft`` (torchvision RAFT)."""
    if name == "classic":
        return ClassicFlow(**kwargs)
    if name == "raft":
        from keyvid.data.raft import RaftFlow  # torch model: imported only when asked for

        return RaftFlow(**kwargs)
    raise ValueError(f"unknown flow backend {name!r}; expected 'classic' or 'raft'")


def _ground_truth_impacts(path: Path) -> list[float] | None:
    """Impact times (s) from a synthetic clip's ``.json`` beside the video (data_prep/synthetic.py)."""
    gt = path.with_suffix(".json")
    if not gt.is_file():
        return None
    try:
        times = json.loads(gt.read_text()).get("impact_times")
    except (json.JSONDecodeError, AttributeError):
        return None
    return None if times is None else [float(t) for t in times]


# ---------------------------------------------------------------------------------------------
# one video


def ingest_video(
    record: VideoRecord,
    backend: FlowBackend,
    *,
    height: int = 320,
    width: int = 512,
    window_seconds: float = 2.0,
    stride_seconds: float = 2.0,
    windows: str = "all",
    max_seconds: float = 10.0,
    flow_height: int | None = None,
    reduction: str = "mean",
) -> list[Sample]:
    """Decode ``record`` and cut it into samples; raises ``Rejected`` when none can be made.

    ``windows="all"``: every ``window_seconds`` window at ``stride_seconds``; ``"first"``: only the
    first; ``"full"``: the whole clip up to ``max_seconds`` as one sample, the loader picking a
    random window at load time (upstream's ``start_idx = random.randint(...)``).

    The motion score is computed once over the kept frames and sliced per window, so a window's
    first value is the flow from the frame before it (not a repeat). Keypoints are detected on
    each sample's own curve: per window, or on the whole clip for ``"full"`` (upstream detects on
    the whole video; the loader re-windows them with ``KeyPoints.window``).

    ``flow_height``: compute the flow on a copy of the 24 fps frames resized to this height (same
    field of view and aspect as the training crop), as upstream computed its curves at 360p;
    None computes it on the training-size frames.
    """
    path = Path(record.path)
    try:
        clip = read_av(path, require_audio=True)
    except (MediaError, FileNotFoundError) as e:
        raise Rejected(path, str(e).removeprefix(f"{path}: ")) from e
    win = int(round(window_seconds * FPS))
    duration = len(clip.frames) / clip.fps
    max_frames = int(round(max_seconds * FPS)) if windows == "full" else None
    frames24 = resample_frames(clip.frames, clip.fps, FPS, max_frames)
    starts = window_starts(len(frames24), win, int(round(stride_seconds * FPS)), windows)
    if not starts:
        raise Rejected(path, f"too short: {duration:.2f} s < {window_seconds:.2f} s window")
    end = len(frames24) if windows == "full" else starts[-1] + win
    frames24 = frames24[:end]
    audio = resample_audio(clip.audio, clip.sample_rate)
    # keep only windows whose audio is (nearly) complete
    spf = SAMPLE_RATE / FPS
    length = win if windows != "full" else end
    slack = int(AUDIO_SLACK_SECONDS * SAMPLE_RATE)
    starts = [s for s in starts if len(audio) + slack >= round((s + length) * spf)]
    if not starts:
        raise Rejected(path, f"audio too short: {len(audio) / SAMPLE_RATE:.2f} s for a {duration:.2f} s video")
    audio = np.pad(audio, (0, max(0, int(round((starts[-1] + length) * spf)) - len(audio))))

    frames = resize_center_crop(frames24, height, width)
    if flow_height is None:
        flow_frames = frames
    else:
        flow_frames = resize_center_crop(frames24, flow_height, int(round(flow_height * width / height)))
    del frames24
    motion = motion_score(flow_frames, backend, reduction).astype(np.float32)

    impacts = _ground_truth_impacts(path)
    samples = []
    for i, s in enumerate(starts):
        m = motion[s : s + length]
        kp = detect_keypoints(m)
        start_s = s / FPS
        meta = {
            "caption": record.caption, "label": record.label, "source": str(path), "source_id": record.source_id,
            "window_index": i, "start_seconds": start_s, "fps": FPS, "num_frames": length,
            "sample_rate": SAMPLE_RATE, "height": height, "width": width, "windows": windows,
            "peaks": kp.peaks.tolist(), "valleys": kp.valleys.tolist(),
            "source_fps": clip.fps, "source_size": [int(clip.frames.shape[1]), int(clip.frames.shape[2])],
            "flow_height": flow_height or height, "reduction": reduction,
        }
        if impacts is not None:  # times relative to the sample's first frame
            meta["impact_times"] = [round(t - start_s, 6) for t in impacts if 0 <= t - start_s < length / FPS]
        a0 = int(round(s * spf))
        samples.append(Sample(sample_key(record.source_id, i), frames[s : s + length],
                              audio[a0 : a0 + int(round(length * spf))], m, meta))
    return samples
