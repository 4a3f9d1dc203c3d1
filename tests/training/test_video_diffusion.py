import pytest
import torch
from omegaconf import OmegaConf

from keyvid.models.builders import image_projector, unet
from keyvid.diffusion.denoiser import KeyVIDDenoiser
from keyvid.training.video_diffusion import interpolation_window, set_trainable


def test_upstream_trainable_subset():
    d = KeyVIDDenoiser(unet("tiny"), image_projector("tiny"))
    total = sum(p.numel() for p in d.parameters())
    n = set_trainable(d, "upstream")
    names = {k for k, p in d.named_parameters() if p.requires_grad}
    assert 0 < n < total
    assert any("temporal_conv" in k for k in names) and any("to_k_ap" in k for k in names)
    assert any(k.startswith("image_proj.") for k in names) and any("frame_idx_embedding" in k for k in names)
    assert not any(k.endswith("attn1.to_q.weight") and "input_blocks.1.1." in k for k in names)  # spatial
    assert set_trainable(d, "full") == total


def test_interpolation_window_marks_keyframes():
    sample = {"video": torch.randn(3, 48, 4, 4), "frame_idx": torch.tensor([0, 5, 9, 20]), "key": "clip_a",
              "visit_seed": 5}
    out = interpolation_window(dict(sample), num_frames=12, seed=1)
    idx = out["frame_idx"]
    assert len(idx) == 12 and torch.all(idx.diff() == idx[1] - idx[0]) and idx[1] - idx[0] in (1, 2)
    assert out["video"].shape == (3, 12, 4, 4)
    expect = torch.isin(idx, sample["frame_idx"])
    if expect.sum() <= 1:
        expect[0] = expect[-1] = True
    assert torch.equal(out["is_key"], expect)
    assert out["fs"] == 24 // int(idx[1] - idx[0])
    again = interpolation_window(dict(sample), num_frames=12, seed=1)
    assert torch.equal(again["frame_idx"], idx)


def test_interpolation_window_is_drawn_afresh_on_every_visit():
    # Suspect 1 of the "pipeline must learn" issue: seeded by the key alone, a clip trained on one window.
    from keyvid.data.dataset import SampleDecoder

    decoder = SampleDecoder()
    seeds = [decoder.rng("clip_a").integers(2**62) for _ in range(40)]  # what SampleDecoder stores per visit
    assert len(set(seeds)) == 40
    covered, windows = torch.zeros(48, dtype=torch.bool), set()
    for visit_seed in seeds:
        sample = {"video": torch.randn(3, 48, 4, 4), "frame_idx": torch.tensor([0, 5, 9, 20]), "key": "clip_a",
                  "visit_seed": visit_seed}
        idx = interpolation_window(sample, num_frames=12, seed=1)["frame_idx"]
        covered[idx] = True
        windows.add(tuple(idx.tolist()))
    assert len(windows) > 10 and covered.all()  # every frame, the first and last included, gets trained


def test_config_composes_and_builds(tmp_path):
    from hydra import compose, initialize_config_dir

    from tests.conftest import REPO
    from keyvid.training.config import register

    register()
    for name in ("train_generator", "train_interpolator", "train_localizer"):
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose(name, overrides=["debug=tiny", "data.train_shards=x.tar", f"run_dir={tmp_path}"])
        assert cfg.train.max_steps == 4 and OmegaConf.select(cfg, "model.size") == "tiny"


def test_setup_denoiser_compile_and_channels_last_keep_checkpoint_layout():
    """train.compile_blocks / train.channels_last change how the UNet runs, not what it saves:
    parameter names and contiguous weights (safetensors refuses strided ones) stay as without them."""
    from keyvid.models.unet import ResBlock
    from keyvid.training.video_diffusion import setup_denoiser

    cfg = OmegaConf.create({
        "unet": {"_target_": "keyvid.models.builders.unet", "size": "tiny"},
        "image_proj": {"_target_": "keyvid.models.builders.image_projector", "size": "tiny"},
        "pretrained": None, "trainable": "full", "stage": "generator", "audio_layout": "aligned",
    })
    plain = setup_denoiser(cfg)
    fast = setup_denoiser(cfg, compile_blocks=True, channels_last=True)
    assert fast.unet.channels_last and not plain.unet.channels_last
    assert all(m._compiled_call_impl is not None for m in fast.unet.modules() if isinstance(m, ResBlock))
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert all(t.is_contiguous() for t in fast.state_dict().values())
    whole = setup_denoiser(cfg, compile_model=True)
    assert whole.unet._compiled_call_impl is not None and list(whole.state_dict()) == list(plain.state_dict())
    with pytest.raises(ValueError, match="choose one"):
        setup_denoiser(cfg, compile_blocks=True, compile_model=True)


def test_setup_denoiser_checkpoint_levels():
    """train.checkpoint_levels reaches the UNet; without train.gradient_checkpointing, or out of the
    UNet's range, it fails at start-up naming the key."""
    from keyvid.training.video_diffusion import setup_denoiser

    cfg = OmegaConf.create({
        "unet": {"_target_": "keyvid.models.builders.unet", "size": "tiny"},
        "image_proj": {"_target_": "keyvid.models.builders.image_projector", "size": "tiny"},
        "pretrained": None, "trainable": "upstream", "stage": "generator", "audio_layout": "aligned",
    })
    denoiser = setup_denoiser(cfg, True, checkpoint_levels=[0])
    assert denoiser.unet.gradient_checkpointing and denoiser.unet.checkpoint_levels == {0}
    assert setup_denoiser(cfg, True).unet.checkpoint_levels is None
    with pytest.raises(ValueError, match="train.checkpoint_levels needs train.gradient_checkpointing"):
        setup_denoiser(cfg, False, checkpoint_levels=[0])
    with pytest.raises(ValueError, match=r"train.checkpoint_levels: checkpoint levels \[9\] out of range"):
        setup_denoiser(cfg, True, checkpoint_levels=[9])


def test_random_encoders_are_the_pretrained_architectures():
    """encoders.kind=random: the full-size encoders with random weights (built on the meta device here:
    sizes only). Parameter counts of SD 2.x's VAE, OpenCLIP ViT-H/14's towers and ImageBind-huge audio."""
    from keyvid.models.io import build_encoders

    enc = build_encoders(OmegaConf.create({"kind": "random"}), device="meta")
    millions = {name: round(sum(p.numel() for p in getattr(enc, name).parameters()) / 1e6, 1)
                for name in ("vae", "clip_text", "clip_image", "audio")}
    assert millions["vae"] == 83.7 and millions["clip_image"] == 630.8 and millions["audio"] == 85.7, millions
    assert 340 < millions["clip_text"] < 360, millions  # 49408-token embedding + 24 layers of 1024
    assert not any(p.requires_grad for m in (enc.vae, enc.clip_text, enc.clip_image, enc.audio) for p in m.parameters())
