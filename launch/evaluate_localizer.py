"""Localizer evaluation: AP@t against optical-flow keypoints, onsets against known impacts.

    python launch/evaluate_localizer.py checkpoint=runs/localizer/export data.root=data/synthetic
"""

import json
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from data_prep.ingest import Rejected, build_flow_backend, ingest_video, list_videos
from keyvid.eval.ap import average_precision_from_curves, curve_peaks, onset_scores
from keyvid.localize import load_localizer, localize


@hydra.main(config_path="../conf", config_name="evaluate_localizer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    model = load_localizer(cfg.checkpoint, cfg.device)
    flow = build_flow_backend("classic")
    preds, trues, impacts, rejected = [], [], [], []
    for record in list_videos(cfg.data.root, cfg.data.layout, cfg.data.split):
        try:
            samples = ingest_video(record, flow, height=cfg.height, width=cfg.width, windows=cfg.windows)
        except Rejected as err:
            rejected.append({"path": str(record.path), "reason": str(err)})
            continue
        for s in samples:
            result = localize(model, torch.from_numpy(s.audio)[None], 16000)
            preds.append(result.motion)
            trues.append(s.motion)
            if "impact_times" in s.meta:
                impacts.append((result.motion, s.meta["impact_times"]))
    if not preds:
        raise SystemExit(f"no clip of {cfg.data.root} ({cfg.data.split}) could be scored: {rejected}")
    ap = average_precision_from_curves(np.stack(preds), np.stack(trues))
    report = {"clips": len(preds), "rejected": rejected, "ap": {f"AP@{t}": round(100 * v, 2) for t, v in ap.ap.items()},
              "ap_clips": ap.num_clips, "ap_skipped_no_true_keypoint": ap.num_skipped}
    if impacts:
        onsets = onset_scores([curve_peaks(m, prominence=0.1) for m, _ in impacts], [t for _, t in impacts],
                              tolerance=cfg.tolerance)
        report["onsets"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(onsets).items()}
    text = json.dumps(report, indent=1)
    if cfg.out:
        Path(cfg.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
