"""AVSyncD's evaluation protocol (Zhang et al., lzhangbj/ASVA ``avgen/evaluations/eval.py``), used by KeyVID.

Clips
    Each test video (a line ``class/name.mp4`` of the dataset's ``test.txt``) gives ``num_clips = 3``
    clips of 2 s, starting at ``linspace(0, D - 2, 3)`` seconds where ``D`` is the shorter of the
    video and audio durations (one clip: centred at ``(D - 2) / 2``). A 2 s video gives three
    identical clips starting at 0, exactly as AVSyncD.

Generated files
    One mp4 per clip, *with the clip's audio track*, under the generated folder at
    ``<class>/<name>_clip-<k>.mp4`` (``k = 0, 1, 2``), mirroring ``test.txt``: AVSyncD's
    ``<name>_clip-{i}.mp4``. The scorer reads the audio from the generated file itself (as AVSyncD
    does), so a file without audio cannot be scored.

Frames
    ``frames12`` (default, Table 1): 12 frames at 6 fps. Frame ``i`` is the first decoded frame whose
    timestamp ``j / fps`` is at or after ``start + i / 6`` (AVSyncD's ``pts >= t`` walk), the last
    frame repeated if the clip runs short. A 48-frame, 24 fps output gives frames 0, 4, ..., 44.
    ``frames48`` (Table 2, second half): 48 frames at 24 fps, by the same rule.
    Generated files must decode to 12 (6 fps) or 48 (24 fps) frames in ``frames12`` mode and to 48
    in ``frames48`` mode; anything else is reported as a wrong frame count.

Size
    Centre crop to the target aspect ratio (``int`` trim, as AVSyncD), then bilinear resize with
    antialiasing: 256 x 256 for AVSync15 and Landscapes, 128 x 256 (h x w) for TheGreatestHits.

Every problem with a generated folder (missing clip, extra file, wrong frame count, no audio,
unreadable file) is collected by name in a ``MatchReport``; the caller decides whether to fail.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from keyvid.data.io import AVClip, MediaError, read_av

# (height, width) per dataset: AVSyncD's scripts/animation_test_*.sh image sizes.
DATASET_SIZES = {"avsync15": (256, 256), "landscapes": (256, 256), "greatesthits": (128, 256),
                 "synthetic": (256, 256)}
MODES = {"frames12": (12, 6.0), "frames48": (48, 24.0)}


@dataclass(frozen=True)
class ProtocolSpec:
    size: tuple[int, int] = (256, 256)  # (h, w)
    mode: str = "frames12"
    num_clips: int = 3
    clip_duration: float = 2.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown protocol mode {self.mode!r}; expected one of {sorted(MODES)}")

    @property
    def num_frames(self) -> int:
        return MODES[self.mode][0]

    @property
    def fps(self) -> float:
        return MODES[self.mode][1]

    @property
    def accepted_frame_counts(self) -> tuple[int, ...]:
        """Frame counts a generated 2 s file may have: the protocol's own, or 48 to be resampled."""
        return (12, 48) if self.mode == "frames12" else (48,)


def spec_for(dataset: str, mode: str = "frames12", num_clips: int = 3) -> ProtocolSpec:
    if dataset not in DATASET_SIZES:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASET_SIZES)}")
    return ProtocolSpec(DATASET_SIZES[dataset], mode, num_clips)


def clip_name(video: str, k: int) -> str:
    """``class/name.mp4`` (a test.txt line) -> ``class/name_clip-k.mp4``."""
    p = Path(video)
    return str(p.with_name(f"{p.stem}_clip-{k}.mp4"))


def clip_starts(duration: float, spec: ProtocolSpec) -> np.ndarray:
    """Start times (s) of the protocol's clips in a video of ``duration`` seconds."""
    if spec.num_clips == 1:
        return np.array([(duration - spec.clip_duration) / 2.0])
    return np.linspace(0.0, duration - spec.clip_duration, spec.num_clips)


def frame_indices(num_source: int, source_fps: float, start: float, spec: ProtocolSpec) -> np.ndarray:
    """Indices of the decoded frames that make the protocol's clip starting at ``start`` seconds."""
    # first j with j / fps >= start + i / target_fps; the epsilon absorbs float error in the product
    wanted = (start + np.arange(spec.num_frames) / spec.fps) * source_fps
    idx = np.ceil(wanted - 1e-6).astype(np.int64)
    return np.clip(idx, 0, num_source - 1)


def crop_resize(frames: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """"t h w c" uint8 -> "t c H W" float in [0, 1]: centre crop to the aspect, then resize."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = x.shape[-2:]
    th, tw = size
    if th / tw >= h / w:  # target is taller: trim the width
        cw = int(h / (th / tw))
        x = x[..., (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(w * (th / tw))
        x = x[..., (h - ch) // 2 : (h - ch) // 2 + ch, :]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


@dataclass
class ProtocolClip:
    name: str  # generated file name relative to the generated root (or the reference video + k)
    frames: torch.Tensor  # "t c h w" float [0, 1], the protocol's frames
    audio: np.ndarray  # "c n" float, the clip's 2 s of audio
    sample_rate: int
    native_frames: np.ndarray  # "t h w c" uint8, the clip at its decoded frame rate (for motion)
    native_fps: float
    start: float = 0.0  # seconds into the source video (reference clips)


def _audio_window(clip: AVClip, start: float, duration: float) -> np.ndarray:
    a = clip.audio
    s = int(round(start * clip.sample_rate))
    return a[:, s : s + int(round(duration * clip.sample_rate))]


def reference_clips(path: str | Path, spec: ProtocolSpec, name: str | None = None) -> list[ProtocolClip]:
    """The protocol's clips of one reference (ground-truth) video."""
    clip = read_av(path, require_audio=True)
    duration = min(clip.duration, clip.audio.shape[1] / clip.sample_rate)
    if duration < spec.clip_duration - 1.0 / clip.fps:
        raise MediaError(f"{path}: {duration:.2f} s is shorter than one {spec.clip_duration} s clip")
    out = []
    for k, start in enumerate(clip_starts(duration, spec)):
        start = max(0.0, float(start))
        idx = frame_indices(len(clip.frames), clip.fps, start, spec)
        first = int(math.ceil(start * clip.fps - 1e-6))
        native = clip.frames[first : first + int(round(spec.clip_duration * clip.fps))]
        out.append(ProtocolClip(clip_name(name or Path(path).name, k), crop_resize(clip.frames[idx], spec.size),
                                _audio_window(clip, start, spec.clip_duration), clip.sample_rate, native, clip.fps,
                                start))
    return out


def generated_clip(path: str | Path, spec: ProtocolSpec, name: str) -> ProtocolClip:
    """One generated file, checked against the protocol; MediaError says what is wrong with it."""
    clip = read_av(path, require_audio=True)
    n = len(clip.frames)
    if n not in spec.accepted_frame_counts:
        raise MediaError(f"{path}: has {n} frames; expected one of {spec.accepted_frame_counts} "
                         f"for mode {spec.mode}")
    fps = n / spec.clip_duration  # 12 or 48 frames span the 2 s clip, whatever the container says
    idx = frame_indices(n, fps, 0.0, spec)
    return ProtocolClip(name, crop_resize(clip.frames[idx], spec.size), clip.audio, clip.sample_rate,
                        clip.frames, fps)


@dataclass
class MatchReport:
    """Which expected clips were found in a generated folder, and what was wrong with the rest."""

    expected: list[str]
    found: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)  # name -> reason (frames, audio, unreadable)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.bad)

    def problems(self) -> list[str]:
        return ([f"missing clip: {n}" for n in self.missing] + [f"extra file: {n}" for n in self.extra]
                + [f"bad clip: {n}: {r}" for n, r in self.bad.items()])

    def as_dict(self) -> dict:
        return {"expected": len(self.expected), "found": len(self.found), "missing": self.missing,
                "extra": self.extra, "bad": self.bad}


def read_split(root: str | Path, split: str = "test.txt") -> list[str]:
    """The ``class/name.mp4`` lines of a dataset split in AVSyncD's layout."""
    path = Path(root) / split
    if not path.is_file():
        raise FileNotFoundError(f"split file not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def expected_names(videos: list[str], spec: ProtocolSpec) -> list[str]:
    return [clip_name(v, k) for v in videos for k in range(spec.num_clips)]


def match_folder(generated_root: str | Path, videos: list[str], spec: ProtocolSpec) -> MatchReport:
    """Compare a generated folder's mp4 files with the clips the protocol expects (names only)."""
    root = Path(generated_root)
    if not root.is_dir():
        raise FileNotFoundError(f"generated folder not found: {root}")
    expected = expected_names(videos, spec)
    present = {str(p.relative_to(root)) for p in root.rglob("*.mp4") if ".partial" not in p.name}
    report = MatchReport(expected)
    report.found = [n for n in expected if n in present]
    report.missing = [n for n in expected if n not in present]
    report.extra = sorted(present - set(expected))
    return report


def impact_times_for(reference_video: str | Path, start: float, duration: float) -> list[float] | None:
    """Ground-truth impact times (s, relative to ``start``) from the json beside a reference video.

    None when the video has no such json (real datasets): the sync score is then not defined.
    """
    meta = Path(reference_video).with_suffix(".json")
    if not meta.is_file():
        return None
    times = json.loads(meta.read_text()).get("impact_times")
    if times is None:
        return None
    return [t - start for t in times if start <= t < start + duration]
