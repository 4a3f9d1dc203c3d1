"""KeyframeUNet: upstream parity on the recorded tiny fixture, and the tiny-model checks
(shapes, determinism, gradient checkpointing, save/load, options, a few training steps)."""

from pathlib import Path

import pytest
import torch

from keyvid.models.convert import unet_key_from_upstream
from keyvid.models.unet import KeyframeUNet, keyframe_unet_tiny

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "upstream"
PARITY = FIXTURES / "keyvid_unet_tiny_parity.safetensors"
needs_parity = pytest.mark.skipif(not PARITY.exists(), reason=f"{PARITY} is absent (no ../shared)")


@pytest.fixture(scope="module")
def parity():
    from safetensors.torch import load_file

    return load_file(PARITY)


def _parity_model(parity, interpolator: bool, dtype: torch.dtype) -> KeyframeUNet:
    model = keyframe_unet_tiny(interpolator=interpolator).eval()
    # sd.* are stored as float16 but hold exactly the float32 values upstream used.
    state = {unet_key_from_upstream(k[3:]): v for k, v in parity.items() if k.startswith("sd.")}
    if interpolator:
        state = {k: v for k, v in state.items() if not k.startswith("frame_idx_embedding.")}
    model.load_state_dict(state, strict=True)
    return model.double() if dtype == torch.float64 else model.float()


@needs_parity
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float64, 1e-9)], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "case,interpolator,fs_key",
    [("generator", False, "in.fs"), ("generator_fs2d", False, "in.fs_2d"), ("interpolator", True, "in.fs")],
)
def test_matches_upstream(parity, case, interpolator, fs_key, dtype, atol):
    model = _parity_model(parity, interpolator, dtype)
    with torch.no_grad():
        y = model(
            parity["in.x"].to(dtype),
            parity["in.timesteps"],
            context=parity["in.context"].to(dtype),
            audio=parity["in.c_audio"].to(dtype),
            fs=parity[fs_key],
            frame_idx=parity["in.frame_idx"],
        )
    ref = parity[f"out.{case}.{'f32' if dtype == torch.float32 else 'f64'}"]
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref, atol=atol, rtol=0)


# ---------------------------------------------------------------------------- tiny model checks

B, T, H, W, L = 2, 3, 8, 8, 5


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add noise to every parameter: the zero-initialised output layers would otherwise hide everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim < 2 else p[0].numel() ** -0.5))
    return model


def _inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        x=torch.randn(B, 8, T, H, W, generator=g),
        timesteps=torch.tensor([10, 900]),
        context=torch.randn(B, 77 + 16 * T, 1024, generator=g),
        audio=torch.randn(B, T, L, 768, generator=g),
        fs=torch.tensor([6, 10]),
        frame_idx=torch.tensor([[0, 20, 47], [0, 5, 9]]),
    )


def _tiny(seed: int = 0, **overrides) -> KeyframeUNet:
    torch.manual_seed(seed)
    return _perturb(keyframe_unet_tiny(**overrides), seed)


def test_output_shape_and_determinism():
    model = _tiny().eval()
    inputs = _inputs()
    with torch.no_grad():
        y1, y2 = model(**inputs), model(**inputs)
    assert y1.shape == (B, 4, T, H, W)
    assert torch.equal(y1, y2)


def test_default_fs_and_per_frame_fs():
    model = _tiny().eval()
    inputs = _inputs()
    with torch.no_grad():
        y_default = model(**{**inputs, "fs": None})
        y_10 = model(**{**inputs, "fs": torch.tensor([10, 10])})
        y_1d = model(**inputs)
        y_2d = model(**{**inputs, "fs": inputs["fs"][:, None].expand(B, T)})
    torch.testing.assert_close(y_default, y_10, atol=1e-6, rtol=0)
    torch.testing.assert_close(y_1d, y_2d, atol=1e-6, rtol=0)


def test_rejects_wrong_context_length():
    model = _tiny().eval()
    inputs = _inputs()
    inputs["context"] = inputs["context"][:, :-1]
    with pytest.raises(ValueError, match="context"):
        model(**inputs)


@pytest.mark.parametrize("levels", [None, [0], [1]])
def test_gradient_checkpointing_matches(levels):
    """Whole and selective (per resolution level) checkpointing: same outputs and gradients, and
    only the stages at the chosen levels go through the checkpoint function."""
    inputs = _inputs()

    def run(checkpointing: bool):
        model = _tiny().train()  # dropout on: checkpointing must replay the same masks
        checkpointed = []
        if checkpointing:
            model.enable_gradient_checkpointing()
            model.set_checkpoint_levels(levels)
            inner = model._gradient_checkpointing_func
            model._gradient_checkpointing_func = lambda stage, *a: checkpointed.append(stage.level) or inner(stage, *a)
        torch.manual_seed(123)
        y = model(**inputs)
        y.square().mean().backward()
        return y.detach(), {n: p.grad for n, p in model.named_parameters()}, checkpointed

    y_ref, g_ref, _ = run(False)
    y_ckpt, g_ckpt, checkpointed = run(True)
    torch.testing.assert_close(y_ckpt, y_ref, atol=1e-6, rtol=0)
    assert g_ref.keys() == g_ckpt.keys()
    for name in g_ref:
        torch.testing.assert_close(g_ckpt[name], g_ref[name], atol=1e-6, rtol=1e-5, msg=name)
    n_stages = len(_tiny().input_blocks) + 1 + len(_tiny().output_blocks)  # conv_in runs bare; init_attn, middle
    if levels is None:
        assert len(checkpointed) == n_stages
    else:
        assert checkpointed and set(checkpointed) == set(levels) and len(checkpointed) < n_stages


def test_checkpoint_levels_out_of_range():
    with pytest.raises(ValueError, match=r"levels \[7\] out of range"):
        _tiny().set_checkpoint_levels([0, 7])


def test_save_with_channels_last_weights(tmp_path):
    """Channels-last conv weights (KeyVIDPipeline.compile_unets, train.channels_last) still save:
    state_dict() packs them for safetensors, the weights stay channels-last, and the loaded
    weights are equal."""
    model = _tiny().eval().set_channels_last(weights=True)
    conv = model.input_blocks[0][0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert all(v.is_contiguous() for v in model.state_dict().values())
    model.save_pretrained(tmp_path)
    assert not conv.weight.is_contiguous()
    loaded = KeyframeUNet.from_pretrained(tmp_path).eval()
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    inputs = _inputs()
    with torch.no_grad():  # conv algorithms differ by layout: float32 rounding only
        torch.testing.assert_close(loaded(**inputs), model(**inputs), atol=1e-5, rtol=0)


def test_channels_last_weights_train_step_matches():
    """Training with channels-last conv weights (fused AdamW: its state takes the weights'
    layout): after two steps, the same weights as with contiguous ones (float64). Dropout off:
    its masks are drawn in memory order, so a layout changes which elements drop."""
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in _inputs().items()}

    def train(channels_last: bool):
        model = _tiny().double().eval()
        model.set_channels_last(channels_last, weights=channels_last)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        for _ in range(2):
            torch.manual_seed(5)
            model(**inputs).square().mean().backward()
            opt.step()
            opt.zero_grad()
        conv = model.input_blocks[0][0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        return model.state_dict()

    ref, cl = train(False), train(True)
    for name in ref:
        torch.testing.assert_close(cl[name], ref[name], atol=1e-9, rtol=1e-7, msg=name)


def test_save_load_round_trip(tmp_path):
    model = _tiny(frame_index_mode="latent", cross_attention_weights="paper").eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists()
    assert list(tmp_path.glob("*.safetensors"))
    loaded = KeyframeUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.frame_index_mode == "latent"
    assert loaded.config.cross_attention_weights == "paper"
    assert list(loaded.config.channel_mult) == [1, 2]
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(model(**inputs), loaded(**inputs))


@pytest.mark.parametrize("frame_index_mode", ["upstream", "latent", "none"])
@pytest.mark.parametrize("weights", ["upstream", "paper"])
def test_options_run(frame_index_mode, weights):
    model = _tiny(frame_index_mode=frame_index_mode, cross_attention_weights=weights).eval()
    names = dict(model.named_parameters())
    assert ("frame_idx_embedding.0.weight" in names) == (frame_index_mode == "upstream")
    assert ("frame_idx_latent_embedding.0.weight" in names) == (frame_index_mode == "latent")
    attn2 = "input_blocks.1.1.transformer_blocks.0.attn2."
    assert (attn2 + "beta" in names) == (weights == "upstream")
    assert (attn2 + "audio_scale" in names) == (weights == "paper")
    inputs = _inputs()
    with torch.no_grad():
        y = model(**inputs)
        y_shift = model(**{**inputs, "frame_idx": inputs["frame_idx"] + 1})
    assert y.shape == (B, 4, T, H, W) and torch.isfinite(y).all()
    # The frame index reaches the output in both embedding modes, and nowhere without one.
    assert torch.equal(y, y_shift) == (frame_index_mode == "none")


@pytest.mark.parametrize("frame_index_mode", ["upstream", "latent"])
def test_new_conditions_start_neutral(frame_index_mode):
    """Zero-initialised frame-index and audio layers: a fresh model ignores frame_idx and audio."""
    torch.manual_seed(0)
    model = keyframe_unet_tiny(frame_index_mode=frame_index_mode).eval()
    with torch.no_grad():
        model.out[2].weight.normal_()  # let the features reach the output
    inputs = _inputs()
    with torch.no_grad():
        y = model(**inputs)
        y_other = model(**{**inputs, "frame_idx": inputs["frame_idx"].flip(1), "audio": -inputs["audio"]})
    assert y.abs().max() > 0
    torch.testing.assert_close(y, y_other, atol=1e-6, rtol=0)


def test_compiles_without_graph_breaks():
    """No data-dependent Python control flow: dynamo traces one graph (eager backend: no codegen)."""
    model = _tiny().eval()
    inputs = _inputs()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(**inputs), model(**inputs), atol=1e-6, rtol=0)


@pytest.mark.parametrize("weights", [False, True], ids=["activations", "activations+weights"])
def test_channels_last_same_values_and_grads(weights):
    """set_channels_last changes strides only: outputs and gradients equal the NCHW model's (float64),
    activations stay channels-last between layers, and the output has the NCHW model's strides."""
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in _inputs().items()}

    def run(channels_last: bool):
        model = _tiny().double().eval()
        if channels_last:
            model.set_channels_last(weights=weights)
        seen = []
        hook = model.input_blocks[1][0].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        y = model(**inputs)
        y.square().mean().backward()
        hook.remove()
        return y.detach(), {n: p.grad for n, p in model.named_parameters()}, seen[0]

    y_ref, g_ref, h_ref = run(False)
    y_cl, g_cl, h_cl = run(True)
    assert h_cl.is_contiguous(memory_format=torch.channels_last) and not h_cl.is_contiguous()
    assert h_ref.is_contiguous()
    assert y_cl.stride() == y_ref.stride()  # the caller sees the same tensor layout
    torch.testing.assert_close(y_cl, y_ref, atol=1e-10, rtol=0)
    for name in g_ref:
        torch.testing.assert_close(g_cl[name], g_ref[name], atol=1e-10, rtol=1e-8, msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["layer", "block"])
def test_compile_blocks_matches_eager(scope):
    """Regional compilation (inductor, CPU codegen) gives the eager output; the layer scope wraps
    whole ResBlocks and spatial/temporal transformers, the block scope the inner transformer blocks."""
    from keyvid.models.attention import SpatialTransformer, TransformerBlock

    model = _tiny().eval()
    inputs = _inputs()
    with torch.no_grad():
        ref = model(**inputs)
        model.set_channels_last()
        model.compile_blocks(scope=scope)
        out = model(**inputs)
    compiled = [type(m) for m in model.modules() if hasattr(m, "_compiled_call_impl") and m._compiled_call_impl]
    assert (SpatialTransformer in compiled) == (scope == "layer")
    assert (TransformerBlock in compiled) == (scope == "block")
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="scope"):
        model.compile_blocks(scope="stage")


@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    """train.compile_blocks + train.channels_last + gradient checkpointing (what the trainer runs):
    the compiled backward gives the eager gradients (inductor, CPU codegen; dropout off)."""
    inputs = _inputs()

    def grads(fast: bool):
        model = _tiny(dropout=0.0).train()
        model.enable_gradient_checkpointing()
        if fast:
            model.set_channels_last()
            model.compile_blocks()
        model(**inputs).square().mean().backward()
        return {n: p.grad for n, p in model.named_parameters()}

    ref, got = grads(False), grads(True)
    assert ref.keys() == got.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=1e-5, rtol=1e-3, msg=name)


def test_training_steps_lower_loss():
    torch.manual_seed(0)
    model = keyframe_unet_tiny(dropout=0.0).train()
    inputs = _inputs()
    target = torch.randn(B, 4, T, H, W, generator=torch.Generator().manual_seed(5))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = torch.nn.functional.mse_loss(model(**inputs), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.98, losses


def test_named_sizes_small():
    """The synthetic reproduction's sizes (REPRODUCTION.md) build, and unknown sizes are refused."""
    from keyvid.models import builders

    unet = builders.unet("small", interpolator=True)
    assert unet.config.model_channels == 64 and unet.config.frame_index_mode == "none"
    assert 30e6 < sum(p.numel() for p in unet.parameters()) < 50e6
    assert builders.image_projector("small").config.embedding_dim == 40  # the tiny CLIP stand-in's width
    assert sum(p.numel() for p in builders.localizer("small").parameters()) < 5e6
    with pytest.raises(ValueError, match="'512', 'small' or 'tiny'"):
        builders.unet("medium")
