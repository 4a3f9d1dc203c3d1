"""Issue 3, "Done when": killing the documented command midway and rerunning gives identical shards."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np

from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.io import write_av
from tests.conftest import REPO

NUM_SHARDS = 5  # 8 good clips + 2 broken ones, 2 videos per shard


def _dataset(root):
    """8 synthetic clips at 64x96 plus a no-audio clip (shard 0) and a zero-byte file (shard 3)."""
    write_dataset(root, 8, seed=11, spec=ClipSpec(64, 96, 24.0, 2.0, 16000), test_fraction=0)
    good = (root / "train.txt").read_text().split()
    write_av(root / "videos/calm/silent.mp4", np.zeros((48, 64, 96, 3), np.uint8), 24.0)
    (root / "videos/calm/empty.mp4").write_bytes(b"")
    order = good[:1] + ["calm/silent.mp4"] + good[1:6] + ["calm/empty.mp4"] + good[6:]
    (root / "train.txt").write_text("\n".join(order) + "\n")
    return good


def _command(root, data_dir):
    return [sys.executable, str(REPO / "launch/prepare_data.py"), f"data.root={root}", "data.name=syn",
            f"paths.data={data_dir}", "ingest.height=64", "ingest.width=96", "shards.videos_per_shard=2",
            "shards.workers=2", "flow_options.classic.preset=ultrafast"]


def _run_and_kill(cmd, first_sidecar, timeout=120.0):
    """Start ``cmd`` in its own process group; SIGKILL the whole group once ``first_sidecar`` exists."""
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not first_sidecar.exists():
            if proc.poll() is not None:
                raise AssertionError(f"finished before its first shard was seen:\n{proc.stdout.read().decode()}")
            if time.monotonic() > deadline:
                raise AssertionError("no shard written within the timeout")
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the main process and its spawned flow workers
        proc.wait()
        proc.stdout.close()


def _tar_contents(path):
    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def _sidecar(path):
    side = json.loads(path.read_text())
    side.pop("elapsed_s")
    return side


def test_kill_and_rerun_gives_identical_shards(tmp_path):
    root = tmp_path / "syn"
    good = _dataset(root)
    ref = subprocess.run(_command(root, tmp_path / "ref"), cwd=REPO, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    assert "wrote 5 shards (8 samples, 2 errors)" in ref.stdout

    shards = tmp_path / "run/shards/syn"
    _run_and_kill(_command(root, tmp_path / "run"), shards / "train-000000.json")
    done = sorted(p.name for p in shards.glob("train-*.json"))
    assert len(done) < NUM_SHARDS, f"the job finished before the kill ({done}): nothing was interrupted"
    again = subprocess.run(_command(root, tmp_path / "run"), cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"skipped {len(done)} done" in again.stdout

    ref_dir = tmp_path / "ref/shards/syn"
    names = [f"train-{s:06d}" for s in range(NUM_SHARDS)]
    assert sorted(p.name for p in shards.glob("*.tar")) == [f"{n}.tar" for n in names]
    assert not list(shards.rglob("*.tmp"))
    for n in names:
        assert (shards / f"{n}.tar").read_bytes() == (ref_dir / f"{n}.tar").read_bytes(), n
        assert _sidecar(shards / f"{n}.json") == _sidecar(ref_dir / f"{n}.json"), n
    # the errors manifest holds each bad file once, as in the uninterrupted run
    errors = (shards / "errors-train-0.jsonl").read_text().splitlines()
    assert sorted(errors) == sorted((ref_dir / "errors-train-0.jsonl").read_text().splitlines())
    reasons = {json.loads(e)["path"].rsplit("/", 1)[-1]: json.loads(e)["reason"] for e in errors}
    assert set(reasons) == {"silent.mp4", "empty.mp4"} and "no audio" in reasons["silent.mp4"]

    # every good clip is in a shard, and has its per-clip record (identical to the reference run's)
    keys = {name.split(".", 1)[0] for n in names for name, _ in _tar_contents(shards / f"{n}.tar")}
    assert len(keys) == len(good) == 8
    for rel in good:
        source_id = rel.removesuffix(".mp4")
        rec = shards / "records/train" / f"{source_id}.json"
        assert rec.read_bytes() == (ref_dir / "records/train" / f"{source_id}.json").read_bytes()
        assert json.loads(rec.read_text())["windows"][0]["key"] in keys
    assert sorted(p.relative_to(shards) for p in (shards / "records").rglob("*.json")) == \
        sorted(p.relative_to(ref_dir) for p in (ref_dir / "records").rglob("*.json"))


def test_rewritten_shard_replaces_its_error_lines(tmp_path):
    # a kill after the errors were written but before the sidecar: the rerun must not list them twice
    from data_prep.ingest import VideoRecord
    from data_prep.shards import ShardConfig, write_shards

    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "b.mp4").write_bytes(b"not a video")
    recs = [VideoRecord(tmp_path / n, "", n, "") for n in ["a.mp4", "b.mp4"]]
    out, cfg = tmp_path / "out", ShardConfig()
    write_shards(recs, out, "train", cfg, videos_per_shard=1, job_index=0, num_jobs=1)
    first = (out / "errors-train-0.jsonl").read_text()
    (out / "train-000000.json").unlink()
    summary = write_shards(recs, out, "train", cfg, videos_per_shard=1, job_index=0, num_jobs=1)
    assert summary["written"] == ["train-000000"]
    lines = (out / "errors-train-0.jsonl").read_text().splitlines()
    assert sorted(lines) == sorted(first.splitlines()) and len(lines) == 2
