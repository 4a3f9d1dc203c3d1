import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.synthetic import ClipSpec, write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root / "synthetic", 3, seed=0, spec=ClipSpec(64, 96, 24.0, 2.0, 16000), test_fraction=1.0)
    gen = root / "generated"
    for rel in (data / "test.txt").read_text().split():  # the true clips stand in for generated ones
        for k in range(3):
            dst = gen / Path(rel).with_name(f"{Path(rel).stem}_clip-{k}.mp4")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(data / "videos" / rel, dst)
    return data, gen


def _run(*overrides):
    return subprocess.run([sys.executable, "launch/evaluate.py", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_scores_true_clips_with_every_metric(dataset, tmp_path):
    data, gen = dataset
    res = _run(f"generated={gen}", f"reference={data}", "dataset=synthetic", "weights.random_init=true",
               f"out_dir={tmp_path}", "num_plots=2")
    assert res.returncode == 0, res.stderr
    (row,) = _rows(tmp_path / "scores.csv")
    assert row["videos"] == "3" and row["clips"] == "9"
    assert abs(float(row["FID"])) < 1e-3 and abs(float(row["FVD"])) < 1e-3  # identical sets
    assert float(row["RelSync"]) == pytest.approx(50.0)  # ground truth against itself
    assert 0 < float(row["AlignSync"]) <= 50.0
    assert float(row["Sync-F1"]) >= 0.8 and float(row["Sync-R"]) >= 0.8
    assert 0 < float(row["AV-Align"]) <= 1 and 0.3 < float(row["AV-Align-events"]) <= 1  # real clips' own audio
    md = (tmp_path / "scores.md").read_text()
    assert "random weights" in md and "scored 9 of 9 expected clips (3 of 3 listed videos)" in md
    assert len(list((tmp_path / "plots").rglob("*.png"))) == 2
    assert len(_rows(tmp_path / f"per_clip_{gen.name}.csv")) == 9


def test_missing_clip_fails_unless_partial(dataset, tmp_path):
    data, gen = dataset
    partial = tmp_path / "gen"
    shutil.copytree(gen, partial)
    victim = sorted(partial.rglob("*_clip-1.mp4"))[0]
    victim.unlink()
    name = str(victim.relative_to(partial))
    (partial / "stray_clip-0.mp4").write_bytes(b"")
    res = _run(f"generated={partial}", f"reference={data}", "dataset=synthetic", f"out_dir={tmp_path / 'a'}",
               "metrics=[sync]")
    assert res.returncode != 0
    assert f"missing clip: {name}" in res.stderr and "extra file: stray_clip-0.mp4" in res.stderr
    res = _run(f"generated={partial}", f"reference={data}", "dataset=synthetic", f"out_dir={tmp_path / 'b'}",
               "allow_partial=true", "weights.inception=null", "weights.i3d=null")
    assert res.returncode == 0, res.stderr
    (row,) = _rows(tmp_path / "b" / "scores.csv")
    assert row["clips"] == "8" and row["videos"] == "3" and row["FID"] == ""
    md = (tmp_path / "b" / "scores.md").read_text()
    assert "FID skipped: weights.inception is not set" in md and "RelSync and AlignSync skipped" in md
    assert f"missing clip: {name}" in md and "scored 8 of 9 expected clips" in md


def test_sweep_scores_every_subfolder(dataset, tmp_path):
    data, gen = dataset
    for scale in ("4.0", "7.5"):
        job = tmp_path / "sweep" / scale
        shutil.copytree(gen, job)
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text(f"- guidance.audio={scale}\n")
    res = _run(f"generated={tmp_path / 'sweep'}", f"reference={data}", "dataset=synthetic", "sweep=true",
               "metrics=[sync]", f"out_dir={tmp_path / 'out'}")
    assert res.returncode == 0, res.stderr
    rows = _rows(tmp_path / "out" / "scores.csv")
    assert [r["run"] for r in rows] == ["guidance.audio=4.0", "guidance.audio=7.5"]
