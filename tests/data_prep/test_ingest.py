import json

import numpy as np
import pytest

from data_prep.ingest import (
    Rejected, VideoRecord, build_flow_backend, ingest_video, list_videos, resample_audio, resample_frames,
    resize_center_crop, sample_key, window_starts,
)
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.io import write_av
from tests.conftest import MEDIA, needs_media

SIZE = dict(height=64, width=96)  # tiny training size: the pipeline is size-agnostic
CLIPS = ["chopping.mp4", "dog_running.mp4", "flipping_a_pancake.mkv", "landscape_48f.mp4", "snow_48f.mp4"]
# expected number of 2 s windows at stride 2 s (None: rejected)
WINDOWS = {"chopping.mp4": 4, "dog_running.mp4": None, "flipping_a_pancake.mkv": 5,
           "landscape_48f.mp4": 1, "snow_48f.mp4": 1}


@pytest.fixture(scope="module")
def flow():
    return build_flow_backend("classic", preset="ultrafast")


@pytest.fixture(scope="module")
def ingested(flow):
    out = {}
    for name in CLIPS:
        try:
            out[name] = ingest_video(VideoRecord(MEDIA / name, "a caption", name.split(".")[0], ""), flow, **SIZE)
        except Rejected as e:
            out[name] = e
    return out


@needs_media
@pytest.mark.parametrize("name", CLIPS)
def test_real_clip_processed_or_rejected(ingested, name):
    result = ingested[name]
    if WINDOWS[name] is None:
        assert isinstance(result, Rejected)
        assert "too short" in result.reason and "1.10 s" in result.reason
        return
    assert len(result) == WINDOWS[name]
    for i, s in enumerate(result):
        assert s.frames.shape == (48, 64, 96, 3) and s.frames.dtype == np.uint8
        assert s.audio.shape == (32000,) and s.audio.dtype == np.float32
        assert s.motion.shape == (48,) and s.motion.dtype == np.float32 and np.all(np.isfinite(s.motion))
        assert s.meta["fps"] == 24 and s.meta["num_frames"] == 48 and s.meta["sample_rate"] == 16000
        assert s.meta["start_seconds"] == pytest.approx(2.0 * i)
        assert all(0 <= p < 48 for p in s.meta["peaks"] + s.meta["valleys"])
        assert "." not in s.key and s.key.endswith(f"_w{i:03d}")
    assert np.abs(result[0].audio).max() > 1e-3  # real sound, not padding


@needs_media
def test_chopping_has_periodic_motion_peaks(ingested):
    # a hit every ~0.48 s: a 2 s window holds several motion peaks
    assert max(len(s.meta["peaks"]) for s in ingested["chopping.mp4"]) >= 2


@needs_media
def test_full_window_and_flow_height(flow):
    rec = VideoRecord(MEDIA / "flipping_a_pancake.mkv", "", "pancake", "")
    (full,) = ingest_video(rec, flow, windows="full", max_seconds=4.0, flow_height=32, **SIZE)
    assert full.frames.shape == (96, 64, 96, 3) and full.audio.shape == (64000,) and full.motion.shape == (96,)
    assert full.meta["windows"] == "full" and full.meta["flow_height"] == 32
    (first,) = ingest_video(rec, flow, windows="first", **SIZE)
    assert first.frames.shape[0] == 48


def test_resample_frames_by_timestamp():
    src = np.arange(60)[:, None, None, None].astype(np.uint8)  # 2 s at 30 fps, frame i has value i
    out = resample_frames(src, 30.0)
    assert out.shape[0] == 48
    expected = np.floor(np.arange(48) * 30 / 24 + 0.5).astype(int)
    assert np.array_equal(out[:, 0, 0, 0], expected)
    slow = resample_frames(np.arange(20)[:, None, None, None].astype(np.uint8), 10.0)  # 10 fps: repeats
    assert slow.shape[0] == 48 and np.array_equal(slow[:5, 0, 0, 0], [0, 0, 1, 1, 2])
    assert resample_frames(src, 30.0, max_frames=24).shape[0] == 24


@pytest.mark.parametrize("hw", [(720, 1280), (568, 320), (64, 96)])
def test_resize_center_crop(hw):
    frames = np.random.default_rng(0).integers(0, 255, (2, *hw, 3), dtype=np.uint8)
    assert resize_center_crop(frames, 64, 96).shape == (2, 64, 96, 3)


def test_resample_audio_mono_16k():
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), -np.sin(2 * np.pi * 440 * t)]).astype(np.float32)
    assert np.abs(resample_audio(stereo, 44100)).max() < 1e-5  # mean of opposite channels
    mono = resample_audio(stereo[:1], 44100)
    assert mono.shape == (16000,) and mono.dtype == np.float32


def test_window_starts():
    assert window_starts(200, 48, 48, "all") == [0, 48, 96, 144]
    assert window_starts(200, 48, 24, "all")[:3] == [0, 24, 48]
    assert window_starts(200, 48, 48, "first") == [0] == window_starts(200, 48, 48, "full")
    assert window_starts(47, 48, 48, "all") == []
    with pytest.raises(ValueError, match="windows"):
        window_starts(100, 48, 48, "some")


def test_bad_inputs_are_rejected_with_a_reason(tmp_path, flow):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    silent = write_av(tmp_path / "silent.mp4", np.zeros((48, 32, 32, 3), np.uint8), 24.0)
    loop, dangling = tmp_path / "loop.mp4", tmp_path / "dangling.mp4"
    loop.symlink_to(loop)
    dangling.symlink_to(tmp_path / "gone.mp4")
    for path, reason in [(corrupt, "not a readable media file"), (silent, "no audio"),
                         (tmp_path / "missing.mp4", "not found"), (loop, "not found: " + f"{loop} (a symlink loop)"),
                         (dangling, f"(a dangling symlink to {tmp_path / 'gone.mp4'})")]:
        with pytest.raises(Rejected) as e:
            ingest_video(VideoRecord(path, "", path.stem, ""), flow, **SIZE)
        assert reason in e.value.reason and e.value.path == str(path)


def test_build_flow_backend():
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 48, 3), dtype=np.uint8)
    assert build_flow_backend("classic")(frames).shape == (2, 2, 32, 48)
    with pytest.raises(ValueError, match="unknown flow backend"):
        build_flow_backend("farneback")


def test_list_videos_avsyncd(tmp_path):
    root = write_dataset(tmp_path / "syn", 4, seed=0, spec=ClipSpec(32, 48, 24.0, 2.0, 16000))
    train = list_videos(root, "avsyncd", "train")
    assert len(train) == 3 and all(r.path.is_file() for r in train)
    r = train[0]
    assert r.label == "bouncing_ball" and r.caption == "bouncing ball"
    assert r.source_id == "bouncing_ball/bouncing_ball_0_00000"
    assert sample_key(r.source_id, 2) == "bouncing_ball_bouncing_ball_0_00000-5be0a30b_w002"
    with pytest.raises(FileNotFoundError, match="val.txt"):
        list_videos(root, "avsyncd", "val")


def test_sample_keys_of_names_that_sanitise_alike_differ():
    # before: "a.b" and "a_b" (and any two same-length non-Latin names) got one key, and the shard
    # holding both could not be read ("duplicate file name in tar file")
    names = ["a.b", "a_b", "é", "ñ", "日本", "中国", "x" * 200, "x" * 199 + "y"]
    keys = [sample_key(n, 0) for n in names]
    assert len(set(keys)) == len(keys) and all("." not in k and len(k) <= 100 for k in keys)
    assert sample_key("a.b", 3) == sample_key("a.b", 3) != sample_key("a.b", 4)


def test_list_videos_folder(tmp_path):
    for rel in ["a.mp4", "sub/b.mkv", "notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "captions.csv").write_text('filename,caption\na.mp4,"a dog, barking"\n')
    recs = list_videos(tmp_path, "folder", "train")
    assert [r.source_id for r in recs] == ["a", "sub/b"]
    assert recs[0].caption == "a dog, barking" and recs[0].label == ""
    assert recs[1].caption == "" and recs[1].label == "sub"
    (tmp_path / "captions.csv").unlink()
    (tmp_path / "captions.txt").write_text("sub/b.mkv\ta drum\n")
    assert list_videos(tmp_path, "folder", "train")[1].caption == "a drum"
    (tmp_path / "train.txt").write_text("sub/b.mkv\n")
    assert [r.source_id for r in list_videos(tmp_path, "folder", "train")] == ["sub/b"]
    with pytest.raises(ValueError, match="layout"):
        list_videos(tmp_path, "csv", "train")


def test_synthetic_ground_truth_in_meta(tmp_path, flow):
    root = write_dataset(tmp_path / "syn", 2, seed=1, spec=ClipSpec(32, 48, 24.0, 2.0, 16000))
    rec = list_videos(root, "avsyncd", "train")[0]
    (s,) = ingest_video(rec, flow, **SIZE)
    gt = json.loads(rec.path.with_suffix(".json").read_text())
    assert s.meta["impact_times"] == pytest.approx(gt["impact_times"])
