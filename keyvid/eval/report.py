"""Score tables (CSV + markdown, the layout of the paper's Tables 1 and 3) and motion-vs-audio plots.

One row per scored run (a generated folder; a guidance sweep gives one row per sweep job, as Table 3
gives one row per audio guidance scale). Columns: the run, the number of test videos and clips
actually scored, then FID, FVD, AlignSync and RelSync (the last two x 100, as the paper prints
them) and the weight-free sync score. A metric that was not computed is an empty cell, and the
markdown says why underneath: nothing is left out silently.

Plots are drawn with OpenCV (matplotlib is not a dependency): the motion score of a clip, the audio
onset strength on the same frame axis, true impacts as vertical lines and motion peaks as dots.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLUMNS = ("run", "videos", "clips", "FID", "FVD", "AlignSync", "RelSync", "AV-Align", "AV-Align-events",
           "Sync-P", "Sync-R", "Sync-F1", "Sync-offset", "PSNR-0", "Flicker")
HEADINGS = {"FID": "FID↓", "FVD": "FVD↓", "AlignSync": "AlignSync↑", "RelSync": "RelSync↑",
            "AV-Align": "AV-Align↑", "AV-Align-events": "AV-Align (events)↑", "Sync-P": "Sync-P↑",
            "Sync-R": "Sync-R↑", "Sync-F1": "Sync-F1↑", "Sync-offset": "Sync offset (frames)↓",
            "PSNR-0": "frame-0 PSNR (dB)↑", "Flicker": "flicker ratio"}
_DIGITS = {"FID": 2, "FVD": 1, "AlignSync": 2, "RelSync": 2, "AV-Align": 3, "AV-Align-events": 3,
           "Sync-P": 3, "Sync-R": 3, "Sync-F1": 3,
           "Sync-offset": 2, "PSNR-0": 2, "Flicker": 2}


def _cell(key: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{_DIGITS.get(key, 4)}f}"
    return str(value)


def write_tables(rows: Sequence[dict], out_dir: str | Path, notes: Sequence[str] = (), name: str = "scores",
                 title: str = "") -> tuple[Path, Path]:
    """Write ``<name>.csv`` (full precision) and ``<name>.md`` (rounded, plus notes); return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / f"{name}.csv", out / f"{name}.md"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in COLUMNS})
    md_path.write_text(markdown_table(rows, notes, title))
    return csv_path, md_path


def markdown_table(rows: Sequence[dict], notes: Sequence[str] = (), title: str = "") -> str:
    head = [HEADINGS.get(k, k) for k in COLUMNS]  # one heading per column, so the two cannot drift apart
    lines = [f"# {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(k, row.get(k)) for k in COLUMNS) + " |")
    lines.append("")
    lines.append("AlignSync and RelSync are x 100 (the ground truth scores 50 on RelSync). "
                 "Sync: motion peaks vs true impacts (weight-free); offset is the mean |peak - impact|. "
                 "Frame-0 PSNR: the generated first frame vs the reference's (the real clips through the same "
                 "VAE give its ceiling); flicker ratio: mean frame-to-frame difference, generated / real (1 = "
                 "moves as much as the real clip).")
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def print_table(rows: Sequence[dict]) -> str:
    """A plain fixed-width table for the terminal."""
    widths = {k: max(len(k), *(len(_cell(k, r.get(k))) for r in rows)) if rows else len(k) for k in COLUMNS}
    out = ["  ".join(k.ljust(widths[k]) for k in COLUMNS)]
    out += ["  ".join(_cell(k, r.get(k)).ljust(widths[k]) for k in COLUMNS) for r in rows]
    return "\n".join(out)


def audio_onset_strength(wave: np.ndarray, sample_rate: int, num_frames: int, fps: float) -> np.ndarray:
    """Positive frame-to-frame increase of the audio RMS, one value per video frame."""
    mono = np.asarray(wave, np.float64).mean(axis=0)
    hop = sample_rate / fps
    rms = np.array([np.sqrt(np.mean(mono[int(i * hop) : max(int((i + 1) * hop), int(i * hop) + 1)] ** 2))
                    if int(i * hop) < len(mono) else 0.0 for i in range(num_frames)])
    return np.maximum(np.diff(rms, prepend=rms[:1]), 0.0)


def motion_plot(path: str | Path, motion: np.ndarray, onsets: np.ndarray | None = None,
                impact_frames: Sequence[float] = (), peaks: Sequence[int] = (), title: str = "",
                size: tuple[int, int] = (240, 640)) -> Path:
    """PNG: motion score (black), audio onset strength (blue), impacts (red lines), peaks (green dots)."""
    import cv2

    h, w = size
    pad_l, pad_r, pad_t, pad_b = 40, 10, 30, 25
    img = np.full((h, w, 3), 255, np.uint8)
    n = len(motion)
    xs = lambda i: int(pad_l + (w - pad_l - pad_r) * i / max(n - 1, 1))  # noqa: E731

    def ys(curve):
        c = np.asarray(curve, np.float64)
        span = c.max() - c.min()
        c = (c - c.min()) / span if span > 0 else np.zeros_like(c)
        return (h - pad_b - (h - pad_t - pad_b) * c).astype(int)

    cv2.rectangle(img, (pad_l, pad_t), (w - pad_r, h - pad_b), (200, 200, 200), 1)
    for f in impact_frames:
        x = xs(f)
        cv2.line(img, (x, pad_t), (x, h - pad_b), (0, 0, 220), 1)  # BGR red
    if onsets is not None and len(onsets) == n:
        pts = np.stack([[xs(i) for i in range(n)], ys(onsets)], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, (220, 120, 0), 1, cv2.LINE_AA)
    pts = np.stack([[xs(i) for i in range(n)], ys(motion)], 1).astype(np.int32)
    cv2.polylines(img, [pts], False, (0, 0, 0), 2, cv2.LINE_AA)
    y = ys(motion)
    for p in peaks:
        cv2.circle(img, (xs(p), int(y[p])), 4, (0, 170, 0), -1)
    for i in range(0, n, max(1, n // 8)):
        cv2.putText(img, str(i), (xs(i) - 5, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (80, 80, 80), 1)
    label = (title + "  " if title else "") + "motion (black), audio onsets (blue), impacts (red), peaks (green)"
    cv2.putText(img, label[:110], (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write plot {path}")
    return path
