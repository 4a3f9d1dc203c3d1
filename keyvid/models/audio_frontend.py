"""Audio front end: a waveform of any rate, channel count and length -> ImageBind's log-mel input.

This is ImageBind's ``waveform2melspec`` (facebookresearch/ImageBind ``imagebind/data.py``) followed
by the dataset's ``Normalize(-4.268, 9.138)``, which is what KeyVID feeds both the localizer
(paper Appendix A) and the generator's audio encoder. The fbank itself is torchaudio's Kaldi
implementation with ImageBind's arguments; it reproduces the upstream reference exactly
(``../shared/fixtures/upstream/imagebind_mel_reference.safetensors``, README section 3c).

What happens to each kind of input (all of it is upstream behaviour unless said otherwise):

* Sample rate: resampled to 16 kHz with ``torchaudio.functional.resample`` (default windowed sinc),
  as ImageBind's ``load_and_transform_audio_data`` does.
* Channels: the mean over *all* samples of *all* channels is subtracted, then Kaldi's fbank reads
  channel 0 only. So a stereo clip is not down-mixed: its right channel only shifts the DC offset.
  We keep this because the trained KeyVID checkpoints saw exactly these features.
* Length: 25 ms windows every 10 ms (``snip_edges``) give ``1 + (n - 400) // 160`` frames, i.e. 198
  for exactly 2 s. The spectrogram is then right-padded with the value 0 or cropped to 204 frames.
  - Shorter than 2.055 s (32,880 samples): padded. The padding is 0 in *log-mel* space (a loud,
    flat spectrum, 0.467 after normalisation), not silence; a 2 s clip always carries 6 padded
    frames at the end. Kept for parity with the checkpoints.
  - Longer: cropped, keeping the first 204 frames (about the first 2.055 s); nothing is centred.
    Choosing which 2 s of a longer recording to use is the data loader's job; the DC offset is
    still removed using the whole waveform passed in, cropped tail included.
  - Shorter than one 25 ms window (400 samples at 16 kHz): upstream's Kaldi call fails; we zero-pad
    the (mean-removed) waveform to one window so the output is one real frame plus padding.
* Silence: Kaldi floors the energy at float epsilon before the log, so an all-zero clip gives
  -15.94 everywhere (finite). Clipped (saturated) audio is ordinary finite input.
* Empty or non-finite waveforms raise ``ValueError``; integer PCM raises ``TypeError`` (its scale
  is ambiguous, so the caller must convert it to float in [-1, 1]).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import torch
import torchaudio
from torchaudio.compliance import kaldi

SAMPLE_RATE = 16_000
NUM_MEL_BINS = 128
TARGET_FRAMES = 204
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
# AudioSet statistics used by ImageBind's audio transform (and KeyVID's AVSync15 dataset).
MEL_MEAN = -4.268
MEL_STD = 9.138

_WINDOW_SAMPLES = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000)


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Decode the first audio stream of an audio or video file with PyAV.

    Returns ``(waveform, sample_rate)`` with ``waveform`` float32 ``(c, n)`` in [-1, 1].
    PyAV is used rather than ``torchaudio.load`` because torchaudio 2.9+ delegates loading to
    torchcodec, which needs system FFmpeg libraries that the GPU image lacks (ENV_NOTES.md);
    PyAV bundles its own FFmpeg and reads mp4/mkv/wav alike.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate
            # Planar float output whatever the codec's native sample format (s16, fltp, ...).
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except av.error.FFmpegError as err:
        raise ValueError(f"{path} is not a readable audio file: {err}") from err
    if not chunks or sum(c.shape[1] for c in chunks) == 0:
        raise ValueError(f"{path}: the audio stream decoded to no samples")
    wave = np.concatenate(chunks, axis=1).astype(np.float32)
    bad = ~np.isfinite(wave)
    if bad.any():
        first = np.argwhere(bad)[0][1] / rate
        raise ValueError(f"{path}: {int(bad.sum())} NaN or infinite audio samples (first at {first:.3f} s)")
    return torch.from_numpy(wave), rate


def _as_channels_first(waveform: torch.Tensor | np.ndarray) -> torch.Tensor:
    w = torch.as_tensor(waveform)
    if not (w.is_floating_point()):
        raise TypeError(f"waveform must be floating point in [-1, 1], got dtype {w.dtype}")
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        raise ValueError(f"waveform must be (n,) or (channels, n), got shape {tuple(w.shape)}")
    if w.shape[1] == 0 or w.shape[0] == 0:
        raise ValueError(f"waveform is empty (shape {tuple(w.shape)})")
    if not torch.isfinite(w).all():
        raise ValueError("waveform has NaN or infinite samples")
    return w.float()


def waveform_to_fbank(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """Kaldi log-mel frames ``(n_frames, 128)`` before padding, transposing and normalising."""
    w = _as_channels_first(waveform)
    if sample_rate != SAMPLE_RATE:
        w = torchaudio.functional.resample(w, orig_freq=int(sample_rate), new_freq=SAMPLE_RATE)
    # ImageBind: ``waveform -= waveform.mean()`` over every channel; fbank then reads channel 0.
    w = w[:1] - w.mean()
    if w.shape[1] < _WINDOW_SAMPLES:
        w = torch.nn.functional.pad(w, (0, _WINDOW_SAMPLES - w.shape[1]))
    return kaldi.fbank(
        w,
        htk_compat=True,
        sample_frequency=SAMPLE_RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=NUM_MEL_BINS,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    )


def waveform_to_mel(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int,
    target_frames: int = TARGET_FRAMES,
    normalize: bool = True,
) -> torch.Tensor:
    """ImageBind's audio input ``(1, 128, target_frames)``; see the module docstring for the rules.

    ``normalize=False`` returns the raw log-mel (upstream ``waveform2melspec`` output).
    """
    fbank = waveform_to_fbank(waveform, sample_rate).T  # (128, n_frames)
    missing = target_frames - fbank.shape[1]
    if missing > 0:
        fbank = torch.nn.functional.pad(fbank, (0, missing), value=0.0)
    else:
        fbank = fbank[:, :target_frames]
    mel = fbank[None]  # "1 f t"
    if normalize:
        mel = (mel - MEL_MEAN) / MEL_STD
    return mel
