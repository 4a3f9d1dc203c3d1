import json

import numpy as np
import pytest
import torch

from keyvid.localize import localize
from keyvid.models.builders import localizer
from tests.conftest import MEDIA, needs_media
from tests.launch.helpers import run_script


def test_localize_shapes_and_silence():
    torch.manual_seed(0)
    model = localizer("tiny").eval()
    r = localize(model, torch.zeros(1, 16000), 16000)  # 1 s of silence: padded, finite
    assert r.motion.shape == (48,) and np.isfinite(r.motion).all()
    assert len(r.keyframes) == 12 and r.keyframes[0] == 0 and np.all(np.diff(r.keyframes) > 0)
    with pytest.raises(ValueError, match="past the end"):
        localize(model, torch.zeros(1, 16000), 16000, start_s=3.0)


@needs_media
def test_localize_command_on_real_audio(tmp_path):
    out = tmp_path / "k.json"
    run_script("localize.py", f"audio={MEDIA / 'machine_gun_shooting.wav'}", "checkpoint=tiny", "start_s=1.0",
               f"out={out}")
    record = json.loads(out.read_text())
    assert len(record["motion_score"]) == 48 and len(record["keyframes"]) == 12


@needs_media
def test_localize_command_rejects_non_audio(tmp_path):
    p = run_script("localize.py", f"audio={MEDIA / 'lion_and_gun.png'}", "checkpoint=tiny", check=False)
    assert p.returncode != 0 and "lion_and_gun.png" in p.stdout + p.stderr


def test_evaluate_localizer_reports_ap_and_onsets(tmp_path):
    from data_prep.synthetic import ClipSpec, write_dataset

    root = write_dataset(tmp_path / "syn", num_clips=4, seed=5, spec=ClipSpec(64, 96), test_fraction=0.5)
    (root / "videos" / "bouncing_ball" / "broken.mp4").write_bytes(b"")
    with open(root / "test.txt", "a") as f:
        f.write("bouncing_ball/broken.mp4\n")
    out = tmp_path / "report.json"
    run_script("evaluate_localizer.py", "checkpoint=tiny", f"data.root={root}", "data.split=test", "height=64",
               "width=96", f"out={out}")
    report = json.loads(out.read_text())
    assert report["clips"] == 2 and set(report["ap"]) == {"AP@2", "AP@3", "AP@5"}
    assert [r["path"].endswith("broken.mp4") for r in report["rejected"]] == [True]
    assert "onsets" in report and report["onsets"]["num_true"] >= 1
