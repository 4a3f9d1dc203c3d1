"""Offline data prep: list videos -> ingest (24 fps, 16 kHz, motion score, keypoints) -> WebDataset shards,
plus one JSON record per clip under ``<out_dir>/records/<split>/`` (data_prep/records.py).

    python launch/prepare_data.py data.root=/data/AVSync15 data.layout=avsyncd data.name=avsync15 flow=classic
"""

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from data_prep.ingest import list_videos
from data_prep.shards import ShardConfig, write_shards


@hydra.main(config_path="../conf", config_name="prepare_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    records = list_videos(cfg.data.root, cfg.data.layout, cfg.data.split)
    shard_cfg = ShardConfig(
        flow=cfg.flow,
        flow_kwargs=OmegaConf.to_container(cfg.flow_options[cfg.flow]),
        ingest_kwargs=OmegaConf.to_container(cfg.ingest),
        frame_codec=cfg.shards.frame_codec,
        jpeg_quality=cfg.shards.jpeg_quality,
    )
    summary = write_shards(records, cfg.out_dir, cfg.data.split, shard_cfg,
                           videos_per_shard=cfg.shards.videos_per_shard, job_index=cfg.shards.job_index,
                           num_jobs=cfg.shards.num_jobs, workers=cfg.shards.workers)
    print(f"{len(records)} videos; job {summary['job_index']}/{summary['num_jobs']}: "
          f"wrote {len(summary['written'])} shards ({summary['samples']} samples, {summary['errors']} errors), "
          f"skipped {summary['skipped']} done")
    print(json.dumps({"urls": summary["urls"], "records": summary["records"]}))


if __name__ == "__main__":
    main()
