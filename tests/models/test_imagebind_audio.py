import json

import pytest
import torch

from keyvid.models.imagebind_audio import (
    BiasKVAttention,
    ImageBindAudio,
    audio_tokens_per_frame,
    frame_token_index,
    imagebind_audio,
    imagebind_audio_huge,
    imagebind_audio_tiny,
    interpolate_pos_embed,
    load_imagebind_audio,
    to_upstream_key,
)
from tests.conftest import FIXTURES, needs_fixtures

SD = "sd."


def _parity():
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / "imagebind_audio_tiny_parity.safetensors"))


def _fixture_model(fx, dtype=torch.float32):
    """The fixture's tiny audio path (no head: forward_audio never uses it)."""
    model = imagebind_audio(64, 2, 4, stride=(10, 4), out_embed_dim=None).eval()
    theirs = {k[len(SD):]: v for k, v in fx.items() if k.startswith(SD)}
    model.load_state_dict({k: theirs[to_upstream_key(k)] for k in model.state_dict()})
    return model.to(dtype)


@needs_fixtures
def test_pos_embed_interpolation_12x19_to_12x48_exact():
    fx = _parity()
    src = fx["src_pos_embed_12x19"].float()  # the fixture interpolated the fp16 values in float32
    out = interpolate_pos_embed(src, (12, 19), (12, 48))
    assert out.shape == (1, 577, 64)
    stored = fx[SD + "modality_preprocessors.audio.pos_embedding_helper.pos_embed"]
    torch.testing.assert_close(out, stored, rtol=0, atol=0)
    # The cls row is carried over untouched.
    assert torch.equal(out[:, 0], src[:, 0])


@needs_fixtures
def test_tiny_tokens_match_upstream():
    fx = _parity()
    mel = fx["in.mel"]
    with torch.no_grad():
        model = _fixture_model(fx)
        x = model.stem(mel)
        x = torch.cat([model.cls_token.expand(2, -1, -1), x], 1) + model.pos_embed
        torch.testing.assert_close(x, fx["mid.trunk_input_tokens.f32"], rtol=0, atol=1e-6)
        torch.testing.assert_close(model(mel), fx["out.tokens.f32"], rtol=0, atol=2e-5)
        tokens64 = _fixture_model(fx, torch.float64)(mel.double())
    torch.testing.assert_close(tokens64, fx["out.tokens.f64"], rtol=0, atol=1e-10)


@needs_fixtures
def test_generator_token_selection_upstream_layout():
    fx = _parity()
    table = frame_token_index(577, num_frames=48, tokens_per_frame=12, layout="upstream")
    assert torch.equal(table, fx["idx.select_table48"])
    assert torch.equal(table[fx["gen.frame_idx"]], fx["idx.gen"])
    tokens = fx["out.tokens.f64"]
    out = audio_tokens_per_frame(tokens, fx["gen.frame_idx"], layout="upstream")
    assert out.shape == (2, 12, 12, 64)
    torch.testing.assert_close(out, fx["out.gen_tokens.f64"], rtol=0, atol=0)
    # upstream's split_audio segments (cls + the frame's columns), which "aligned" is built on
    assert torch.equal(frame_token_index(577, 48, 13, "aligned"), fx["idx.split48"])
    assert torch.equal(frame_token_index(577, 12, 49, "aligned"), fx["idx.split12"])


def test_aligned_layout_takes_each_frames_own_column():
    f, t, d = 12, 48, 3
    # token 1 + f*48 + t carries (row f, column t); cls carries -1
    grid = torch.stack(torch.meshgrid(torch.arange(f), torch.arange(t), indexing="ij"), -1).reshape(-1, 2).float()
    tokens = torch.cat([torch.full((1, 2), -1.0), grid], 0)
    tokens = torch.cat([tokens, torch.zeros(tokens.shape[0], d - 2)], 1)[None].repeat(2, 1, 1)
    frame_idx = torch.tensor([[0, 5, 47], [1, 2, 3]])
    out = audio_tokens_per_frame(tokens, frame_idx)  # aligned, 12 tokens
    assert out.shape == (2, 3, 12, d)
    assert torch.equal(out[..., 1], frame_idx[..., None].float().expand(-1, -1, 12))  # column == frame
    assert torch.equal(out[0, 0, :, 0], torch.arange(12.0))  # all 12 frequency rows, in order
    with_cls = audio_tokens_per_frame(tokens, frame_idx, tokens_per_frame=13)
    assert torch.all(with_cls[:, :, 0, 0] == -1) and torch.equal(with_cls[:, :, 1:], out)
    # upstream's layout drifts by one token per frame value: frame 47 is mostly column 43
    up = audio_tokens_per_frame(tokens[:1], torch.tensor([[47]]), layout="upstream")[0, 0, :, 1]
    assert (up == 43).sum() >= 8
    with pytest.raises(ValueError, match="frame_idx"):
        audio_tokens_per_frame(tokens, torch.tensor([[48]]).repeat(2, 1))
    with pytest.raises(ValueError, match="aligned layout"):
        audio_tokens_per_frame(tokens, frame_idx, tokens_per_frame=10)


def test_bias_kv_attention_equals_torch_mha():
    torch.manual_seed(0)
    ours = BiasKVAttention(32, 4)
    ref = torch.nn.MultiheadAttention(32, 4, bias=True, add_bias_kv=True, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 7, 32)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=0, atol=1e-6)


@needs_fixtures
def test_huge_config_covers_manifest():
    manifest = json.loads((FIXTURES / "imagebind_huge_audio_keys.json").read_text())
    expected = {k["key"]: tuple(k["shape"]) for k in manifest["keys"]}
    with torch.device("meta"):
        model = imagebind_audio_huge()
    ours = {to_upstream_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == expected
    assert model.grid == (12, 48)
    with torch.device("meta"):
        assert imagebind_audio_huge(stride=(10, 10)).grid == (12, 19)


def _write_fake_checkpoint(fx, path, prefix="", drop=()):
    """The fixture's weights in imagebind_huge.pth layout: 12x19 pos_embed, other modalities around."""
    sd = {prefix + k[len(SD):]: v.float() for k, v in fx.items() if k.startswith(SD)}
    sd[prefix + "modality_preprocessors.audio.pos_embedding_helper.pos_embed"] = fx["src_pos_embed_12x19"].float()
    sd[prefix + "modality_trunks.vision.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 3)
    for key in drop:
        sd.pop(prefix + key)
    torch.save(sd, path)


@needs_fixtures
def test_loader_maps_keys_and_interpolates(tmp_path):
    fx = _parity()
    ckpt = tmp_path / "imagebind_huge.pth"
    _write_fake_checkpoint(fx, ckpt, prefix="imagebind_model.")  # as inside a KeyVID checkpoint
    model = load_imagebind_audio(ckpt, imagebind_audio(64, 2, 4, out_embed_dim=None).eval())
    with torch.no_grad():
        torch.testing.assert_close(model(fx["in.mel"]), fx["out.tokens.f32"], rtol=0, atol=2e-5)
    # A model without cls token (the upstream localizer's 29 x 48 encoder) drops the cls row.
    no_cls = ImageBindAudio(64, 2, 4, stride=(4, 4), cls_token=False, out_embed_dim=None)
    load_imagebind_audio(ckpt, no_cls)
    assert no_cls.pos_embed.shape == (1, 29 * 48, 64)


@needs_fixtures
def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_imagebind_audio(tmp_path / "nowhere.pth", imagebind_audio_tiny())
    fx = _parity()
    ckpt = tmp_path / "partial.pth"
    _write_fake_checkpoint(fx, ckpt, drop=["modality_trunks.audio.blocks.1.mlp.fc2.bias"])
    with pytest.raises(KeyError, match=r"blocks\.1\.mlp\.fc2\.bias"):
        load_imagebind_audio(ckpt, imagebind_audio(64, 2, 4, out_embed_dim=None))
    # the tiny builder has a head, which this audio-path-only checkpoint lacks
    with pytest.raises(KeyError, match=r"modality_heads\.audio\.2\.weight"):
        load_imagebind_audio(ckpt, imagebind_audio_tiny())


def test_tiny_embed_and_input_check():
    torch.manual_seed(0)
    model = imagebind_audio_tiny().eval()
    mel = torch.randn(2, 1, 128, 204)
    emb = model.embed(mel)
    assert emb.shape == (2, 32)
    torch.testing.assert_close(emb.norm(dim=-1), torch.full((2,), 20.0))
    with pytest.raises(ValueError, match="128, 204"):
        model(torch.randn(2, 1, 128, 198))
