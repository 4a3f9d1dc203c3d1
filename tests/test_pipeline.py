"""KeyVIDPipeline from seeded tiny components (diffusers ``get_dummy_components`` style), on CPU."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from keyvid.data.keyframes import uniform_keyframes
from keyvid.diffusion import GuidanceScales, ddim_sample
from keyvid.diffusion.sampling import denoise
from keyvid.pipeline import KeyVIDPipeline, load_image, prepare_image, tiny_pipeline

SR = 16000


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(seed=0)


def _image(seed=0, shape=(40, 50, 3)):
    return np.random.RandomState(seed).randint(0, 256, shape, dtype=np.uint8)


def _impacts(seed=0, seconds=2.0):
    """Noise bursts at random times: a localizer curve with peaks."""
    rng = np.random.RandomState(seed)
    wave = 0.01 * rng.randn(1, int(seconds * SR)).astype(np.float32)
    for t in rng.uniform(0.1, seconds - 0.1, size=4):
        i = int(t * SR)
        wave[0, i : i + 800] += rng.randn(800).astype(np.float32)
    return wave


@pytest.fixture(scope="module")
def run_seed0(pipe):
    return pipe(_image(), _impacts(), SR, "a hammer", steps=2, seed=0)


def test_end_to_end_shapes(pipe, run_seed0):
    out = run_seed0
    assert out.frames.shape == (1, 48, pipe.height, pipe.width, 3) and out.frames.dtype == np.uint8
    assert out.keyframes.shape == (1, 12) and out.keyframes.dtype == np.int64
    k = out.keyframes[0]
    assert k[0] == 0 and np.all(np.diff(k) > 0) and k[-1] < 48
    assert out.motion.shape == (1, 48) and np.isfinite(out.motion).all()
    assert out.frames.std() > 1  # not a constant picture


@pytest.fixture(scope="module")
def run_uniform(pipe):
    return pipe(_image(), _impacts(), SR, keyframes="uniform", steps=1)


def test_deterministic_by_seed(pipe, run_seed0):
    again = pipe(_image(), _impacts(), SR, "a hammer", steps=2, seed=0)
    np.testing.assert_array_equal(again.frames, run_seed0.frames)
    np.testing.assert_array_equal(again.keyframes, run_seed0.keyframes)


def test_uniform_and_given_keyframes(pipe, run_uniform):
    uni = run_uniform
    np.testing.assert_array_equal(uni.keyframes[0], uniform_keyframes(48, 12))
    loc = pipe(_image(), _impacts(), SR, keyframes="localizer", steps=1)
    assert not np.array_equal(loc.keyframes, uni.keyframes)
    assert np.abs(loc.frames.astype(int) - uni.frames).max() > 0  # keyframe positions reach the output
    given = pipe(_image(), _impacts(), SR, keyframes=uniform_keyframes(48, 12).tolist(), steps=1)
    np.testing.assert_array_equal(given.frames, uni.frames)
    with pytest.raises(ValueError, match="12 integers"):
        pipe(_image(), _impacts(), SR, keyframes=[0, 1, 2], steps=1)
    with pytest.raises(ValueError, match=r"\[0, 48\)"):
        pipe(_image(), _impacts(), SR, keyframes=list(range(40, 52)), steps=1)


def test_batch_seeds_and_odd_inputs(pipe):
    gray = _image(1, (7, 300))  # grayscale, extreme aspect ratio
    rgba = Image.fromarray(_image(2, (30, 30, 4)), "RGBA")
    silent_short = np.zeros(5000, np.float32)  # 0.3 s of silence at 16 kHz
    stereo_44k = np.stack([_impacts(3, 2.5)[0]] * 2)[:, : 44100 * 2]
    with pytest.warns(UserWarning) as caught:
        out = pipe([rgba, rgba, gray], [stereo_44k, stereo_44k, silent_short], [44100, 44100, SR],
                   ["text", "text", ""], seed=[5, 6, 5], steps=1)
    messages = [str(w.message) for w in caught]
    assert any("audio 2: 0.31 s is shorter than the 2 s video" in m for m in messages), messages
    assert any("audio 0: 0.91 s is shorter" in m for m in messages)  # 40 000 samples declared as 44.1 kHz
    assert [m for m in messages if "silent" in m] == [m for m in messages if m.startswith("audio 2 is silent")] != []
    assert out.frames.shape[:2] == (3, 48) and out.keyframes.shape == (3, 12)
    assert np.abs(out.frames[0].astype(int) - out.frames[1]).max() > 0  # the seed matters
    single = pipe(rgba, stereo_44k, 44100, "text", seed=6, steps=1)
    assert np.abs(single.frames[0].astype(int) - out.frames[1]).max() <= 1  # batching does not change a sample
    np.testing.assert_array_equal(single.keyframes[0], out.keyframes[1])


def test_save_load_round_trip(pipe, run_uniform, tmp_path):
    pipe.save_pretrained(tmp_path / "p")
    loaded = KeyVIDPipeline.from_pretrained(tmp_path / "p")
    again = loaded(_image(), _impacts(), SR, keyframes="uniform", steps=1)
    np.testing.assert_array_equal(again.frames, run_uniform.frames)
    for name in KeyVIDPipeline.MODULES:
        for a, b in zip(getattr(pipe, name).state_dict().items(), getattr(loaded, name).state_dict().items()):
            assert a[0] == b[0] and torch.equal(a[1], b[1]), name


def test_training_export_folders_fit(pipe, tmp_path):
    """localizer/, generator/ and interpolator/ are the trainers' export format."""
    from keyvid.models.io import load_exported, tiny_encoders

    root = pipe.save_pretrained(tmp_path / "p")
    localizer = load_exported(root / "localizer")
    for a, b in zip(localizer.state_dict().values(), pipe.localizer.state_dict().values()):
        assert torch.equal(a, b)
    again = KeyVIDPipeline.from_exports(
        root / "localizer", root / "generator", root / "interpolator", tiny_encoders(), height=16, width=24
    )
    for name in KeyVIDPipeline.MODULES:
        for a, b in zip(getattr(again, name).state_dict().values(), getattr(pipe, name).state_dict().values()):
            assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="interpolator export"):
        KeyVIDPipeline.from_exports(root / "localizer", root / "generator", tmp_path, tiny_encoders())


def test_missing_and_mismatched_components(pipe, tmp_path):
    root = pipe.save_pretrained(tmp_path / "p")
    (root / "interpolator" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"'interpolator/unet'.*diffusion_pytorch_model\.safetensors"):
        KeyVIDPipeline.from_pretrained(root)
    shutil.rmtree(root / "interpolator")
    shutil.copytree(root / "generator", root / "interpolator")  # generator weights given as interpolator
    with pytest.raises(ValueError, match="keyframe-generator weights"):
        KeyVIDPipeline.from_pretrained(root)
    with pytest.raises(FileNotFoundError, match="not a saved KeyVID pipeline"):
        KeyVIDPipeline.from_pretrained(tmp_path)


def test_stages_apart_give_the_frames_of_one_call(pipe, run_seed0):
    """generate_keyframes then interpolate (the keys through their state dict, as a file between two
    processes carries them) reproduce one call exactly: each sample's generator state travels along."""
    from keyvid.pipeline import KeyframeOutput

    args = (_image(), _impacts(), SR, "a hammer")
    keys = pipe.generate_keyframes(*args, steps=2, seed=0)
    assert keys.latents.shape[:3] == (1, 4, 12) and len(keys.rng_states) == 1
    keys = KeyframeOutput.from_state_dict(torch.load(_save(keys.state_dict()), weights_only=True))
    out = pipe.interpolate(*args, keys=keys, steps=2)
    np.testing.assert_array_equal(out.frames, run_seed0.frames)
    np.testing.assert_array_equal(out.keyframes, run_seed0.keyframes)
    np.testing.assert_array_equal(out.motion, run_seed0.motion)
    # two samples' keys joined (per-sample files, batched again) = the batched call, up to the
    # rounding batching changes (test_batch_seeds_and_odd_inputs)
    images, waves = [_image(1), _image(2)], [_impacts(1), _impacts(2)]
    both = pipe(images, waves, SR, steps=1, seed=[3, 4])
    parts = [pipe.generate_keyframes(im, w, SR, steps=1, seed=s) for im, w, s in zip(images, waves, (3, 4))]
    again = pipe.interpolate(images, waves, SR, keys=KeyframeOutput.cat(parts), steps=1)
    assert np.abs(again.frames.astype(int) - both.frames).max() <= 1
    assert np.abs(again.frames[0].astype(int) - again.frames[1]).max() > 10  # each sample kept its own keys
    with pytest.raises(ValueError, match="1 keyframe sets for 2 inputs"):
        pipe.interpolate(images, waves, SR, keys=parts[0], steps=1)


def _save(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_one_stage_pipelines_save_load_and_name_what_they_lack(pipe, tmp_path):
    from keyvid.models.io import tiny_encoders

    root = pipe.save_pretrained(tmp_path / "full")
    enc = tiny_encoders()
    keyer = KeyVIDPipeline.from_exports(root / "localizer", root / "generator", None, enc, height=16, width=24)
    finisher = KeyVIDPipeline.from_exports(None, None, root / "interpolator", enc, height=16, width=24)
    assert keyer.stages == ("generator",) and finisher.stages == ("interpolator",) and finisher.localizer is None
    for part, name in ((keyer, "keyer"), (finisher, "finisher")):
        loaded = KeyVIDPipeline.from_pretrained(part.save_pretrained(tmp_path / name))
        assert loaded.stages == part.stages and (loaded.localizer is None) == (part.localizer is None)
    assert not (tmp_path / "finisher" / "generator").exists() and not (tmp_path / "finisher" / "localizer").exists()
    args = (_image(), _impacts(), SR)
    keys = keyer.generate_keyframes(*args, steps=1, seed=0)
    ref = pipe(*args, steps=1, seed=0)
    np.testing.assert_array_equal(finisher.interpolate(*args, keys=keys, steps=1).frames, ref.frames)
    with pytest.raises(ValueError, match="no interpolator"):
        keyer(*args, steps=1)
    with pytest.raises(ValueError, match="no generator"):
        finisher.generate_keyframes(*args, steps=1)
    no_localizer = KeyVIDPipeline.from_exports(None, root / "generator", None, enc, height=16, width=24)
    with pytest.raises(ValueError, match="no localizer"):
        no_localizer.generate_keyframes(*args, steps=1)
    given = no_localizer.generate_keyframes(*args, keyframes="uniform", steps=1)
    assert given.keyframes[0].tolist() == uniform_keyframes(48, 12).tolist() and not given.motion.any()
    with pytest.raises(ValueError, match="needs a generator, an interpolator or both"):
        KeyVIDPipeline.from_exports(root / "localizer", None, None, enc, height=16, width=24)


def test_prepare_image_modes_and_errors(tmp_path):
    for im in (_image(0, (5, 3, 3)), _image(0, (900, 40)), Image.fromarray(_image(0, (8, 8, 4)), "RGBA"),
               Image.fromarray(_image(0, (1, 1, 3))).convert("P")):
        x = prepare_image(im, 16, 24)
        assert x.shape == (3, 16, 24) and x.min() >= -1 and x.max() <= 1
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert torch.allclose(prepare_image(transparent, 4, 4), torch.ones(3, 4, 4))  # composited over white
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(bad)


def test_denoise_matches_ddim_sample(pipe):
    """One DDIM loop: ``denoise`` from an x_T drawn by a per-sample generator list (the pipeline's
    call) gives what ``ddim_sample`` (one generator, the preview's and the tests' call) gives."""
    b, t, g = 1, 4, torch.Generator().manual_seed(0)
    cond = {
        "concat": torch.randn(b, 4, t, 8, 12, generator=g),
        "context": torch.randn(b, 77 + 16 * t, pipe.generator.config.context_dim, generator=g),
        "audio": torch.randn(b, t, 12, 768, generator=g),
        "fs": torch.tensor([6]),
        "frame_idx": torch.tensor([[0, 4, 8, 12]]),
    }
    d = pipe.generator.config.context_dim
    nulls = {"text": torch.zeros(1, 77, d), "image": torch.zeros(1, 16 * t, d), "audio": torch.zeros(1, t, 12, 768)}
    args = dict(steps=3, scales=GuidanceScales(), guidance_rescale=0.7, eta=1.0)
    ref = ddim_sample(pipe.generator, (b, 4, t, 8, 12), cond, nulls, generator=torch.Generator().manual_seed(1),
                      schedule=pipe.schedule, **args)
    gens = [torch.Generator().manual_seed(1)]
    x = torch.randn(b, 4, t, 8, 12, generator=gens[0])
    ours = denoise(pipe.generator, x, cond, nulls, pipe.schedule, generators=gens, **args)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_anchored_keyframes_are_noised_as_in_training():
    """Suspect 6 of the "pipeline must learn" issue: ``anchor_keyframes="replace"`` writes the known latents
    back noised to the next timestep; like training's inputs they carry x0 scaled by the dynamic rescale
    (0.7 at t >= 400), not the raw x0 (1.43x the signal the model saw)."""
    from keyvid.diffusion import DiffusionSchedule

    schedule = DiffusionSchedule()
    b, c, t = 1, 4, 4
    seen = []

    def zero_v(x, timesteps, **_):
        seen.append((x[:, :c].clone(), int(timesteps[0])))
        return torch.zeros_like(x[:, :c])

    cond = {"concat": torch.zeros(b, c, t, 8, 8), "context": torch.zeros(b, 5, 8), "audio": torch.zeros(b, t, 2, 8),
            "fs": torch.tensor([6]), "frame_idx": torch.arange(t)[None]}
    nulls = {"text": torch.zeros(1, 2, 8), "image": torch.zeros(1, 3, 8), "audio": torch.zeros(1, t, 2, 8)}
    mask = torch.zeros(b, 1, t, 1, 1, dtype=torch.bool)
    mask[:, :, [0, 2]] = True
    x0 = torch.full((b, c, t, 8, 8), 100.0)
    out = denoise(zero_v, torch.randn(b, c, t, 8, 8), cond, nulls, schedule, steps=3, scales=GuidanceScales(),
                  guidance_rescale=0.0, eta=0.0, generators=[torch.Generator().manual_seed(0)], known=(mask, x0))
    x_second, t_second = seen[1]  # the second step (its four guidance branches stacked on batch)
    a = schedule.alphas_cumprod[t_second].item()
    level = x_second[:, :, [0, 2]].mean().item() / (a**0.5 * 100.0)
    assert level == pytest.approx(schedule.scale_arr[t_second].item(), rel=0.02)
    torch.testing.assert_close(out[:, :, [0, 2]], x0[:, :, [0, 2]])  # the last step holds x0 itself


def test_pixel_vae_pipeline_save_load(tmp_path):
    """A pipeline on the weight-free PixelVAE (the synthetic reproduction's) saves and loads."""
    from keyvid.models.encoders import PixelVAE

    pipe = tiny_pipeline(seed=0, height=16, width=24)
    pipe.vae = PixelVAE(factor=2)
    out = pipe(_image(), _impacts(), SR, keyframes="uniform", steps=1)
    assert out.frames.shape == (1, 48, 16, 24, 3)
    root = pipe.save_pretrained(tmp_path / "p")
    assert sorted(p.name for p in (root / "vae").iterdir()) == ["config.json"]
    loaded = KeyVIDPipeline.from_pretrained(root)
    assert isinstance(loaded.vae, PixelVAE)
    np.testing.assert_array_equal(loaded(_image(), _impacts(), SR, keyframes="uniform", steps=1).frames, out.frames)
    pipe.vae = PixelVAE(factor=8)  # 16 x 24 is not a multiple of 8 * 2
    with pytest.raises(ValueError, match="multiples of 16"):
        KeyVIDPipeline(**{n: getattr(pipe, n) for n in KeyVIDPipeline.MODULES}, height=16, width=24)


@pytest.mark.slow
def test_compile_unets_same_video(run_seed0):
    """KeyVIDPipeline.compile_unets (regional inductor compile + channels-last, CPU codegen here):
    the same keyframes and, up to float rounding, the same frames as the eager pipeline."""
    fast = tiny_pipeline(seed=0).compile_unets()
    out = fast(_image(), _impacts(), SR, "a hammer", steps=2, seed=0)
    assert np.array_equal(out.keyframes, run_seed0.keyframes)
    diff = np.abs(out.frames.astype(int) - run_seed0.frames.astype(int))
    assert diff.max() <= 2, diff.max()
    assert fast.interpolator.channels_last and fast.generator.channels_last


def test_sampling_options_are_one_checked_object():
    """The public calls take SamplingOptions (or its field names as keywords): the same frames either
    way, and a misspelt or invalid setting fails at once with its name."""
    from keyvid.pipeline import SamplingOptions

    pipe = tiny_pipeline(seed=0)
    image = np.full((16, 24, 3), 120, np.uint8)
    wave = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.1
    a = pipe(image, wave, SR, steps=2, eta=0.0, seed=3)
    b = pipe(image, wave, SR, options=SamplingOptions(steps=2, eta=0.0), seed=3)
    np.testing.assert_array_equal(a.frames, b.frames)
    with pytest.raises(TypeError, match="unknown sampling option.*stepz"):
        pipe(image, wave, SR, stepz=2)
    for bad, match in ((dict(final_step="last"), "final_step"), (dict(noise="pink"), "noise"),
                       (dict(window=4, stride=6), "stride"), (dict(steps=0), "steps"),
                       (dict(anchor_keyframes="paste"), "anchor_keyframes")):
        with pytest.raises(ValueError, match=match):
            SamplingOptions(**bad)
