"""One conditioning path (keyvid.diffusion.denoiser) for training, the preview and the pipeline."""

import pytest
import torch

from keyvid.diffusion.denoiser import Encoded, KeyVIDDenoiser, concat_condition, encode_conditions, null_conditions
from keyvid.diffusion.guidance import GuidanceScales, guidance_branches
from keyvid.diffusion.schedule import DiffusionSchedule, apply_model
from keyvid.models.builders import image_projector, unet
from keyvid.models.io import tiny_encoders


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    enc = tiny_encoders()
    den = KeyVIDDenoiser(unet("tiny"), image_projector("tiny"), "generator").eval()
    for m in den.modules():  # zero-initialised heads would hide the conditions
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv3d)) and not m.weight.any():
            m.reset_parameters()
    pixels = torch.rand(2, 3, 16, 24) * 2 - 1
    mel = torch.randn(2, 1, 128, 204)
    return enc, den, encode_conditions(enc, ["a dog", "a cat"], pixels, mel), null_conditions(enc, "cpu")


def test_training_forward_equals_the_sampling_path(parts):
    """The training forward (projection inside, raw encodings in) and the sampler's precomputed
    conditioning give the same v: training and inference see the model alike."""
    _, den, enc, _ = parts
    idx = torch.tensor([[0, 5, 20, 47], [1, 2, 3, 4]])
    fs = torch.tensor([6, 24])
    x = torch.randn(2, 8, 4, 8, 12)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        train_v = den(x, t, **enc.as_dict(), fs=fs, frame_idx=idx)
        cond = den.conditioning(enc, x[:, 4:], idx, fs)
        sample_v = apply_model(den.unet, x[:, :4], t, cond)
    torch.testing.assert_close(train_v, sample_v, rtol=0, atol=0)
    assert cond["context"].shape == (2, 77 + 4 * 16, 1024) and cond["audio"].shape[:2] == (2, 4)


def test_null_branches_follow_each_samples_frames(parts):
    """Null image and audio tokens are taken at each sample's own frames (they differ per frame), and
    the four guidance branches are built from them."""
    _, den, enc, null = parts
    idx = torch.tensor([[0, 1, 2, 3], [40, 41, 42, 43]])
    branches = den.null_branches(null, idx)
    assert branches["image"].shape[0] == 2 and not torch.equal(branches["image"][0], branches["image"][1])
    cond = den.conditioning(enc, torch.zeros(2, 4, 4, 8, 12), idx, torch.tensor([24, 24]))
    stacked = guidance_branches(cond, branches)
    assert stacked["context"].shape[0] == 8
    torch.testing.assert_close(stacked["context"][:2, 77:], branches["image"])  # (null, null, null) branch


def test_concat_condition_per_stage():
    lat = torch.randn(2, 4, 6, 3, 3)
    gen = concat_condition("generator", lat)
    assert torch.equal(gen[:, :, 5], lat[:, :, 0])
    key = torch.zeros(2, 6, dtype=torch.bool)
    key[:, [0, 5]] = True
    inter = concat_condition("interpolator", lat, key)
    assert torch.equal(inter[:, :, 5], lat[:, :, 5]) and inter[:, :, 1:5].abs().max() == 0
    with pytest.raises(ValueError, match="is_key"):
        concat_condition("interpolator", lat)
    with pytest.raises(ValueError, match="unknown stage"):
        KeyVIDDenoiser(unet("tiny"), image_projector("tiny"), "upsampler")


def test_sample_is_denoise_from_the_given_noise(parts):
    _, den, enc, null = parts
    idx = torch.tensor([[0, 4, 8, 12]]).expand(2, -1)
    x = torch.randn(2, 4, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    kw = dict(concat=torch.zeros(2, 4, 4, 8, 12), frame_idx=idx, fs=torch.tensor([6, 6]), schedule=DiffusionSchedule(),
              steps=2, scales=GuidanceScales(), guidance_rescale=0.7, eta=0.0, generators=None)
    a, b = den.sample(x, enc, null, **kw), den.sample(x, enc, null, **kw)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert isinstance(null, Encoded) and null.text.shape[0] == 1
