"""AV-Align (Yariv et al., AAAI 2024, "Diverse and Aligned Audio-to-Video Generation via Text-to-Video
Model Adaptation", Eq. 9): do the audio's onsets and the video's motion peaks coincide?

It needs no ground truth and no weights, so it scores real clips and any system's videos alike.
The paper defines, for the audio peaks ``A`` and the video peaks ``V`` of one clip,

    AV-Align = (1 / (2 |A u V|)) (sum_{a in A} 1[a in V] + sum_{v in V} 1[v in A])

"a in V" meaning a peak of the other modality within a three-frame window, read as an
intersection over union. What the paper leaves open, and what is chosen here (mostly as the
authors' code, guyyariv/TempoTokens ``av_align.py`` at bf0b1e3, does):

* **intersection and union**: a one-to-one greedy matching from the audio side (each onset takes
  the first unused video peak within the window), ``I`` = matched pairs, and
  ``AV-Align = I / (|A| + |V| - I)``. With one-to-one matching the paper's two sums are both
  ``I`` and ``|A u V| = |A| + |V| - I``, so this is Eq. 9 read exactly; without it a score can
  exceed 1 (the authors' first release could).
* **window**: ``|t_a - t_v| < 1 / fps`` (the video frame before, at or after: three frames).
* **audio onsets**: spectral flux of a log-power mel spectrogram (librosa's ``onset_strength``
  defaults: audio at 22.05 kHz, n_fft 2048, hop 512, 128 mel bands, ``power_to_db`` with an 80 dB
  floor, lag 1, mean over bands, the envelope shifted by ``n_fft / (2 hop)`` frames for the
  centred STFT) and librosa's ``onset_detect`` peak picking (envelope scaled to [0, 1]; a local
  maximum over [-1, +1] frames, at least the mean over [-4, +5] frames plus 0.07, more than 1
  frame after the previous onset). The paper cites SuperFlux (Böck & Widmer 2013); the code, and
  this, use plain spectral flux. Written here with torchaudio; librosa is not a dependency.
* **video peaks**: per frame ``t`` the mean magnitude of the optical flow from frame ``t-1`` to
  ``t`` (frame 0 repeats frame 1), Farnebäck flow with the code's parameters (the paper cites
  Horn-Schunck), strict local maxima of at least ``min_flow`` = 0.1 px, at time ``t / fps``.
  ``flow="dis"`` uses the project's DIS flow instead. "AV-Align-events" (launch/evaluate.py,
  keyvid/eval/sync_check.py; a variant, not the paper's metric) passes the sync detector's motion
  events (``keyvid.eval.sync.video_peaks``, camera-compensated velocity changes) to ``iou`` instead.
* **no peak in either modality**: the score is undefined (NaN) and the clip is left out of the mean;
  the number left out is reported.
* **over clips**: the unweighted mean of per-clip scores (as the code), with a bootstrap interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from keyvid.eval.bootstrap import mean_interval

AUDIO_RATE = 22050
N_FFT, HOP, N_MELS = 2048, 512, 128


@dataclass(frozen=True)
class AVAlign:
    score: float  # mean over clips with a defined score
    ci95: tuple[float, float]
    num_clips: int
    num_undefined: int  # clips with no peak in either modality


# ----------------------------------------------------------------------------- audio


def onset_envelope(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono "n" (or "c n") audio -> spectral-flux onset strength per 512-sample frame at 22.05 kHz."""
    x = torch.as_tensor(np.asarray(wave, np.float32))
    x = x.mean(0) if x.ndim == 2 else x
    if sample_rate != AUDIO_RATE:
        x = torchaudio.functional.resample(x, sample_rate, AUDIO_RATE)
    mel = torchaudio.transforms.MelSpectrogram(AUDIO_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0,
                                               norm="slaney", mel_scale="slaney")(x)
    db = 10 * torch.log10(mel.clamp_min(1e-10))
    db = torch.maximum(db, db.max() - 80.0).numpy().astype(np.float64)
    flux = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(axis=0)
    env = np.concatenate([np.zeros(1 + N_FFT // (2 * HOP)), flux])[: db.shape[1]]  # lag 1, centred STFT
    return env


def pick_onsets(env: np.ndarray, pre_max: int = 1, post_max: int = 1, pre_avg: int = 4, post_avg: int = 5,
                delta: float = 0.07, wait: int = 1) -> np.ndarray:
    """Onset frames of an envelope by librosa's ``peak_pick`` rule (defaults: its values at 22.05 kHz / 512)."""
    env = np.asarray(env, np.float64)
    if env.size == 0 or env.max() == env.min():
        return np.zeros(0, np.int64)
    env = (env - env.min()) / (env.max() - env.min())
    out, last = [], -np.inf
    for n in range(len(env)):
        if env[n] < env[max(0, n - pre_max): n + post_max].max():
            continue
        if env[n] < env[max(0, n - pre_avg): n + post_avg].mean() + delta:
            continue
        if n - last > wait:
            out.append(n)
            last = n
    return np.asarray(out, np.int64)


def audio_peaks(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Audio onset times in seconds."""
    return pick_onsets(onset_envelope(wave, sample_rate)) * HOP / AUDIO_RATE


# ----------------------------------------------------------------------------- video


def mean_flow_magnitude(frames: np.ndarray, flow: str = "farneback") -> np.ndarray:
    """"t h w c" uint8 -> "t" mean flow magnitude (px) from frame t-1 to t; frame 0 repeats frame 1."""
    import cv2

    if frames.ndim != 4 or len(frames) < 2:
        raise ValueError(f"need at least 2 frames 't h w c', got shape {frames.shape}")
    if flow == "dis":
        from keyvid.data.motion import ClassicFlow

        f = ClassicFlow()(frames)
        mags = np.sqrt((f ** 2).sum(axis=1)).mean(axis=(1, 2))
    elif flow == "farneback":
        grays = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        mags = []
        for a, b in zip(grays[:-1], grays[1:]):
            fl = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            mags.append(float(np.sqrt((fl ** 2).sum(axis=2)).mean()))
        mags = np.asarray(mags)
    else:
        raise ValueError(f"unknown flow {flow!r}; expected 'farneback' or 'dis'")
    return np.concatenate([mags[:1], mags]).astype(np.float64)


def video_peaks(frames: np.ndarray, fps: float, flow: str = "farneback", min_flow: float = 0.1) -> np.ndarray:
    """Video peak times in seconds: strict local maxima of the mean flow magnitude, at least ``min_flow``."""
    m = mean_flow_magnitude(frames, flow)
    i = np.arange(1, len(m) - 1)
    keep = (m[i] > m[i - 1]) & (m[i] > m[i + 1]) & (m[i] >= min_flow)
    return i[keep] / float(fps)


# ----------------------------------------------------------------------------- score


def iou(audio_s: Sequence[float], video_s: Sequence[float], fps: float) -> float:
    """One clip's AV-Align from peak times (s); NaN when neither modality has a peak."""
    a, v = np.sort(np.asarray(audio_s, np.float64)), np.sort(np.asarray(video_s, np.float64))
    if len(a) + len(v) == 0:
        return float("nan")
    used = np.zeros(len(v), bool)
    matched = 0
    for t in a:
        free = np.flatnonzero(~used & (np.abs(v - t) < 1.0 / fps))
        if free.size:
            used[free[0]] = True
            matched += 1
    return matched / (len(a) + len(v) - matched)


def av_align(scores: Sequence[float]) -> AVAlign:
    """Mean and interval over clips of per-clip scores (NaN ones left out and counted)."""
    x = np.asarray(scores, np.float64)
    ok = x[np.isfinite(x)]
    return AVAlign(float(ok.mean()) if ok.size else float("nan"), mean_interval(ok), int(ok.size),
                   int(x.size - ok.size))
