"""launch/evaluate.py on the real clips of ../shared/media, scored against themselves (issue 8).

The reference is a temporary AVSyncD-layout folder linking the media files; the generated folder
holds each usable video's three protocol clips, written the ways a user's folder would have them:
48 frames at 24 fps (chopping), 12 frames at 6 fps (pancake, from an mkv source) and the 2 s,
48-frame media files themselves (landscape, snow). ``dog_running`` (1.1 s) is shorter than one clip.
"""

import csv
import math
import os

import numpy as np
import pytest

from keyvid.data.io import write_av
from keyvid.eval.protocol import reference_clips, spec_for
from tests.conftest import MEDIA, needs_media
from tests.launch.helpers import run_script

VIDEOS = {  # test.txt line -> media file
    "cooking/chopping.mp4": "chopping.mp4",
    "cooking/flipping_a_pancake.mkv": "flipping_a_pancake.mkv",  # Matroska + Opus, kept as it is
    "scenery/landscape_48f.mp4": "landscape_48f.mp4",
    "scenery/snow_48f.mp4": "snow_48f.mp4",
    "animals/dog_running.mp4": "dog_running.mp4",  # 1.1 s: no 2 s clip fits
}


def _write_clips(src, video, gen, mode):
    """The protocol's clips of ``src``, written as generated files (256x256, with their audio)."""
    for clip in reference_clips(src, spec_for("avsync15", mode), video):
        frames = (clip.frames.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        write_av(gen / clip.name, frames, 24.0 if mode == "frames48" else 6.0, clip.audio, clip.sample_rate)


@pytest.fixture(scope="module")
def media_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("media_eval")
    ref, gen = root / "reference", root / "generated"
    for video, name in VIDEOS.items():
        (ref / "videos" / video).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(MEDIA / name, ref / "videos" / video)
    (ref / "test.txt").write_text("\n".join(VIDEOS) + "\n")
    _write_clips(MEDIA / "chopping.mp4", "cooking/chopping.mp4", gen, "frames48")
    _write_clips(MEDIA / "flipping_a_pancake.mkv", "cooking/flipping_a_pancake.mkv", gen, "frames12")
    for name in ("landscape_48f", "snow_48f"):  # a 2 s video's three clips are the video itself
        (gen / "scenery").mkdir(parents=True, exist_ok=True)
        for k in range(3):
            os.symlink(MEDIA / f"{name}.mp4", gen / "scenery" / f"{name}_clip-{k}.mp4")
    return ref, gen


@pytest.mark.slow
@needs_media
def test_media_clips_against_themselves(media_folders, tmp_path):
    ref, gen = media_folders
    out = tmp_path / "eval"
    strict = run_script("evaluate.py", f"generated={gen}", f"reference={ref}", "dataset=avsync15",
                        "metrics=[sync]", f"out_dir={tmp_path / 'strict'}", check=False)
    assert strict.returncode == 1  # an unusable reference video fails the run unless partial is allowed
    assert "dog_running.mp4" in strict.stderr and "shorter than one 2.0 s clip" in strict.stderr

    run_script("evaluate.py", f"generated={gen}", f"reference={ref}", "dataset=avsync15",
               "weights.random_init=true", "allow_partial=true", f"out_dir={out}")
    with open(out / "scores.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["videos"] == "4" and row["clips"] == "12"
    for metric in ("FID", "FVD", "RelSync", "AlignSync"):
        assert math.isfinite(float(row[metric])), (metric, row)
    assert 0 < float(row["RelSync"]) < 100 and 0 < float(row["AlignSync"]) < 100
    md = (out / "scores.md").read_text()
    assert "animals/dog_running.mp4" in md and "shorter than one 2.0 s clip" in md
    assert "scored 12 of 12 expected clips (4 of 5 listed videos; 1 listed videos unusable)" in md
    assert "random weights" in md and "Sync score skipped" in md  # real clips have no impact times
    with open(out / f"per_clip_{gen.name}.csv") as f:
        assert len(list(csv.DictReader(f))) == 12
