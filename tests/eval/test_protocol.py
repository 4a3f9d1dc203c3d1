import numpy as np
import pytest

from data_prep.synthetic import ClipSpec, make_clip
from keyvid.data.io import MediaError, write_av
from keyvid.eval.protocol import (ProtocolSpec, clip_name, clip_starts, crop_resize, frame_indices,
                                  generated_clip, impact_times_for, match_folder, reference_clips, spec_for)


def test_clip_names_and_starts():
    assert clip_name("hammer/abc.mp4", 2) == "hammer/abc_clip-2.mp4"
    spec = spec_for("avsync15")
    assert np.allclose(clip_starts(10.0, spec), [0.0, 4.0, 8.0])
    assert np.allclose(clip_starts(2.0, spec), 0.0)  # a 2 s video: three identical clips, as AVSyncD
    assert np.allclose(clip_starts(10.0, ProtocolSpec(num_clips=1)), [4.0])
    assert spec_for("greatesthits").size == (128, 256)
    with pytest.raises(ValueError, match="unknown dataset"):
        spec_for("kinetics")


def test_frame_indices_resample_48_to_12_and_keep_48():
    assert frame_indices(48, 24.0, 0.0, ProtocolSpec()).tolist() == list(range(0, 48, 4))
    assert frame_indices(12, 6.0, 0.0, ProtocolSpec()).tolist() == list(range(12))
    assert frame_indices(48, 24.0, 0.0, ProtocolSpec(mode="frames48")).tolist() == list(range(48))
    # 30 fps source, clip at 4 s: frames at or after 4 + i/6 s; short clips repeat the last frame
    assert frame_indices(300, 30.0, 4.0, ProtocolSpec()).tolist()[:3] == [120, 125, 130]
    assert frame_indices(20, 30.0, 0.0, ProtocolSpec()).tolist()[-1] == 19


def test_crop_resize_centre_crops_to_aspect():
    frames = np.zeros((2, 40, 100, 3), np.uint8)
    frames[:, :, 30:70] = 255  # a white band in the centre 40 columns
    out = crop_resize(frames, (32, 32))
    assert out.shape == (2, 3, 32, 32) and float(out.min()) > 0.99  # the square crop is all white
    wide = crop_resize(frames, (16, 64))
    assert wide.shape == (2, 3, 16, 64)


def _write(path, n, fps, audio=True, size=(32, 48)):
    frames = np.random.default_rng(0).integers(0, 255, (n, *size, 3), dtype=np.uint8)
    wave = np.zeros((1, int(16000 * n / fps)), np.float32) if audio else None
    return write_av(path, frames, fps, wave, 16000)


def test_generated_clip_checks_frames_and_audio(tmp_path):
    spec = ProtocolSpec(size=(32, 32))
    c = generated_clip(_write(tmp_path / "a.mp4", 48, 24.0), spec, "a.mp4")
    assert c.frames.shape == (12, 3, 32, 32) and c.native_fps == 24.0 and len(c.native_frames) == 48
    assert generated_clip(_write(tmp_path / "b.mp4", 12, 6.0), spec, "b.mp4").frames.shape[0] == 12
    with pytest.raises(MediaError, match="has 40 frames"):
        generated_clip(_write(tmp_path / "c.mp4", 40, 24.0), spec, "c.mp4")
    with pytest.raises(MediaError, match="no audio"):
        generated_clip(_write(tmp_path / "d.mp4", 48, 24.0, audio=False), spec, "d.mp4")
    with pytest.raises(MediaError, match="has 12 frames"):
        generated_clip(tmp_path / "b.mp4", ProtocolSpec(size=(32, 32), mode="frames48"), "b.mp4")
    (tmp_path / "e.mp4").write_bytes(b"not a video")
    with pytest.raises(MediaError):
        generated_clip(tmp_path / "e.mp4", spec, "e.mp4")


def test_match_folder_names_missing_and_extra(tmp_path):
    spec = ProtocolSpec()
    for k in (0, 1):
        (tmp_path / "cls").mkdir(exist_ok=True)
        (tmp_path / "cls" / f"v_clip-{k}.mp4").write_bytes(b"")
    (tmp_path / "cls" / "w_clip-0.mp4").write_bytes(b"")
    report = match_folder(tmp_path, ["cls/v.mp4"], spec)
    assert report.found == ["cls/v_clip-0.mp4", "cls/v_clip-1.mp4"]
    assert report.missing == ["cls/v_clip-2.mp4"] and report.extra == ["cls/w_clip-0.mp4"]
    assert not report.ok and any("cls/v_clip-2.mp4" in p for p in report.problems())


def test_reference_clips_and_impact_times(tmp_path):
    frames, audio, gt = make_clip(0, 0, ClipSpec(48, 64, 24.0, 2.0, 16000))
    path = write_av(tmp_path / "x.mp4", frames, 24.0, audio, 16000)
    (tmp_path / "x.json").write_text('{"impact_times": [0.5, 1.5]}')
    clips = reference_clips(path, ProtocolSpec(size=(32, 32)), "cls/x.mp4")
    assert [c.name for c in clips] == [f"cls/x_clip-{k}.mp4" for k in range(3)]
    assert clips[0].frames.shape == (12, 3, 32, 32) and clips[0].audio.shape[1] >= 31000
    assert impact_times_for(path, 0.0, 2.0) == [0.5, 1.5]
    assert impact_times_for(path, 1.0, 2.0) == [0.5]
    assert impact_times_for(tmp_path / "none.mp4", 0.0, 2.0) is None
