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


@needs_fixtures
def test_mono_matches_upstream_exactly():
    ref = _reference()
    w = ref["wav.mono"]
    torch.testing.assert_close(waveform_to_fbank(w, 16_000), ref["mel.mono.fbank_frames"], rtol=0, atol=1e-6)
    torch.testing.assert_close(waveform_to_mel(w, 16_000, normalize=False), ref["mel.mono.raw"], rtol=0, atol=1e-6)
    torch.testing.assert_close(waveform_to_mel(w, 16_000), ref["mel.mono.norm"], rtol=0, atol=1e-6)


@needs_fixtures
def test_stereo_matches_upstream():
    # Upstream subtracts the mean over both channels and reads channel 0. The reference was made
    # with another torch build whose float32 mean of this clip differs by one ulp, which moves a
    # few near-silent (log-floor) bins by up to 2e-3 (README 3c: "f32-vs-f64 noise of the
    # reference itself"); with the exactly rounded mean the match is exact. Hence the tolerance.
    ref = _reference()
    w = ref["wav.stereo"]
    raw = waveform_to_mel(w, 16_000, normalize=False)
    diff = (raw - ref["mel.stereo.raw"]).abs()
    assert diff.max() < 3e-3 and diff.mean() < 2e-5
    torch.testing.assert_close(waveform_to_mel(w, 16_000), ref["mel.stereo.norm"], rtol=0, atol=3e-3 / MEL_STD)
    # The right channel matters only through the shared mean: it is not down-mixed.
    assert (waveform_to_mel(w, 16_000) - waveform_to_mel(w[:1] - w.mean(), 16_000)).abs().max() < 3e-3 / MEL_STD


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
