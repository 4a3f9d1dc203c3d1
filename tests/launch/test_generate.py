"""launch/generate.py with the tiny random pipeline: files written, a multirun sweep, bad inputs."""

import json
import os
import subprocess
import sys

import av
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import MEDIA, REPO, needs_media

sys.path.insert(0, str(REPO / "launch"))
import generate  # noqa: E402

IMAGE = MEDIA / "lion_and_gun.png"
AUDIO = MEDIA / "machine_gun_shooting.wav"


def _cfg(*overrides):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="generate", overrides=["pipeline=tiny", "steps=1", *overrides])


@needs_media
def test_single_pair_writes_video_json_png(tmp_path):
    cfg = _cfg(f"image={IMAGE}", f"audio={AUDIO}", "text=a lion", "steps=2")
    (video,) = generate.run(cfg, tmp_path)
    with av.open(str(video)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert sum(1 for _ in c.decode(v)) == 48
        assert v.average_rate == 24
        assert a.rate == 44100 and a.channels == 2
    with av.open(str(video)) as c:
        samples = sum(f.samples for f in c.decode(audio=0))
    assert abs(samples / 44100 - 2.0) < 0.05  # the first 2 s of the input audio
    record = json.loads(video.with_name(video.stem + ".keyframes.json").read_text())
    assert len(record["keyframes"]) == 12 and len(record["motion"]) == 48
    assert record["keyframe_mode"] == "localizer" and record["text"] == "a lion"
    assert video.with_name(video.stem + ".keyframes.png").stat().st_size > 0
    assert (tmp_path / "config.yaml").is_file()


@needs_media
def test_multirun_sweep_one_folder_per_setting(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(REPO / "launch" / "generate.py"), "-m", "pipeline=tiny", "steps=1",
           f"image={IMAGE}", f"audio={AUDIO}", f"out_dir={tmp_path}", "scales.aud=4,7.5"]
    subprocess.run(cmd, check=True, cwd=REPO, env=env, capture_output=True, timeout=300)
    folders = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert folders == ["scales.aud=4,steps=1", "scales.aud=7.5,steps=1"]
    for name, aud in zip(folders, (4.0, 7.5)):
        assert (tmp_path / "sweep" / name / "lion_and_gun__machine_gun_shooting.mp4").is_file()
        assert OmegaConf.load(tmp_path / "sweep" / name / "config.yaml").scales.aud == aud


@needs_media
def test_bad_inputs_name_the_file(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match="missing.png"):
        generate.run(_cfg(f"image={missing}", f"audio={AUDIO}"), tmp_path)
    with pytest.raises(ValueError, match="lion_and_gun.png"):  # an image given as the audio
        generate.run(_cfg(f"image={IMAGE}", f"audio={IMAGE}"), tmp_path)
    with pytest.raises(ValueError, match="image=<path> and audio=<path>"):
        generate.run(_cfg(f"image={IMAGE}"), tmp_path)


def test_list_and_folder_inputs(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.wav").write_bytes(b"")
    (tmp_path / "a.txt").write_text("a dog\n")
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "b.mp3").write_bytes(b"")
    pairs = generate.setup_inputs(_cfg(f"inputs={tmp_path}"))
    assert [(p.name, p.audio.name, p.text) for p in pairs] == [("a", "a.wav", "a dog"), ("b", "b.mp3", None)]
    listing = tmp_path / "pairs.txt"
    listing.write_text("# image audio text\na.png a.wav a barking dog\nb.jpg b.mp3\n")
    pairs = generate.setup_inputs(_cfg(f"inputs={listing}"))
    assert [(p.image, p.text) for p in pairs] == [(tmp_path / "a.png", "a barking dog"), (tmp_path / "b.jpg", None)]
    (tmp_path / "c.png").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="c.png"):
        generate.setup_inputs(_cfg(f"inputs={tmp_path}"))


@pytest.mark.slow
def test_dataset_split_input_names_outputs_for_the_evaluator(tmp_path):
    """dataset=<root>: first frame + audio of each listed clip -> <class>/<name>_clip-0.mp4."""
    from data_prep.synthetic import ClipSpec, write_dataset
    from keyvid.data.io import read_av

    root = write_dataset(tmp_path / "data", 2, seed=3, spec=ClipSpec(16, 24), test_fraction=1.0)
    listed = (root / "test.txt").read_text().split()
    cfg = _cfg(f"dataset={root}", "keyframes=uniform", "batch_size=2")
    videos = generate.run(cfg, tmp_path / "out")
    assert sorted(str(v.relative_to(tmp_path / "out")) for v in videos) == sorted(
        rel.replace(".mp4", "_clip-0.mp4") for rel in listed)
    clip = read_av(videos[0], require_audio=True)
    assert clip.frames.shape[0] == 48 and clip.fps == 24
    # Each clip's text is the caption training saw (its class name, data prep's class_caption), not the
    # null text; text= overrides it. Both are recorded beside the video.
    records = {json.loads(p.read_text())["text"] for p in (tmp_path / "out").rglob("*.keyframes.json")}
    assert records == {rel.split("/")[0].replace("_", " ") for rel in listed}
    assert {p.text for p in generate.setup_inputs(_cfg(f"dataset={root}", "text=''"))} == {""}
    # round_trip=true: the clips through the pipeline's VAE, same names, nothing sampled
    trips = generate.run(_cfg(f"dataset={root}", "round_trip=true"), tmp_path / "trip")
    assert sorted(str(v.relative_to(tmp_path / "trip")) for v in trips) == sorted(
        rel.replace(".mp4", "_clip-0.mp4") for rel in listed)
    assert read_av(trips[0], require_audio=True).frames.shape[0] == 48
    with pytest.raises(ValueError, match="round_trip=true needs dataset="):
        generate.run(_cfg(f"image={videos[0]}", f"audio={videos[0]}", "round_trip=true"), tmp_path / "bad")
    (root / "test.txt").write_text("calm/not_there.mp4\n")
    with pytest.raises(FileNotFoundError, match="not_there.mp4"):
        generate.setup_inputs(_cfg(f"dataset={root}"))
    with pytest.raises(ValueError, match="one of dataset="):
        generate.setup_inputs(_cfg(f"dataset={root}", f"image={root}"))


@needs_media
def test_keyframes_then_interpolate_stages_give_the_full_run(tmp_path):
    """stage=keyframes writes <name>.keyframes.pt; stage=interpolate in another run finishes the same
    video as stage=full, and names a missing keyframes file."""
    import numpy as np

    from keyvid.data.io import read_av

    pair = (f"image={IMAGE}", f"audio={AUDIO}", "text=a lion", "steps=2")
    (full,) = generate.run(_cfg(*pair), tmp_path / "full")
    (keys,) = generate.run(_cfg(*pair, "stage=keyframes"), tmp_path / "keys")
    assert keys.name.endswith(".keyframes.pt") and not list((tmp_path / "keys").glob("*.mp4"))
    assert (tmp_path / "keys" / keys.name.replace(".pt", ".png")).stat().st_size > 0
    (video,) = generate.run(_cfg(*pair, "stage=interpolate", f"keyframes_from={tmp_path / 'keys'}"), tmp_path / "v")
    np.testing.assert_array_equal(read_av(video, require_audio=False).frames, read_av(full, require_audio=False).frames)
    record = json.loads(video.with_name(video.stem + ".keyframes.json").read_text())
    assert record["keyframes"] == json.loads(full.with_name(full.stem + ".keyframes.json").read_text())["keyframes"]
    with pytest.raises(FileNotFoundError, match=r"keyframes for .*\.keyframes\.pt not found"):
        generate.run(_cfg(*pair, "stage=interpolate", f"keyframes_from={tmp_path}"), tmp_path / "v2")
    keys.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="is not a keyframes file"):
        generate.run(_cfg(*pair, "stage=interpolate", f"keyframes_from={tmp_path / 'keys'}"), tmp_path / "v3")
    with pytest.raises(ValueError, match="keyframes_from"):
        generate.run(_cfg(*pair, "stage=keyframes", f"keyframes_from={tmp_path}"), tmp_path / "v4")
