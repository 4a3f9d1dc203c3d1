import json

import numpy as np
import pytest
from scipy.signal import find_peaks

from data_prep.synthetic import CLASSES, PIXEL_LATENT_SCALE, ClipSpec, make_clip, write_dataset
from keyvid.data.io import MediaError, read_av, write_av
from keyvid.data.keyframes import detect_keypoints
from keyvid.data.motion import motion_score

SPEC = ClipSpec(height=96, width=160, fps=24.0, duration=2.0, sample_rate=16000)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("syn"), num_clips=6, seed=7, spec=SPEC)


def _clips(root):
    for rel in (root / "train.txt").read_text().split() + (root / "test.txt").read_text().split():
        video = root / "videos" / rel
        yield video, json.loads(video.with_suffix(".json").read_text())


def test_layout_and_split(dataset):
    assert (dataset / "classes.txt").read_text().split() == list(CLASSES)
    train = (dataset / "train.txt").read_text().split()
    test = (dataset / "test.txt").read_text().split()
    assert len(train) + len(test) == 6 and not set(train) & set(test) and len(test) >= 1


def test_clips_decode_as_asked(dataset):
    for video, gt in _clips(dataset):
        clip = read_av(video, require_audio=True)
        assert clip.frames.shape == (48, 96, 160, 3)
        assert clip.fps == 24.0
        assert clip.sample_rate == 16000
        assert clip.audio.shape[0] == 1 and clip.audio.shape[1] >= 32000
        assert gt["num_frames"] == 48 and gt["caption"] == CLASSES[gt["label"]]


def test_impacts_are_audio_transients_and_motion_peaks(dataset):
    seen, errors = 0, []
    for video, gt in _clips(dataset):
        clip = read_av(video, require_audio=True)
        impacts = np.array(gt["impact_times"])
        if gt["label"] == "calm":
            assert len(impacts) == 0
            assert np.abs(clip.audio).max() < 0.5  # no transient
            continue
        seen += 1
        # audio: envelope onsets (5 ms hops) within 10 ms of each impact, and no others
        env = np.abs(clip.audio[0, :32000]).reshape(-1, 80).max(1)
        onsets = find_peaks(np.diff(env, prepend=0), height=0.15, distance=40)[0] * 80 / 16000
        assert len(onsets) == len(impacts), (video.name, onsets, impacts)
        assert np.abs(onsets - impacts).max() < 0.01
        # video: a motion-score peak near each impact. The flow of the frame pair that straddles
        # a bounce is small (down then up), so the smoothed peak can sit 1-3 frames off.
        kp = detect_keypoints(motion_score(clip.frames))
        errors += [np.abs(kp.peaks - t).min() for t in impacts * 24]
    assert seen >= 3
    errors = np.array(errors)
    assert np.mean(errors <= 2.5) >= 0.8 and errors.max() <= 4, errors


def test_deterministic_by_seed():
    a = make_clip(3, seed=11, spec=SPEC)
    b = make_clip(3, seed=11, spec=SPEC)
    c = make_clip(3, seed=12, spec=SPEC)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])


def test_encoding_is_byte_deterministic(tmp_path):
    # clip 2 of seed 0 (a "calm" texture) at 48x32 came out as 4 different files in 10 encodes while
    # x264's mbtree was on; the overfit recipe renders its test set again and needs the same bytes
    frames, audio, _ = make_clip(2, seed=0, spec=ClipSpec(height=32, width=48))
    files = {write_av(tmp_path / f"{i}.mp4", frames, 24, audio, 16000).read_bytes() for i in range(12)}
    assert len(files) == 1


def test_unknown_class_raises():
    with pytest.raises(ValueError, match="unknown synthetic class 'dragons'"):
        make_clip(0, 0, SPEC, label="dragons")


def test_restart_skips_finished_clips(dataset):
    video, _ = next(_clips(dataset))
    mtime = video.stat().st_mtime_ns
    write_dataset(dataset, num_clips=6, seed=7, spec=SPEC)
    assert video.stat().st_mtime_ns == mtime


def test_read_errors_name_the_file(tmp_path):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="corrupt.mp4"):
        read_av(bad)
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        read_av(tmp_path / "missing.mp4")


def test_pixel_latent_scale_gives_unit_variance_latents():
    # The recipe's PixelVAE scale: at 1.0 the latents' std was 0.17 and the overfit test could not reproduce
    # frame 0 (docs/learning.md); a drift of the renderer or of the constant shows here.
    import torch

    from keyvid.models.encoders import PixelVAE

    vae = PixelVAE(4, PIXEL_LATENT_SCALE)
    clips = [make_clip(i, 0, ClipSpec(height=64, width=96))[0] for i in range(6)]
    video = torch.from_numpy(np.stack(clips)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # "b c t h w"
    assert 0.85 < vae.encode(video).std().item() < 1.15
    assert PixelVAE(4, 1.0).encode(video).std().item() < 0.25
