"""Converters and the image projector: full-size key coverage against the upstream manifests
(meta device), upstream initialisation, DynamiCrafter/KeyVID conversion on tiny models, CLI."""

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

import keyvid.models.convert as convert
from keyvid.models.convert import (
    IMAGE_PROJ_PREFIX,
    UNET_PREFIX,
    convert_dynamicrafter,
    convert_keyvid,
    load_state_dict,
    unet_key_from_upstream,
    unet_key_to_upstream,
)
from keyvid.models.resampler import (
    Resampler,
    image_resampler_512,
    interpolate_query_latents,
    select_keyframe_tokens,
)
from keyvid.models.unet import KeyframeUNet, keyframe_unet_512, keyframe_unet_tiny

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "upstream"
needs_fixtures = pytest.mark.skipif(not FIXTURES.exists(), reason=f"{FIXTURES} is absent (no ../shared)")

# manifest -> (interpolator UNet?, Resampler video_length)
MANIFESTS = {
    "keyvid_generator_unet_keys.json": (False, 48),
    "keyvid_interpolator_unet_keys.json": (True, 48),
    "dynamicrafter_512_keys.json": (False, 16),
}


def _manifest(name: str) -> list[dict]:
    return json.loads((FIXTURES / name).read_text())["keys"]


def _tiny_resampler(video_length: int = 48) -> Resampler:
    return Resampler(
        dim=64, depth=2, dim_head=16, heads=4, num_queries=16, embedding_dim=32, output_dim=48, ff_mult=2,
        video_length=video_length,
    )


def _upstream_checkpoint(unet: torch.nn.Module, image_proj: torch.nn.Module) -> dict:
    """Our modules' weights under upstream names, as a Lightning checkpoint holds them."""
    sd = {UNET_PREFIX + unet_key_to_upstream(k): v.clone() for k, v in unet.state_dict().items()}
    sd.update({IMAGE_PROJ_PREFIX + k: v.clone() for k, v in image_proj.state_dict().items()})
    sd["betas"] = torch.zeros(1000)  # schedule buffers and other prefixes are ignored
    return sd


# ------------------------------------------------------------------------ full-size key coverage


@needs_fixtures
@pytest.mark.parametrize("manifest", list(MANIFESTS))
def test_manifest_keys_map_onto_512_model(manifest):
    interpolator, video_length = MANIFESTS[manifest]
    with torch.device("meta"):
        unet = keyframe_unet_512(interpolator=interpolator)
        image_proj = image_resampler_512(video_length)
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    ours_proj = {k: tuple(v.shape) for k, v in image_proj.state_dict().items()}
    keys = _manifest(manifest)
    theirs = {
        unet_key_from_upstream(e["key"][len(UNET_PREFIX):]): tuple(e["shape"])
        for e in keys
        if e["key"].startswith(UNET_PREFIX)
    }
    theirs_proj = {
        e["key"][len(IMAGE_PROJ_PREFIX):]: tuple(e["shape"]) for e in keys if e["key"].startswith(IMAGE_PROJ_PREFIX)
    }

    assert len(theirs) == sum(e["key"].startswith(UNET_PREFIX) for e in keys)  # renames are injective
    assert set(theirs) <= set(ours), sorted(set(theirs) - set(ours))[:5]
    assert {k: ours[k] for k in theirs} == theirs
    assert theirs_proj == ours_proj
    # The renames invert exactly.
    assert all(unet_key_from_upstream(unet_key_to_upstream(k)) == k for k in ours)

    new = sorted(set(ours) - set(theirs))
    if manifest == "dynamicrafter_512_keys.json":
        # fixtures README: KeyVID UNet = DynamiCrafter UNet + 54 tensors.
        assert len(new) == 54
        assert all(
            re.search(r"attn2\.(beta|to_k_ap\.weight|to_v_ap\.weight)$", k)
            or k.startswith(("frame_idx_embedding.", "audio_proj_2."))
            for k in new
        ), new
    else:
        assert new == []


def _role(key: str) -> str:
    """A parameter's place inside its block, e.g. "transformer_blocks.0.attn2.beta"."""
    block = r"^(input_blocks\.\d+\.\d+|output_blocks\.\d+\.\d+|middle_block\.\d+|init_attn\.\d+|layers\.\d+)\."
    return re.sub(block, "", key)


def _init_kind(t: torch.Tensor) -> str:
    if torch.all(t == 0):
        return "zeros"
    if torch.all(t == 1):
        return "ones"
    return "random"


@needs_fixtures
@pytest.mark.parametrize("manifest", ["keyvid_generator_unet_keys.json", "dynamicrafter_512_keys.json"])
def test_initialisation_matches_upstream(manifest):
    """Every UNet/Resampler parameter role that upstream initialises to zeros/ones/random is
    initialised the same way here (checked on the tiny model, which has every role)."""
    expected: dict[str, set[str]] = {}
    for e in _manifest(manifest):
        if e["key"].startswith(UNET_PREFIX):
            key = "unet." + unet_key_from_upstream(e["key"][len(UNET_PREFIX):])
        elif e["key"].startswith(IMAGE_PROJ_PREFIX):
            key = "proj." + e["key"][len(IMAGE_PROJ_PREFIX):]
        else:
            continue
        expected.setdefault(_role(key.split(".", 1)[1]) + "@" + key.split(".", 1)[0], set()).add(e["init"])
    torch.manual_seed(0)
    ours = {f"unet.{k}": v for k, v in keyframe_unet_tiny().state_dict().items()}
    ours.update({f"proj.{k}": v for k, v in _tiny_resampler().state_dict().items()})
    seen = set()
    for key, value in ours.items():
        role = _role(key.split(".", 1)[1]) + "@" + key.split(".", 1)[0]
        if role not in expected:  # KeyVID-only parameters, absent from DynamiCrafter
            assert manifest.startswith("dynamicrafter"), key
            continue
        assert len(expected[role]) == 1, (role, expected[role])
        assert _init_kind(value) == next(iter(expected[role])), key
        seen.add(role)
    assert seen == set(expected)
    # The KeyVID-new parameters upstream zero-initialises.
    for role in ("transformer_blocks.0.attn2.to_k_ap.weight", "transformer_blocks.0.attn2.to_v_ap.weight",
                 "transformer_blocks.0.attn2.beta", "frame_idx_embedding.2.weight", "frame_idx_embedding.2.bias"):
        if manifest.startswith("keyvid"):
            assert expected[role + "@unet"] == {"zeros"}


# ------------------------------------------------------------------------------------ converters


def test_convert_keyvid_round_trip():
    torch.manual_seed(0)
    unet, image_proj = keyframe_unet_tiny(), _tiny_resampler()
    unet_sd, proj_sd = convert_keyvid(_upstream_checkpoint(unet, image_proj), unet, image_proj)
    assert unet_sd.keys() == unet.state_dict().keys()
    assert all(torch.equal(unet_sd[k], v) for k, v in unet.state_dict().items())
    assert all(torch.equal(proj_sd[k], v) for k, v in image_proj.state_dict().items())
    with pytest.raises(ValueError, match="missing"):
        other_layout = keyframe_unet_tiny(frame_index_mode="latent")
        convert_keyvid(_upstream_checkpoint(unet, image_proj), other_layout, image_proj)


def test_convert_dynamicrafter():
    torch.manual_seed(0)
    source, source_proj = keyframe_unet_tiny(), _tiny_resampler(video_length=16)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    dc = _upstream_checkpoint(source, source_proj)
    kv_only = r"attn2\.(beta|to_k_ap\.weight|to_v_ap\.weight)$|frame_idx_embedding\.|audio_proj_2\."
    dc = {k: v for k, v in dc.items() if not re.search(kv_only, k)}

    torch.manual_seed(1)
    unet, image_proj = keyframe_unet_tiny(), _tiny_resampler(video_length=48)
    unet_sd, proj_sd, new_keys = convert_dynamicrafter(dc, unet, image_proj)
    assert new_keys == sorted(k for k in unet.state_dict() if re.search(kv_only, k))
    assert len(new_keys) == 3 * 7 + 4 + 2  # 7 spatial transformers in the tiny UNet
    for k in new_keys:
        if re.search(r"to_k_ap|to_v_ap|beta|frame_idx_embedding\.2", k):
            assert torch.all(unet_sd[k] == 0), k
    assert proj_sd["latents"].shape == (1, 16 * 48, 64)
    unet.load_state_dict(unet_sd, strict=True)
    image_proj.load_state_dict(proj_sd, strict=True)

    # With DynamiCrafter's weights and zero new layers, audio and frame index change nothing.
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 8, 2, 8, 8, generator=g)
    context = torch.randn(1, 77 + 32, 1024, generator=g)
    audio = torch.randn(1, 2, 4, 768, generator=g)
    unet.eval()
    with torch.no_grad():
        y = unet(x, torch.tensor([500]), context, audio, fs=torch.tensor([8]), frame_idx=torch.tensor([[0, 30]]))
        y2 = unet(x, torch.tensor([500]), context, -audio, fs=torch.tensor([8]), frame_idx=torch.tensor([[3, 9]]))
    assert y.abs().max() > 0
    torch.testing.assert_close(y, y2, atol=1e-6, rtol=0)


def test_interpolate_query_latents():
    g = torch.Generator().manual_seed(0)
    per_query = torch.randn(1, 1, 16, 8, generator=g)
    constant_in_time = per_query.expand(1, 16, 16, 8).reshape(1, 256, 8)
    out = interpolate_query_latents(constant_in_time, video_length=48)
    assert out.shape == (1, 768, 8)
    torch.testing.assert_close(out.reshape(1, 48, 16, 8), per_query.expand(1, 48, 16, 8))
    ramp = torch.arange(16.0)[None, :, None, None].expand(1, 16, 16, 8).reshape(1, 256, 8)
    stretched = interpolate_query_latents(ramp, video_length=48).reshape(48, 16, 8)[:, 0, 0]
    # align_corners=False: output frame j samples input position (j + 0.5) / 3 - 0.5, clamped at 0.
    expected = ((torch.arange(48.0) + 0.5) / 3 - 0.5).clamp(0, 15)
    torch.testing.assert_close(stretched, expected)


def test_select_keyframe_tokens():
    tokens = torch.randn(2, 48 * 16, 8)
    frame_idx = torch.tensor([[0, 7, 19, 47], [3, 3, 10, 46]])
    out = select_keyframe_tokens(tokens, frame_idx)
    assert out.shape == (2, 4 * 16, 8)
    for b in range(2):
        expected = torch.cat([tokens[b, 16 * f: 16 * f + 16] for f in frame_idx[b].tolist()])
        assert torch.equal(out[b], expected)


def test_resampler_matches_upstream_attention_formula():
    """The upstream PerceiverAttention (q, k scaled by dim_head**-0.25, float softmax), written out."""
    torch.manual_seed(0)
    model = _tiny_resampler(video_length=3).eval()
    x = torch.randn(2, 5, 32)

    def reference(x):
        latents = model.latents.repeat(x.shape[0], 1, 1)
        x = model.proj_in(x)
        for attn, ff in model.layers:
            xn, ln = attn.norm1(x), attn.norm2(latents)
            q = attn.to_q(ln)
            k, v = attn.to_kv(torch.cat([xn, ln], 1)).chunk(2, -1)
            q, k, v = (z.view(2, z.shape[1], attn.heads, -1).transpose(1, 2) for z in (q, k, v))
            scale = 16 ** -0.25
            w = torch.softmax(((q * scale) @ (k * scale).transpose(-2, -1)).float(), -1)
            out = (w @ v).permute(0, 2, 1, 3).reshape(2, latents.shape[1], -1)
            latents = attn.to_out(out) + latents
            latents = ff(latents) + latents
        return model.norm_out(model.proj_out(latents))

    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 3 * 16, 48)
        torch.testing.assert_close(y, reference(x), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------- files and CLI


def test_load_state_dict_formats(tmp_path):
    from safetensors.torch import save_file

    key = "model.diffusion_model.out.2.bias"
    sd = {key: torch.arange(4.0)}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "model.ckpt")
    save_file(sd, tmp_path / "model.safetensors")
    for name in ("model.ckpt", "model.safetensors"):
        loaded = load_state_dict(tmp_path / name)
        assert loaded.keys() == sd.keys() and torch.equal(loaded[key], sd[key])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_state_dict(tmp_path / "nope.ckpt")
    torch.save({"state_dict": sd, "hparams": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.ckpt")
    with pytest.raises(ValueError, match="weights_only"):
        load_state_dict(tmp_path / "pickled.ckpt")


@pytest.mark.parametrize("kind", ["dynamicrafter", "keyvid_generator"])
def test_cli_writes_loadable_directories(tmp_path, monkeypatch, kind):
    # The CLI builds full-size models; swap in the tiny ones.
    monkeypatch.setattr(convert, "keyframe_unet_512", lambda interpolator=False: keyframe_unet_tiny(interpolator))
    monkeypatch.setattr(convert, "image_resampler_512", lambda video_length=48: _tiny_resampler(video_length))
    torch.manual_seed(0)
    unet, image_proj = keyframe_unet_tiny(), _tiny_resampler(16 if kind == "dynamicrafter" else 48)
    torch.save({"state_dict": _upstream_checkpoint(unet, image_proj)}, tmp_path / "src.ckpt")

    convert.main(["--src", str(tmp_path / "src.ckpt"), "--kind", kind, "--out", str(tmp_path / "out")])

    loaded = KeyframeUNet.from_pretrained(tmp_path / "out" / "unet")
    proj = Resampler.from_pretrained(tmp_path / "out" / "image_proj")
    assert torch.equal(loaded.state_dict()["out.2.weight"], unet.state_dict()["out.2.weight"])
    assert proj.latents.shape == (1, 16 * 48, 64)
