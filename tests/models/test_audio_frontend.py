import math

import numpy as np
import pytest
import torch

from keyvid.models.audio_frontend import (
    MEL_MEAN,
    MEL_STD,
    NUM_MEL_BINS,
    TARGET_FRAMES,
    load_audio,
    waveform_to_fbank,
    waveform_to_mel,
)
from tests.conftest import FIXTURES, MEDIA, needs_fixtures, needs_media

PAD_VALUE = ((torch.tensor(0.0) - MEL_MEAN) / MEL_STD).item()  # raw log-mel padding (0), normalised in float32


def _reference():
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / "imagebind_mel_reference.safetensors"))


def _spec_fbank64(w: torch.Tensor) -> torch.Tensor:
    """The upstream call of README 3c (``waveform2melspec``'s kaldi.fbank), evaluated in float64."""
    from torchaudio.compliance import kaldi

    w = w.double()
    return kaldi.fbank(
        w[:1] - w.mean(), htk_compat=True, sample_frequency=16_000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_length=25.0, frame_shift=10.0,
    )


def _float32_log_mel_bound(ref64: torch.Tensor, c: float) -> torch.Tensor:
    """Per-element bound on |log-mel in float32 - log-mel in float64|, from the precision of the quantity.

    A float32 FFT of a frame has an absolute error per bin of about ``c * eps * ||X||`` (error grows with
    log2 N and the implementation: MKL, pocketfft, AVX2 or AVX-512 kernels all differ), and ``||X||^2`` is
    proportional to the frame's total mel energy ``S``. A mel energy ``E`` built from bins of power
    ``|X|^2 ~ E`` is then off by about ``2 |X| delta + delta^2``, so its log is off by
    ``c eps sqrt(S / E) + (c eps)^2 S / E``; loud bins are good to a few 1e-6, bins near Kaldi's energy
    floor (float32 eps, log -15.94; 38 % of this clip's bins) to about 1e-3, which is what the
    machines differ by there. Plus 4e-6 for the float32 log itself (|log E| <= 16, ulp 1.9e-6).
    """
    eps = torch.finfo(torch.float32).eps
    energy = ref64.exp().clamp_min(eps)
    ratio = energy.sum(dim=-1, keepdim=True) / energy
    return 4e-6 + c * eps * ratio.sqrt() + (c * eps) ** 2 * ratio


# Measured with c = 1 (the largest |error| / bound over both clips): ours 0.46-0.61 on an AVX-512 Xeon with
# PyPI torch 2.11 (MKL FFT), whether ATen and MKL run their AVX-512, AVX2 or baseline kernels
# (ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS); the upstream recording 98 (made on another machine whose
# FFT error peaks in a few mid-frequency bins). Each c below leaves a margin of 4-7x over what was measured.
C_OURS = 4.0
C_RECORDING = 400.0


def _assert_within(actual: torch.Tensor, ref64: torch.Tensor, c: float, what: str) -> None:
    err = (actual.double() - ref64).abs()
    bound = _float32_log_mel_bound(ref64, c)
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{what}: error {worst:.2f}x its float32 bound (max |error| {err.max().item():.2e})"


@needs_fixtures
@pytest.mark.parametrize("channels", ["mono", "stereo"])
def test_fbank_matches_the_upstream_call(channels):
    # The spec is upstream's own call (README 3c) in float64. Ours must reach it to float32 precision, and
    # so must the recording from upstream's code: together they show ours = upstream on any machine,
    # without trusting one machine's float32 rounding (an exact 1e-6 match held only on the CPU it was
    # written on).
    ref = _reference()
    w = ref[f"wav.{channels}"]
    spec = _spec_fbank64(w)
    _assert_within(ref[f"mel.{channels}.fbank_frames"], spec, C_RECORDING, "upstream recording vs spec")
    _assert_within(waveform_to_fbank(w, 16_000), spec, C_OURS, "waveform_to_fbank vs spec")
    raw = waveform_to_mel(w, 16_000, normalize=False)
    _assert_within(raw[0, :, :198].T, spec, C_OURS, "waveform_to_mel raw vs spec")
    _assert_within(ref[f"mel.{channels}.raw"][0, :, :198].T, spec, C_RECORDING, "upstream raw vs spec")
    # Padding and normalisation are exact operations: the six padded frames are 0, the model input is
    # (raw - mean) / std in float32, in ours as in the recording.
    assert torch.all(raw[..., 198:] == 0) and torch.all(ref[f"mel.{channels}.raw"][..., 198:] == 0)
    assert torch.equal(waveform_to_mel(w, 16_000), (raw - MEL_MEAN) / MEL_STD)
    assert torch.equal(ref[f"mel.{channels}.norm"], (ref[f"mel.{channels}.raw"] - MEL_MEAN) / MEL_STD)


@needs_fixtures
def test_stereo_reads_channel_zero_after_the_shared_mean():
    # Upstream subtracts the mean over both channels and reads channel 0: the right channel matters only
    # through that mean (no down-mix). Both sides run here, so the comparison is on one machine.
    ref = _reference()
    w = ref["wav.stereo"]
    # Another right channel with the same mean gives the same features, to float32 precision.
    other_right = w[1].flip(0)
    _assert_within(waveform_to_fbank(torch.stack([w[0], other_right]), 16_000), _spec_fbank64(w), C_OURS,
                   "stereo with another right channel of the same mean")
    downmix = waveform_to_mel(w.mean(0), 16_000)
    assert (waveform_to_mel(w, 16_000) - downmix).abs().max() > 0.1


def test_shapes_padding_and_cropping():
    sr = 16_000
    t = torch.arange(3 * sr) / sr
    w = 0.3 * torch.sin(2 * math.pi * 330 * t)
    two_s = waveform_to_mel(w[: 2 * sr], sr)
    assert two_s.shape == (1, NUM_MEL_BINS, TARGET_FRAMES)
    # 2 s -> 198 real frames, then 6 frames of raw 0.
    assert torch.all(two_s[..., 198:] == PAD_VALUE) and not torch.any(two_s[..., 197] == PAD_VALUE)
    # Longer audio keeps the first 204 frames: the 2.055 s prefix, up to the DC offset, which
    # upstream removes using the whole waveform (cropped tail included).
    torch.testing.assert_close(waveform_to_mel(w, sr), waveform_to_mel(w[: 400 + 203 * 160], sr), rtol=0, atol=1e-3)
    # 0.5 s -> 48 frames, rest padding; shorter than one 25 ms window -> one frame.
    assert torch.all(waveform_to_mel(w[: sr // 2], sr)[..., 48:] == PAD_VALUE)
    tiny = waveform_to_mel(w[:100], sr)
    assert tiny.shape == (1, NUM_MEL_BINS, TARGET_FRAMES) and torch.all(tiny[..., 1:] == PAD_VALUE)


def test_resampling_and_layouts():
    sr = 44_100
    w = torch.randn(2, 2 * sr, generator=torch.Generator().manual_seed(0)) * 0.1
    mel = waveform_to_mel(w, sr)
    assert mel.shape == (1, NUM_MEL_BINS, TARGET_FRAMES)
    # Resampled 2 s at 16 kHz gives the same 198 real frames as native 16 kHz audio.
    assert torch.all(mel[..., 198:] == PAD_VALUE) and not torch.all(mel[..., 197] == PAD_VALUE)
    mono = w[0].numpy()
    torch.testing.assert_close(waveform_to_mel(mono, sr), waveform_to_mel(torch.from_numpy(mono)[None], sr))


def test_silent_and_clipped_audio_are_finite():
    sr = 16_000
    silent = waveform_to_mel(torch.zeros(2 * sr), sr)
    assert torch.isfinite(silent).all()
    g = torch.Generator().manual_seed(1)
    clipped = (torch.randn(2, 2 * sr, generator=g) * 20).clamp(-1, 1)
    assert torch.isfinite(waveform_to_mel(clipped, sr)).all()
    assert torch.isfinite(waveform_to_mel(torch.ones(2 * sr), sr)).all()  # pure DC -> silence after mean removal


def test_bad_waveforms_raise():
    with pytest.raises(ValueError, match="empty"):
        waveform_to_mel(torch.zeros(0), 16_000)
    with pytest.raises(ValueError, match="empty"):
        waveform_to_mel(torch.zeros(2, 0), 16_000)
    with pytest.raises(ValueError, match="NaN"):
        waveform_to_mel(torch.tensor([0.0, float("nan")] * 400), 16_000)
    with pytest.raises(TypeError, match="floating"):
        waveform_to_mel(np.zeros(16_000, dtype=np.int16), 16_000)
    with pytest.raises(ValueError, match="shape"):
        waveform_to_mel(torch.zeros(1, 2, 16_000), 16_000)


@needs_media
@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("machine_gun_shooting.wav", 44_100, 2), ("flipping_a_pancake.mkv", 48_000, 1), ("dog_running.mp4", 44_100, 1)],
)
def test_load_audio_real_media(name, rate, channels):
    w, sr = load_audio(MEDIA / name)
    assert sr == rate and w.shape[0] == channels and w.dtype == torch.float32
    assert w.abs().max() <= 1.0 and w.abs().max() > 0
    mel = waveform_to_mel(w, sr)
    assert mel.shape == (1, NUM_MEL_BINS, TARGET_FRAMES) and torch.isfinite(mel).all()


def test_load_audio_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        load_audio(missing)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    with pytest.raises(ValueError, match="notes.wav"):
        load_audio(text)


@needs_media
def test_load_audio_rejects_image():
    with pytest.raises(ValueError, match="lion_and_gun.png has no audio stream"):
        load_audio(MEDIA / "lion_and_gun.png")
