import io
import json
import tarfile

import numpy as np
import pytest

from data_prep.ingest import Sample, VideoRecord, list_videos
from data_prep.records import clip_record, record_path
from data_prep.shards import ShardConfig, write_shards
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.io import write_av
from keyvid.data.keyframes import KeyPoints, normalize_curve, select_keyframes, smooth_curve

CFG = ShardConfig(flow_kwargs={"preset": "ultrafast"}, ingest_kwargs={"height": 64, "width": 96}, jpeg_quality=90)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Three 4.5 s synthetic clips (two 2 s windows each, a 0.5 s tail dropped) and a silent one -> shards."""
    tmp = tmp_path_factory.mktemp("rec")
    root = write_dataset(tmp / "syn", 3, seed=5, spec=ClipSpec(64, 96, 24.0, 4.5, 16000), test_fraction=0)
    recs = list_videos(root, "avsyncd", "train")
    write_av(tmp / "silent.mp4", np.zeros((48, 64, 96, 3), np.uint8), 24.0)
    recs.append(VideoRecord(tmp / "silent.mp4", "", "silent", ""))
    out = tmp / "out"
    summary = write_shards(recs, out, "train", CFG, videos_per_shard=2, job_index=0, num_jobs=1)
    assert summary["errors"] == 1 and summary["records"] == str(out / "records/train")
    return recs, out


def _tar_members(path):
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


def test_one_record_per_good_clip(prepared):
    recs, out = prepared
    files = sorted((out / "records/train").rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]
    assert sorted(f for f in files if f.is_file()) == sorted(record_path(out, "train", r.source_id) for r in recs[:3])
    assert not record_path(out, "train", "silent").exists()  # rejected: in the errors manifest instead

    rec = json.loads(record_path(out, "train", recs[0].source_id).read_text())
    assert rec["fps"] == 24 and rec["num_frames"] == 96 and len(rec["motion_score"]) == 96
    assert rec["source"] == str(recs[0].path) and rec["caption"] == recs[0].caption
    assert [w["start_frame"] for w in rec["windows"]] == [0, 48]
    assert {w["shard"] for w in rec["windows"]} == {"train-000000"}
    assert all(isinstance(p, int) for p in rec["peaks"] + rec["valleys"])

    # the record's curve is the shards' motion.npy, window by window
    members = _tar_members(out / "train-000000.tar")
    for w in rec["windows"]:
        stored = np.load(io.BytesIO(members[f"{w['key']}.motion.npy"]))
        meta = json.loads(members[f"{w['key']}.meta.json"])
        part = np.asarray(rec["motion_score"][w["start_frame"] : w["start_frame"] + 48])
        np.testing.assert_allclose(part, stored, rtol=1e-6)
        assert w["peaks"] == meta["peaks"] and w["valleys"] == meta["valleys"]


def test_record_keyframes_are_algorithm1_on_the_first_window(prepared):
    recs, out = prepared
    for r in recs[:3]:
        rec = json.loads(record_path(out, "train", r.source_id).read_text())
        kf = rec["keyframes"]
        assert len(kf) == 12 and kf[0] == 0 and kf == sorted(set(kf)) and kf[-1] < 48
        w0 = rec["windows"][0]
        m = np.asarray(rec["motion_score"][:48], np.float64)
        kp = KeyPoints(np.asarray(w0["peaks"]), np.asarray(w0["valleys"]), smooth_curve(normalize_curve(m)), 48)
        assert kf == select_keyframes(kp, 12, rng=0, mode="paper").tolist()


def _sample(start: int, motion: np.ndarray, peaks=(), valleys=()) -> Sample:
    meta = {"start_seconds": start / 24, "peaks": list(peaks), "valleys": list(valleys)}
    return Sample(f"k_w{start}", np.zeros((len(motion), 1, 1, 3), np.uint8), np.zeros(1, np.float32),
                  motion.astype(np.float32), meta)


def test_record_of_sparse_windows_marks_the_gap():
    # stride 3 s > window 2 s: frames 48..71 were never stored, so the record says so
    motion = np.random.default_rng(0).random(120)
    rec = clip_record(VideoRecord("v.mp4", "c", "v", ""), [_sample(0, motion[:48]), _sample(72, motion[72:120])])
    assert rec["num_frames"] == 120 and rec["motion_score"][48:72] == [None] * 24
    assert rec["peaks"] is None and rec["valleys"] is None
    assert rec["motion_score"][72] == pytest.approx(motion[72], rel=1e-6)


def test_record_of_a_full_clip_sample_windows_its_keypoints():
    # windows=full: one 5 s sample whose keypoints were detected on the whole clip
    motion = np.abs(np.sin(np.arange(120) / 4.0))
    peaks, valleys = [6, 19, 31, 44, 57, 69, 82, 94, 107], [0, 13, 25, 38, 50, 63, 75, 88, 100, 113]
    rec = clip_record(VideoRecord("v.mp4", "c", "v", ""), [_sample(0, motion, peaks, valleys)])
    kp = KeyPoints(np.asarray(peaks), np.asarray(valleys), smooth_curve(normalize_curve(motion)), 120).window(0, 48)
    assert rec["keyframes"] == select_keyframes(kp, 12, rng=0).tolist()
    assert max(rec["keyframes"]) < 48 and rec["num_frames"] == 120


def test_record_of_a_window_shorter_than_tk_has_no_keyframes():
    rec = clip_record(VideoRecord("v.mp4", "c", "v", ""), [_sample(0, np.linspace(0, 1, 8))])
    assert rec["keyframes"] is None and rec["num_frames"] == 8
