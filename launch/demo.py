"""End-to-end demo on synthetic clips (CPU, a few minutes). Each stage runs the project's own job
(the command is printed), so the demo doubles as a walk-through of the pipeline.

    python launch/demo.py out_dir=demo_out
"""

import json
import subprocess
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from data_prep.ingest import list_videos
from data_prep.shards import ShardConfig, write_shards
from data_prep.synthetic import ClipSpec, write_dataset
from keyvid.data.io import read_av, write_av
from keyvid.data.keyframes import detect_keypoints, select_keyframes
from keyvid.data.motion import motion_score
from keyvid.visualize import contact_sheet, save_rgb

LAUNCH = Path(__file__).resolve().parent


def job(script: str, *overrides: str) -> None:
    cmd = [sys.executable, str(LAUNCH / script), *overrides]
    print("  $ " + " ".join(cmd[1:]), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{script} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("step", "resumed", "scored", "|"))]
    print("\n".join("    " + ln for ln in lines[-4:]), flush=True)


def keyframes_from_flow(cfg, data: Path, out: Path) -> None:
    report = {}
    for rel in sorted((data / "train.txt").read_text().split() + (data / "test.txt").read_text().split()):
        clip = read_av(data / "videos" / rel, require_audio=True)
        truth = json.loads((data / "videos" / rel).with_suffix(".json").read_text())
        score = motion_score(clip.frames)
        kp = detect_keypoints(score, normalize=cfg.keyframes.normalize)
        idx = select_keyframes(kp, cfg.keyframes.num_keyframes, rng=cfg.seed, mode=cfg.keyframes.mode)
        name = Path(rel).stem
        save_rgb(out / "keyframes" / f"{name}.png", contact_sheet(clip.frames, idx, score))
        report[name] = {"impact_frames": [round(t * clip.fps, 1) for t in truth["impact_times"]],
                        "peaks": kp.peaks.tolist(), "keyframes": idx.tolist()}
        print(f"  {name:28s} impacts at frames {report[name]['impact_frames']}, flow peaks {kp.peaks.tolist()}")
    (out / "keyframes.json").write_text(json.dumps(report, indent=1))


def generate_test_videos(cfg, data: Path, runs: Path, out: Path) -> None:
    """Assemble a pipeline from the three exports, then one video per test clip, named as the
    evaluation protocol expects (<class>/<name>_clip-0.mp4) with the input audio muxed in."""
    from keyvid.models.audio_frontend import load_audio
    from keyvid.data import FPS
    from keyvid.pipeline import KeyVIDPipeline
    from keyvid.models.io import tiny_encoders

    pipe = KeyVIDPipeline.from_exports(runs / "localizer" / "export", runs / "generator" / "export",
                                       runs / "interpolator" / "export", tiny_encoders(),
                                       height=32, width=48)
    pipe.save_pretrained(out / "pipeline")
    for rel in (data / "test.txt").read_text().split()[: cfg.generate.num_videos]:
        src = data / "videos" / rel
        clip = read_av(src, require_audio=True)
        wave, sr = load_audio(src)
        result = pipe(clip.frames[0], wave.numpy(), sr, steps=cfg.generate.steps, seed=cfg.seed)
        dst = out / "generated" / rel.replace(".mp4", "_clip-0.mp4")
        write_av(dst, result.frames[0], FPS, audio=wave.numpy()[:1, : 2 * sr], sample_rate=sr)
        print(f"  {dst.relative_to(out)}: keyframes {result.keyframes[0].tolist()}")


@hydra.main(config_path="../conf", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out = Path(cfg.out_dir).absolute()
    s = cfg.synthetic
    spec = ClipSpec(s.height, s.width, s.fps, s.duration, s.sample_rate)
    data = write_dataset(out / "synthetic", s.num_clips, cfg.seed, spec)
    print(f"[1/6] synthetic clips with known impacts: {data}")
    print("[2/6] optical-flow motion scores -> peaks -> keyframes (Algorithm 1)")
    keyframes_from_flow(cfg, data, out)
    print("[3/6] WebDataset shards")
    summary = write_shards(list_videos(data, "avsyncd", "train"), out / "shards", "train",
                           ShardConfig(ingest_kwargs={"height": s.height, "width": s.width}), videos_per_shard=3)
    shards = f"data.train_shards='{summary['urls']}'"
    print(f"  {summary['samples']} samples in {summary['num_shards']} shards, {summary['errors']} errors")
    runs = out / "runs"
    print("[4/6] training (tiny models, a few steps each)")
    for name, steps in cfg.train_steps.items():
        job(f"train_{name}.py", "debug=tiny", shards, f"run_dir={runs / name}", f"train.max_steps={steps}",
            f"train.save_every={steps}", f"train.log_every={max(1, steps // 4)}")
    print("[5/6] generation: audio -> localizer keyframes -> generator -> interpolator (FreeNoise) -> mp4")
    generate_test_videos(cfg, data, runs, out)
    print("[6/6] evaluation: motion peaks of the generated videos against the true impact times")
    job("evaluate.py", f"generated={out / 'generated'}", f"reference={data}", "dataset=synthetic",
        "metrics=[sync,av_align,fidelity]", "mode=frames48", "num_clips=1", "allow_partial=true", f"out_dir={out / 'eval'}")
    print((out / "eval" / "scores.md").read_text())
    print(f"done: {out} (keyframes/*.png, generated/, pipeline/, eval/)")


if __name__ == "__main__":
    main()
