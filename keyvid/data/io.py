"""Reading and writing video files with their audio track (PyAV; FFmpeg is bundled in its wheel).

Every error names the file: a corrupt clip in a folder of thousands must be findable.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class MediaError(ValueError):
    """A media file that exists but cannot be used (unreadable, no video, no audio, too short)."""


@dataclass
class AVClip:
    frames: np.ndarray  # "t h w c" uint8 RGB
    fps: float
    audio: np.ndarray | None  # "c n" float32 in [-1, 1], or None when the file has no audio
    sample_rate: int | None

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps


def _audio_to_array(frames: list) -> np.ndarray:
    chunks = []
    for f in frames:
        a = f.to_ndarray()
        if f.format.is_packed:  # interleaved "1 (n c)" -> "c n"
            a = a.reshape(-1, len(f.layout.channels)).T
        if a.dtype.kind == "i":
            a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
        chunks.append(a.astype(np.float32))
    return np.concatenate(chunks, axis=1)


def _why_missing(path: Path) -> str:
    """Why a path that ``exists()`` denies is missing, when it is a symlink: a loop or a dangling link."""
    if not path.is_symlink():
        return ""
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 raises RuntimeError for a loop
        return " (a symlink loop)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return " (a symlink loop)"
        return f" (a dangling symlink to {os.readlink(path)})"
    return ""


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """"h w c" as displayed: ``rotation`` is the display matrix's counter-clockwise angle in degrees
    (PyAV's ``VideoFrame.rotation``; a phone's portrait clip stored landscape has -90 and is shown
    turned 90 degrees clockwise, as ``ffmpeg``'s autorotate does). Multiples of 90 only."""
    quarter = int(round(rotation / 90.0)) % 4
    return frame if quarter == 0 else np.ascontiguousarray(np.rot90(frame, k=quarter))


def read_av(path: str | Path, *, require_audio: bool = False) -> AVClip:
    """Decode every video frame (RGB, turned upright by the stream's display matrix, as players
    and ``ffmpeg`` show it) and the whole first audio track of ``path``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {path}{_why_missing(path)}")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: not a readable media file ({e})") from e
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        vstream = container.streams.video[0]
        rate = vstream.average_rate or vstream.guessed_rate
        if not rate:
            raise MediaError(f"{path}: video stream has no frame rate")
        has_audio = bool(container.streams.audio)
        if require_audio and not has_audio:
            raise MediaError(f"{path}: has no audio track")
        streams = [vstream] + ([container.streams.audio[0]] if has_audio else [])
        video, audio = [], []
        try:
            for frame in container.decode(*streams):
                if isinstance(frame, av.VideoFrame):
                    video.append(upright(frame.to_ndarray(format="rgb24"), frame.rotation))
                else:
                    audio.append(frame)
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed after {len(video)} frames ({e})") from e
        if not video:
            raise MediaError(f"{path}: video stream decoded to zero frames")
        sr = container.streams.audio[0].rate if has_audio else None
    wave = _audio_to_array(audio) if audio else None
    if require_audio and wave is None:
        raise MediaError(f"{path}: audio track decoded to zero samples")
    return AVClip(np.stack(video), float(rate), wave, sr)


def write_av(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    *,
    crf: int = 18,
) -> Path:
    """Write "t h w c" uint8 frames as H.264 and "c n" float audio as AAC into an mp4.

    Written to a temporary name and renamed, so a crash never leaves a half file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    t, h, w, c = frames.shape
    if c != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 't h w 3', got {frames.dtype} {frames.shape}")
    with av.open(str(tmp), "w", format="mp4") as out:
        vs = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        # x264's macroblock-tree rate control (mbtree) is not deterministic in this build: the same
        # frames encoded twice gave different bytes, up to 9 grey levels apart after decoding
        # (10-30 % of encodes of a 48x32 or 96x64 texture clip, threads=1 or not). Off, every
        # encode of the same frames is byte-identical, so re-rendered datasets match their first run.
        vs.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "no-mbtree=1"}
        if audio is not None:
            audio = np.ascontiguousarray(np.atleast_2d(audio), dtype=np.float32)
            layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
            as_ = out.add_stream("aac", rate=sample_rate)
            as_.layout = layout
        for frame in frames:
            for packet in vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in vs.encode():
            out.mux(packet)
        if audio is not None:
            aframe = av.AudioFrame.from_ndarray(np.clip(audio, -1, 1), format="fltp", layout=layout)
            aframe.sample_rate, aframe.pts = sample_rate, 0
            for packet in as_.encode(aframe):
                out.mux(packet)
            for packet in as_.encode(None):
                out.mux(packet)
    tmp.replace(path)
    return path
