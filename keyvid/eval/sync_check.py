"""Does a sync metric rank videos correctly? Each clip in five variants, every metric on each.

Variants of a clip (``SHIFT_S`` = 1/3 s, 8 frames at 24 fps):

``in_sync``      the clip as it is;
``video_late``   the video delayed by SHIFT_S (its first frame held), audio and truth unchanged;
``audio_late``   the audio delayed by SHIFT_S (silence first); the truth moves with the sound;
``audio_early``  the audio advanced by SHIFT_S; the truth moves with it (events before 0 s drop);
``frozen``       the first frame held for the whole clip.

A metric that can be trusted scores ``in_sync`` above every shifted variant and those above
``frozen`` on every family of footage. The truth-based score (``keyvid.eval.sync``) needs the
impact times; AV-Align (``keyvid.eval.av_align``) needs none, so it also scores real clips.
Intervals are 95 % bootstrap intervals over clips. ``bench/sync_metric_check.py`` runs it on the
training renderer, the probe renderer at several sizes and frame rates, and ../shared/media.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from keyvid.eval import av_align as ava
from keyvid.eval.bootstrap import statistic_interval
from keyvid.eval.sync import DEFAULT_TOLERANCE_S, SyncDetector, f1_from_counts, sync_scores, video_peaks

SHIFT_S = 1 / 3
VARIANTS = ("in_sync", "video_late", "audio_late", "audio_early", "frozen")


@dataclass
class Clip:
    frames: np.ndarray  # "t h w c" uint8
    fps: float
    wave: np.ndarray  # "n" float
    sample_rate: int
    impacts: list[float] | None  # s; None for real footage


def variant(clip: Clip, name: str, shift_s: float = SHIFT_S) -> Clip:
    """``clip`` as variant ``name`` (see the module docstring)."""
    f, w = clip.frames, np.asarray(clip.wave, np.float32).reshape(-1)
    d, s = int(round(shift_s * clip.fps)), int(round(shift_s * clip.sample_rate))
    imp = None if clip.impacts is None else np.asarray(clip.impacts, np.float64)
    dur = len(f) / clip.fps
    if name == "in_sync":
        return clip
    if name == "video_late":
        return Clip(np.concatenate([f[:1].repeat(d, 0), f[:-d]]), clip.fps, w, clip.sample_rate, clip.impacts)
    if name == "frozen":
        return Clip(f[:1].repeat(len(f), 0), clip.fps, w, clip.sample_rate, clip.impacts)
    if name == "audio_late":
        moved = None if imp is None else (imp + shift_s)[imp + shift_s < dur].tolist()
        return Clip(f, clip.fps, np.concatenate([np.zeros(s, np.float32), w[:-s]]), clip.sample_rate, moved)
    if name == "audio_early":
        moved = None if imp is None else (imp - shift_s)[imp - shift_s >= 0].tolist()
        return Clip(f, clip.fps, np.concatenate([w[s:], np.zeros(s, np.float32)]), clip.sample_rate, moved)
    raise ValueError(f"unknown variant {name!r}; expected one of {VARIANTS}")


def sync_f1(clips: Sequence[Clip], detector: SyncDetector = SyncDetector(), tolerance_s: float = DEFAULT_TOLERANCE_S,
            n_boot: int = 1000, peaks: Sequence[np.ndarray] | None = None) -> tuple[float, tuple[float, float]]:
    """Pooled truth-based Sync-F1 of clips and its bootstrap interval over clips (``peaks``: the
    detector's peak frames per clip, when already computed)."""
    if peaks is None:
        peaks = [video_peaks(c.frames, c.fps, detector=detector)[1] for c in clips]
    per, pooled = sync_scores(peaks, [c.impacts for c in clips], [c.fps for c in clips], tolerance_s)
    counts = np.array([[np.nan_to_num(s.precision * s.num_peaks), s.num_peaks,
                        np.nan_to_num(s.recall * s.num_impacts), s.num_impacts] for s in per], np.float64)
    ci = statistic_interval(counts, lambda c: f1_from_counts(*c.sum(axis=0)), draws=n_boot)
    return float(pooled.f1), ci


def check_family(clips: Sequence[Clip], detector: SyncDetector = SyncDetector(),
                 tolerance_s: float = DEFAULT_TOLERANCE_S, flow: str = "farneback",
                 variants: Sequence[str] = VARIANTS) -> dict[str, dict[str, tuple]]:
    """{variant: {"Sync-F1": (value, ci), "AV-Align" and "AV-Align (events)": (value, ci, clips scored)}}.

    The detector's motion events of each clip serve both the Sync-F1 and AV-Align (events), and
    its audio onsets both AV-Align columns: each is computed once.
    """
    out = {}
    for name in variants:
        vs = [variant(c, name) for c in clips]
        events = [video_peaks(c.frames, c.fps, detector=detector)[1] for c in vs]
        onsets = [ava.audio_peaks(c.wave, c.sample_rate) for c in vs]
        row = {}
        if all(c.impacts is not None for c in vs):
            row["Sync-F1"] = sync_f1(vs, detector, tolerance_s, peaks=events)
        for key, video in (("AV-Align", [ava.video_peaks(c.frames, c.fps, flow) for c in vs]),
                           ("AV-Align (events)", [e / c.fps for e, c in zip(events, vs)])):
            res = ava.av_align([ava.iou(a, v, c.fps) for a, v, c in zip(onsets, video, vs)])
            row[key] = (res.score, res.ci95, res.num_clips)
        out[name] = row
    return out


def ordered(result: dict[str, dict[str, tuple]], metric: str) -> bool:
    """in_sync above every shifted variant, and every shifted variant above frozen."""
    v = {k: r[metric][0] for k, r in result.items() if metric in r}
    shifted = [v[k] for k in ("video_late", "audio_late", "audio_early") if k in v]
    return all(v["in_sync"] > s for s in shifted) and all(s > v.get("frozen", -np.inf) for s in shifted)
