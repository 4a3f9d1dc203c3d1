"""The CPU-sized keyframe-vs-uniform reproduction (launch/recipes/keyframe_vs_uniform.sh SCALE=smoke):
the whole recipe runs, every stage leaves what the next one needs, the summary has both systems
beside the ceiling and chance rows, and a rerun skips every finished stage (the recipe resumes
across commands). One seed: the summary's per-seed statistics are the same code for any count. And
the overfit mode's plumbing (test clips = training clips, keyframe system only)."""

import json
import shutil
import subprocess
import sys
import time

import pytest

from keyvid.data.io import read_av
from tests.launch.helpers import REPO, env


def _recipe(out, timeout=900, **extra):
    e = dict(env(), SCALE="smoke", SEEDS="0", PARALLEL="2", PYTHON=sys.executable, CPUS="2", N_TRAIN="6", N_TEST="3")
    e.update(extra)
    t0 = time.perf_counter()
    p = subprocess.run(["bash", str(REPO / "launch/recipes/keyframe_vs_uniform.sh"), str(out)], cwd=REPO, env=e,
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout, time.perf_counter() - t0


@pytest.mark.slow
def test_smoke_recipe_end_to_end_and_resume(tmp_path):
    out = tmp_path / "kvu"
    stdout, first = _recipe(out)
    summary = json.loads((out / "summary.json").read_text())
    for sampling in ("keyframe", "uniform"):
        assert sorted(summary["by_sampling"][sampling]["Sync-F1"]["per_seed"]) == ["0"]
        for seed in ("0",):
            assert summary["clips_per_run"][f"{sampling}_s{seed}"] == 3
            record = json.loads(next((out / "generated" / f"{sampling}_s{seed}").rglob("*.keyframes.json")).read_text())
            assert record["keyframe_mode"] == ("localizer" if sampling == "keyframe" else "uniform")
            assert len(record["keyframes"]) == 12
    # the uniform system's keyframes are the fixed grid, the keyframe system's come from its localizer
    uniform = json.loads(next((out / "generated/uniform_s0").rglob("*.keyframes.json")).read_text())
    assert uniform["keyframes"] == list(range(0, 48, 4))
    assert summary["clips_per_run"]["ground_truth"] == summary["clips_per_run"]["mismatched"] == 3
    assert summary["clips_per_run"]["vae_round_trip"] == 3
    assert set(summary["localizer_ap"]) == {"0"} and "AP@3" in summary["localizer_ap"]["0"]
    assert summary["paired_keyframe_minus_uniform"]["Sync-P"]["clips"] > 0
    # the diagnostics stand beside every row; the round trip reproduces frame 0 far better than chance
    for run in ("keyframe_s0", "uniform_s0", "vae_round_trip", "mismatched"):
        assert {"PSNR-0", "Flicker", "clip_F1"} <= set(summary["intervals"][run]), run
    assert summary["intervals"]["vae_round_trip"]["PSNR-0"] > summary["intervals"]["mismatched"]["PSNR-0"] + 5
    video = read_av(next((out / "generated/keyframe_s0").rglob("*.mp4")), require_audio=True)
    assert video.frames.shape[0] == 48 and video.fps == 24 and video.audio.shape[-1] > 0
    assert (out / "summary.png").stat().st_size > 0 and "| keyframe | 1 |" in (out / "summary.md").read_text()
    assert "training done" in stdout
    # rerun: nothing is retrained or regenerated
    exports = {p: p.stat().st_mtime_ns for p in out.glob("runs/s*/**/export/**/*.safetensors")}
    videos = {p: p.stat().st_mtime_ns for p in out.glob("generated/*_s*/**/*.mp4")}
    assert len(exports) >= 1 + 4 and len(videos) == 6
    stdout2, second = _recipe(out)
    assert "generated" not in stdout2.replace("generated/", "")  # no "generated <dir>" log line
    assert {p: p.stat().st_mtime_ns for p in exports} == exports
    assert {p: p.stat().st_mtime_ns for p in videos} == videos
    assert second < first / 2


@pytest.mark.slow
def test_smoke_overfit_mode_scores_the_training_clips(tmp_path):
    out = tmp_path / "overfit"
    _recipe(out, MODE="overfit", N_TRAIN="3")
    train = (out / "data/train/train.txt").read_text().split()
    test = (out / "data/test/test.txt").read_text().split()
    assert sorted(train) == sorted(test) and len(test) == 3  # the test clips are the training clips
    for rel in test:
        assert (out / "data/train/videos" / rel).read_bytes() == (out / "data/test/videos" / rel).read_bytes()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["by_sampling"]) == {"keyframe", "vae_round_trip", "ground_truth", "mismatched"}
    assert summary["clips_per_run"]["keyframe_s0"] == 3 and not (out / "runs/s0/uniform").exists()
    # The same run in two parts on two "machines": the keyframes part, then the videos part in a fresh
    # folder that gets only keyframes/ and the localizer's AP from the first: the same videos.
    first, second = tmp_path / "part1", tmp_path / "part2"
    stdout, _ = _recipe(first, MODE="overfit", N_TRAIN="3", PART="keyframes")
    assert "PART=keyframes done" in stdout and not (first / "runs/s0/keyframe/interpolator").exists()
    assert not (first / "generated").exists()
    assert len(list((first / "keyframes/keyframe_s0").rglob("*.keyframes.pt"))) == 3
    (second / "eval").mkdir(parents=True)
    shutil.copytree(first / "keyframes", second / "keyframes")
    shutil.copy(first / "eval/localizer_s0.json", second / "eval")
    _recipe(second, MODE="overfit", N_TRAIN="3", PART="videos")
    assert not (second / "runs/s0/localizer").exists() and not (second / "runs/s0/keyframe/generator").exists()
    for video in (out / "generated/keyframe_s0").rglob("*.mp4"):
        again = second / "generated/keyframe_s0" / video.relative_to(out / "generated/keyframe_s0")
        assert (read_av(again, require_audio=False).frames == read_av(video, require_audio=False).frames).all()
    assert json.loads((second / "summary.json").read_text())["localizer_ap"] == summary["localizer_ap"]
