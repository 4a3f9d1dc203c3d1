import io
import json
import tarfile

import numpy as np
import pytest

from data_prep.ingest import VideoRecord, list_videos
from data_prep.shards import ShardConfig, job_shards, shard_plan, slurm_job, write_shards
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.io import write_av

CFG = ShardConfig(flow_kwargs={"preset": "ultrafast"}, ingest_kwargs={"height": 64, "width": 96}, jpeg_quality=90)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("syn"), 6, seed=3, spec=ClipSpec(64, 96, 24.0, 2.0, 16000))
    recs = list_videos(root, "avsyncd", "train")
    assert len(recs) == 5
    return recs


def _members(tar_path):
    with tarfile.open(tar_path) as t:
        return t.getnames()


def test_shards_and_sidecars(tmp_path, records):
    summary = write_shards(records, tmp_path, "train", CFG, videos_per_shard=2, job_index=0, num_jobs=1)
    assert summary["num_shards"] == 3 and summary["written"] == ["train-000000", "train-000001", "train-000002"]
    assert summary["samples"] == 5 and summary["errors"] == 0
    assert summary["urls"].endswith("train-{000000..000002}.tar")
    assert not list(tmp_path.glob("*.tmp"))
    side = json.loads((tmp_path / "train-000000.json").read_text())
    assert side["num_samples"] == 2 and side["seconds"] == 4.0 and side["errors"] == 0
    names = _members(tmp_path / "train-000000.tar")
    for key in side["keys"]:
        assert {f"{key}.f000.jpg", f"{key}.f047.jpg", f"{key}.audio.npy", f"{key}.motion.npy",
                f"{key}.meta.json"} <= set(names)
    with tarfile.open(tmp_path / "train-000000.tar") as t:
        key = side["keys"][0]
        audio = np.load(io.BytesIO(t.extractfile(f"{key}.audio.npy").read()))
        meta = json.loads(t.extractfile(f"{key}.meta.json").read())
    assert audio.dtype == np.float16 and audio.shape == (32000,)
    assert meta["fps"] == 24 and meta["num_frames"] == 48 and meta["height"] == 64 and meta["width"] == 96
    assert meta["caption"] and meta["start_seconds"] == 0.0 and "impact_times" in meta
    assert {"peaks", "valleys", "label", "source"} <= set(meta)


def test_restart_skips_done_shards_and_redoes_unfinished(tmp_path, records):
    write_shards(records, tmp_path, "train", CFG, videos_per_shard=2, job_index=0, num_jobs=1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("train-*")}
    (tmp_path / "train-000001.json").unlink()  # a crash after the tar, before the sidecar
    summary = write_shards(records, tmp_path, "train", CFG, videos_per_shard=2, job_index=0, num_jobs=1)
    assert summary["written"] == ["train-000001"] and summary["skipped"] == 2
    for name in ["train-000000.tar", "train-000000.json", "train-000002.tar", "train-000002.json"]:
        assert (tmp_path / name).stat().st_mtime_ns == mtimes[name]
    assert (tmp_path / "train-000001.tar").stat().st_mtime_ns != mtimes["train-000001.tar"]
    assert (tmp_path / "train-000001.json").is_file()


def test_two_jobs_write_every_shard_once(tmp_path, records):
    a = write_shards(records, tmp_path, "train", CFG, videos_per_shard=1, job_index=0, num_jobs=2, workers=2)
    b = write_shards(records, tmp_path, "train", CFG, videos_per_shard=1, job_index=1, num_jobs=2)
    assert a["written"] == ["train-000000", "train-000002", "train-000004"]
    assert b["written"] == ["train-000001", "train-000003"]
    keys = [k for s in range(5) for k in json.loads((tmp_path / f"train-{s:06d}.json").read_text())["keys"]]
    assert len(keys) == len(set(keys)) == 5


def test_bad_inputs_go_to_errors_manifest(tmp_path, records):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corrupt.mp4").write_bytes(b"\x00" * 4096)
    write_av(bad / "silent.mp4", np.zeros((48, 64, 96, 3), np.uint8), 24.0)
    write_av(bad / "short.mp4", np.zeros((20, 64, 96, 3), np.uint8), 24.0, np.zeros((1, 16000), np.float32))
    recs = [VideoRecord(bad / n, "", n, "") for n in ["corrupt.mp4", "silent.mp4", "short.mp4"]] + records[:1]
    out = tmp_path / "out"
    summary = write_shards(recs, out, "train", CFG, videos_per_shard=4, job_index=0, num_jobs=1)
    assert summary["samples"] == 1 and summary["errors"] == 3
    errors = [json.loads(ln) for ln in (out / "errors-train-0.jsonl").read_text().splitlines()]
    reasons = {e["path"].split("/")[-1]: e["reason"] for e in errors}
    assert "not a readable media file" in reasons["corrupt.mp4"]
    assert "no audio" in reasons["silent.mp4"]
    assert "too short" in reasons["short.mp4"]
    assert all(e["shard"] == 0 for e in errors)
    assert json.loads((out / "train-000000.json").read_text())["errors"] == 3


def test_mp4_frame_codec(tmp_path, records):
    cfg = ShardConfig(flow_kwargs={"preset": "ultrafast"}, ingest_kwargs={"height": 64, "width": 96}, frame_codec="mp4")
    write_shards(records[:1], tmp_path, "val", cfg, videos_per_shard=1, job_index=0, num_jobs=1)
    names = _members(tmp_path / "val-000000.tar")
    assert any(n.endswith(".frames.mp4") for n in names) and not any(n.endswith(".jpg") for n in names)


def test_plan_jobs_and_slurm_defaults(monkeypatch):
    assert [len(s) for s in shard_plan(list(range(7)), 3)] == [3, 3, 1]
    assert job_shards(7, 1, 3) == [1, 4]
    with pytest.raises(ValueError):
        job_shards(7, 3, 3)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert slurm_job() == (0, 1)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert slurm_job() == (2, 4)


def test_duplicate_source_ids_are_refused_before_writing(tmp_path, records):
    with pytest.raises(ValueError, match="1 duplicate source ids.*" + records[0].source_id):
        write_shards(records + records[:1], tmp_path / "out", "train", CFG)
    assert not list((tmp_path / "out").glob("*.tar"))


def test_launch_script_writes_then_skips(tmp_path, records):
    import subprocess
    import sys

    from tests.conftest import REPO

    root = records[0].path.parents[2]
    cmd = [sys.executable, str(REPO / "launch/prepare_data.py"), f"data.root={root}", "data.name=syn",
           f"paths.data={tmp_path}", "ingest.height=64", "ingest.width=96", "shards.videos_per_shard=3",
           "flow_options.classic.preset=ultrafast"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr
    assert "wrote 2 shards (5 samples, 0 errors)" in first.stdout
    assert (tmp_path / "shards/syn/train-000001.json").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert "wrote 0 shards" in again.stdout and "skipped 2 done" in again.stdout
