"""Keyframe vs uniform summary of a ``keyframe_vs_uniform.sh`` run directory.

    python launch/recipes/summarize_keyframe_vs_uniform.py OUT_DIR

Reads ``OUT_DIR/eval/scores.csv`` (one row per generated folder ``<sampling>_s<seed>``, plus
``ground_truth``) and the per-clip CSVs beside it; writes ``OUT_DIR/summary.{md,json,png}``:

* per sampling, the sync precision / recall / F1 / mean |offset| pooled over each seed's test clips,
  then mean ± sample standard deviation over seeds (and every seed's value);
* paired per-clip differences (keyframe minus uniform, same seed and test clip): mean with a 95 %
  bootstrap interval over clips, and how many clips each way — the seeds' spread alone is a weak
  test with three seeds;
* per run, beside the ceiling (``vae_round_trip``: the real clips through the same VAE) and chance
  (``mismatched``): the mean per-clip Sync-F1, frame-0 PSNR and flicker ratio with 95 % bootstrap
  intervals over clips, and the pooled Sync-F1 as a fraction of the round trip's.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from keyvid.eval.bootstrap import mean_interval
from keyvid.eval.fidelity import pooled_fidelity

SYNC_METRICS = ("Sync-P", "Sync-R", "Sync-F1", "Sync-offset")
METRICS = SYNC_METRICS + ("PSNR-0", "Flicker")
# ground_truth / mismatched: the test videos with their own / the next clip's audio; vae_round_trip: the
# test videos through the pipeline's VAE (the ceiling)
ROWS = ("keyframe", "uniform", "vae_round_trip", "ground_truth", "mismatched")
RUN = re.compile(r"^(?P<sampling>[a-z_]+)_s(?P<seed>\d+)$")


def _float(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def paired(eval_dir: Path, seeds: list[str], metric: str) -> dict:
    diffs = []
    for seed in seeds:
        a, b = (eval_dir / f"per_clip_{s}_s{seed}.csv" for s in ("keyframe", "uniform"))
        if not (a.is_file() and b.is_file()):
            continue
        ub = {r["clip"]: _float(r[metric]) for r in read_csv(b)}
        for r in read_csv(a):
            x, y = _float(r[metric]), ub.get(r["clip"], math.nan)
            if not (math.isnan(x) or math.isnan(y)):
                diffs.append(x - y)
    d = np.asarray(diffs)
    if d.size == 0:
        return {"clips": 0}
    better = d < 0 if metric == "Sync-offset" else d > 0  # a smaller offset is better
    return {"clips": int(d.size), "mean": float(d.mean()),
            "ci95": list(mean_interval(d)), "keyframe_better": int(better.sum()),
            "uniform_better": int(((d != 0) & ~better).sum()), "ties": int((d == 0).sum())}


def clip_intervals(eval_dir: Path, run: str, seed: int = 0, draws: int = 2000) -> dict:
    """95 % bootstrap intervals over the run's clips: mean per-clip Sync-F1, frame-0 PSNR, flicker ratio."""
    path = eval_dir / f"per_clip_{run}.csv"
    if not path.is_file():
        return {}
    rows = read_csv(path)
    out = {}
    f1 = np.array([_float(r.get("Sync-F1")) for r in rows])
    f1 = f1[~np.isnan(f1)]
    if f1.size:
        out["clip_F1"] = float(f1.mean())
        out["clip_F1_ci95"] = list(mean_interval(f1, draws, seed))
    fid = [{k: _float(r[k]) for k in ("PSNR-0", "flicker", "flicker_ref")} for r in rows if r.get("PSNR-0")]
    if fid:
        out.update(pooled_fidelity(fid, seed, draws))
    traj = eval_dir.parent / "eval_trajectory" / path.name  # the trajectory diagnostic, impact clips only
    if traj.is_file():
        f1 = np.array([_float(r.get("Sync-F1")) for r in read_csv(traj) if not r["clip"].startswith("calm/")])
        f1 = f1[~np.isnan(f1)]
        if f1.size:
            out["traj_F1"], out["traj_F1_ci95"] = float(f1.mean()), list(mean_interval(f1, draws, seed))
    return out


def plot(summary: dict, path: Path) -> None:
    """One panel per metric: every seed's value as a dot, the mean as a bar, per sampling."""
    names = [n for n in ROWS if n in summary["by_sampling"]]
    colors = {"keyframe": (40, 120, 230), "uniform": (200, 120, 40), "vae_round_trip": (60, 160, 60),
              "ground_truth": (90, 90, 90), "mismatched": (160, 160, 160)}
    panel_w, h, pad = 340, 300, 40
    img = np.full((h + 60, panel_w * 3 + pad, 3), 255, np.uint8)
    for k, metric in enumerate(("Sync-P", "Sync-R", "Sync-F1")):
        x0 = pad + k * panel_w
        cv2.putText(img, metric, (x0 + 70, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        for v in (0.0, 0.5, 1.0):
            y = int(40 + (1 - v) * (h - 60))
            cv2.line(img, (x0, y), (x0 + panel_w - 30, y), (220, 220, 220), 1)
            cv2.putText(img, f"{v:.1f}", (x0 - 32, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        for i, name in enumerate(names):
            entry = summary["by_sampling"][name][metric]
            cx = x0 + 30 + i * 75
            if not math.isnan(entry["mean"]):
                y = int(40 + (1 - entry["mean"]) * (h - 60))
                cv2.rectangle(img, (cx - 18, y), (cx + 18, h - 20), colors[name], 1)
            for v in entry["per_seed"].values():
                if not math.isnan(v):
                    cv2.circle(img, (cx, int(40 + (1 - v) * (h - 60))), 4, colors[name], -1, cv2.LINE_AA)
            label = {"ground_truth": "truth", "mismatched": "chance", "vae_round_trip": "VAE"}.get(name, name)
            cv2.putText(img, label[:8], (cx - 28, h + 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.imwrite(str(path), img)


def summarize(out: Path) -> dict:
    eval_dir = out / "eval"
    rows = read_csv(eval_dir / "scores.csv")
    by = defaultdict(lambda: {m: {"per_seed": {}} for m in METRICS})
    clips = {}
    for row in rows:
        m = RUN.match(row["run"])
        sampling, seed = (m["sampling"], m["seed"]) if m else (row["run"], "-")
        clips[row["run"]] = int(row["clips"] or 0)
        for metric in METRICS:
            by[sampling][metric]["per_seed"][seed] = _float(row.get(metric))
    for entry in by.values():
        for metric in METRICS:
            entry[metric]["mean"], entry[metric]["std"] = mean_std(list(entry[metric]["per_seed"].values()))
    seeds = sorted(by.get("keyframe", {}).get("Sync-F1", {}).get("per_seed", {}), key=int)
    summary = {"by_sampling": by, "clips_per_run": clips, "seeds": seeds,
               "paired_keyframe_minus_uniform": {m: paired(eval_dir, seeds, m) for m in SYNC_METRICS},
               "intervals": {row["run"]: clip_intervals(eval_dir, row["run"].replace("/", "_")) for row in rows}}
    ceiling = {r["run"]: _float(r.get("Sync-F1")) for r in rows}.get("vae_round_trip", math.nan)
    # NaN when the ceiling is 0 (a smoke run's three tiny clips can have no detected event at all)
    summary["f1_over_round_trip"] = {r["run"]: _float(r.get("Sync-F1")) / ceiling if ceiling else math.nan
                                     for r in rows}
    summary["localizer_ap"] = {f.stem.split("_s")[-1]: json.loads(f.read_text())["ap"]
                               for f in sorted(eval_dir.glob("localizer_s*.json"))}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    plot(summary, out / "summary.png")
    return summary


def _fmt(entry: dict, digits: int) -> str:
    if math.isnan(entry["mean"]):
        return "n/a"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["| sampling | seeds | Sync-P ↑ | Sync-R ↑ | Sync-F1 ↑ | mean abs offset (frames) ↓ | frame-0 PSNR (dB) ↑ "
             "| flicker ratio | F1 per seed |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ROWS:
        if name not in summary["by_sampling"]:
            continue
        e = summary["by_sampling"][name]
        per_seed = ", ".join(f"{v:.3f}" for v in e["Sync-F1"]["per_seed"].values())
        lines.append(f"| {name} | {len(e['Sync-F1']['per_seed'])} | {_fmt(e['Sync-P'], 3)} | {_fmt(e['Sync-R'], 3)} | "
                     f"{_fmt(e['Sync-F1'], 3)} | {_fmt(e['Sync-offset'], 2)} | {_fmt(e['PSNR-0'], 2)} | "
                     f"{_fmt(e['Flicker'], 2)} | {per_seed} |")
    lines += ["", "Per run, 95 % bootstrap intervals over clips (ceiling: vae_round_trip; chance: mismatched):", "",
              "| run | Sync-F1 / round trip's | per-clip Sync-F1 | frame-0 PSNR (dB) | flicker ratio "
              "| trajectory Sync-F1, impact clips |", "|---|---|---|---|---|---|"]

    def ci(iv: dict, key: str, digits: int) -> str:
        if key not in iv:
            return "n/a"
        lo, hi = iv[f"{key}_ci95"]
        return f"{iv[key]:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"

    for run, iv in summary.get("intervals", {}).items():
        frac = summary.get("f1_over_round_trip", {}).get(run, math.nan)
        lines.append(f"| {run} | {'n/a' if math.isnan(frac) else f'{frac:.2f}'} | {ci(iv, 'clip_F1', 3)} | "
                     f"{ci(iv, 'PSNR-0', 2)} | {ci(iv, 'Flicker', 2)} | {ci(iv, 'traj_F1', 3)} |")
    if summary.get("localizer_ap"):
        lines += ["", "Localizer on the test clips (AP@t against their flow keyframes), per seed: " + "; ".join(
            f"s{seed} " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in ap.items())
            for seed, ap in summary["localizer_ap"].items())]
    if "uniform" not in summary["by_sampling"]:  # the overfit mode trains the keyframe system only
        return "\n".join(lines) + "\n"
    lines += ["", "Paired per clip (keyframe - uniform, same seed and test clip; 95 % bootstrap interval):", ""]
    for metric, p in summary["paired_keyframe_minus_uniform"].items():
        if p["clips"]:
            lines.append(f"- {metric}: {p['mean']:+.3f} [{p['ci95'][0]:+.3f}, {p['ci95'][1]:+.3f}] over {p['clips']} "
                         f"clips; keyframe better on {p['keyframe_better']}, uniform on {p['uniform_better']}, "
                         f"{p['ties']} ties")
        else:
            lines.append(f"- {metric}: no clip where both are defined")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: summarize_keyframe_vs_uniform.py OUT_DIR")
    print(markdown(summarize(Path(sys.argv[1]))))
