"""Inference inputs that used to pass silently or fail deep inside a library (issue 21, part 4).
The whole table is bench/faults.py's inference section (RELIABILITY.md); these are its fixes."""

import math
import sys

import numpy as np
import pytest
from scipy.io import wavfile

from keyvid.diffusion.guidance import GuidanceScales
from keyvid.models.audio_frontend import load_audio
from keyvid.pipeline import tiny_pipeline
from keyvid.pipeline.inputs import warn_odd_audio
from tests.conftest import REPO


@pytest.mark.parametrize("value", [math.nan, math.inf, "7.5"])
def test_guidance_scales_must_be_finite_numbers(value):
    with pytest.raises(ValueError, match="guidance scale aud"):
        GuidanceScales(aud=value)
    assert GuidanceScales(aud=-1.0).aud == -1.0  # negative guidance is a choice, not an error


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_audio_names_the_file(tmp_path, bad):
    wave = np.zeros(16000, np.float32)
    wave[8000] = bad
    path = tmp_path / "broken.wav"
    wavfile.write(path, 16000, wave)
    with pytest.raises(ValueError, match=r"broken\.wav: 1 NaN or infinite audio samples \(first at 0\.500 s\)"):
        load_audio(path)


def test_long_audio_warns_that_only_two_seconds_are_used():
    with pytest.warns(UserWarning, match="30.00 s is longer than the 2 s video"):
        warn_odd_audio(np.zeros(30 * 16000, np.float32) + 0.1, 16000, 0)


def test_over_long_text_warns_and_short_text_does_not(recwarn):
    enc = tiny_pipeline().text_encoder
    enc.tokenize(["a lion roaring"])
    assert not [w for w in recwarn if "longer than CLIP" in str(w.message)]
    with pytest.warns(UserWarning, match="longer than CLIP's 77 tokens"):
        enc.tokenize(["a lion roaring " * 100])


def test_generate_names_an_out_dir_it_cannot_create(tmp_path):
    sys.path.insert(0, str(REPO / "launch"))
    from generate import check_out_dir

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SystemExit, match="out_dir .*a_file/out cannot be created: .*a_file is not a writable folder"):
        check_out_dir(["pipeline=tiny", f"out_dir={blocker / 'out'}"])
    check_out_dir([f"out_dir={tmp_path / 'new' / 'deeper'}"])  # a folder that can be made: no error


def test_an_image_is_read_upright_by_its_exif_orientation(tmp_path):
    """A phone's JPEG stored sideways with EXIF orientation 6 ("turn 90 degrees clockwise to view")."""
    from PIL import Image

    from keyvid.pipeline import load_image

    stored = Image.new("RGB", (48, 32), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 48, 8))  # a red band along the stored top
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    stored.save(tmp_path / "plain.jpg", quality=95)
    shown = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert shown.shape == (48, 32, 3)
    assert (shown[:, -6:, 0] > 128).all() and (shown[:, :20, 0] < 64).all()  # the top is on the right
    assert np.asarray(load_image(tmp_path / "plain.jpg")).shape == (32, 48, 3)
