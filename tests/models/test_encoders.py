import pytest
import torch

from keyvid.models.encoders import (
    FrozenCLIPImageEncoder,
    FrozenCLIPTextEncoder,
    FrozenVAE,
    tiny_clip_image,
    tiny_clip_text,
    tiny_vae,
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    torch.manual_seed(0)


def test_vae_encode_decode_video_shapes_and_chunking():
    vae = tiny_vae()
    video = torch.rand(2, 3, 5, 32, 48) * 2 - 1
    g = torch.Generator().manual_seed(0)
    latents = vae.encode(video, generator=g)
    assert latents.shape == (2, 4, 5, 16, 24)
    assert vae.decode(latents).shape == (2, 3, 5, 32, 48)
    # Frames are independent: decoding in chunks of 1 or 2 frames gives the same video.
    one_by_one = FrozenVAE(vae.vae, chunk_frames=1)
    torch.testing.assert_close(one_by_one.decode(latents), vae.decode(latents), atol=1e-5, rtol=1e-5)
    # Encoding samples the scaled posterior of each frame, in "(b t)" order.
    frames = video.permute(0, 2, 1, 3, 4).reshape(10, 3, 32, 48)
    posterior = vae.vae.encode(frames).latent_dist
    sampled = latents.permute(0, 2, 1, 3, 4).reshape(10, 4, 16, 24) / vae.scale_factor
    assert ((sampled - posterior.mean).abs() <= 6 * posterior.std + 1e-6).all()


def test_frozen_stays_frozen():
    vae = tiny_vae()
    parent = torch.nn.ModuleDict({"vae": vae, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert not vae.training and not vae.vae.training
    assert parent["head"].training
    assert not any(p.requires_grad for p in vae.parameters())


def test_text_encoder_penultimate_tokens_and_ids():
    enc = tiny_clip_text()
    out = enc(["a cat meows", ""])
    assert out.shape == (2, 77, 32)
    ids = enc.tokenize(["a cat meows", ""])
    assert ids.shape == (2, 77) and ids[1, 0] == enc.tokenizer.bos_token_id and ids[1, 1] == enc.tokenizer.eos_token_id
    assert (ids[1, 2:] == 0).all()  # open_clip pads with id 0
    torch.testing.assert_close(enc(ids), out)
    hidden = enc.model(input_ids=ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(out, enc.model.final_layer_norm(hidden[1]))  # 2 layers: [emb, l1, l2]
    assert not torch.allclose(out, enc.model(input_ids=ids).last_hidden_state)


def test_image_encoder_all_tokens():
    enc = tiny_clip_image()
    image = torch.rand(2, 3, 40, 64) * 2 - 1  # resized to 32 x 32 like upstream's 320 x 512 -> 224
    tokens = enc(image)
    assert tokens.shape == (2, 1 + (32 // 8) ** 2, 40)
    pixels = enc.preprocess(torch.zeros(1, 3, 32, 32))
    torch.testing.assert_close(pixels[0, :, 0, 0], (0.5 - enc.mean.flatten()) / enc.std.flatten())


def test_missing_paths_name_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "vae"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        FrozenVAE.from_pretrained(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=str(empty / "config.json")):
        FrozenCLIPTextEncoder.from_pretrained(empty)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        FrozenCLIPImageEncoder.from_pretrained(missing)


def test_save_then_load_round_trip_offline(tmp_path):
    vae, text, image = tiny_vae(), tiny_clip_text(), tiny_clip_image()
    vae.save_pretrained(tmp_path / "vae")
    text.save_pretrained(tmp_path / "text")
    image.save_pretrained(tmp_path / "image")

    video = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    latents = torch.randn(1, 4, 2, 8, 8)
    vae2 = FrozenVAE.from_pretrained(tmp_path / "vae", chunk_frames=2)
    torch.testing.assert_close(vae2.decode(latents), vae.decode(latents))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    torch.testing.assert_close(vae2.encode(video, g2), vae.encode(video, g1))

    text2 = FrozenCLIPTextEncoder.from_pretrained(tmp_path / "text")
    torch.testing.assert_close(text2(["a dog barks"]), text(["a dog barks"]))

    img = torch.rand(2, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(FrozenCLIPImageEncoder.from_pretrained(tmp_path / "image")(img), image(img))


def test_text_encoder_without_tokenizer_takes_ids(tmp_path):
    text = tiny_clip_text()
    text.model.save_pretrained(tmp_path)
    loaded = FrozenCLIPTextEncoder.from_pretrained(tmp_path)
    assert loaded.tokenizer is None
    ids = text.tokenize(["rain"])
    torch.testing.assert_close(loaded(ids), text(ids))
    with pytest.raises(ValueError, match="token ids"):
        loaded(["rain"])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tok")):
        FrozenCLIPTextEncoder.from_pretrained(tmp_path, tokenizer_path=tmp_path / "tok")


def test_towers_load_from_a_full_clip_model_dir(tmp_path):
    # The OpenCLIP ViT-H/14 weights ship in transformers format as one CLIPModel (both towers).
    from transformers import CLIPConfig, CLIPModel

    text, image = tiny_clip_text(), tiny_clip_image()
    config = CLIPConfig(
        text_config=text.model.config.to_dict(), vision_config=image.model.config.to_dict(), projection_dim=16
    )
    full = CLIPModel(config).eval()
    full.save_pretrained(tmp_path)
    text.tokenizer.save_pretrained(tmp_path)

    ids = text.tokenize(["thunder"])
    hidden = full.text_model(input_ids=ids, output_hidden_states=True).hidden_states
    loaded_text = FrozenCLIPTextEncoder.from_pretrained(tmp_path)
    torch.testing.assert_close(loaded_text(["thunder"]), full.text_model.final_layer_norm(hidden[-2]))

    img = torch.rand(1, 3, 32, 32) * 2 - 1
    loaded_image = FrozenCLIPImageEncoder.from_pretrained(tmp_path)
    expected = full.vision_model(pixel_values=loaded_image.preprocess(img)).last_hidden_state
    torch.testing.assert_close(loaded_image(img), expected)


def test_pixel_vae_round_trip_save_load_and_errors(tmp_path):
    """PixelVAE (encoders.kind=pixel): pooling encoder, bilinear decoder; a video constant over each
    factor x factor block comes back from encode -> decode, and the saved folder loads through
    FrozenVAE.from_pretrained (what KeyVIDPipeline.from_pretrained calls)."""
    from keyvid.models.encoders import PixelVAE

    vae = PixelVAE(factor=4, scale_factor=2.0)
    coarse = torch.rand(2, 3, 5, 4, 6) * 2 - 1
    video = coarse.repeat_interleave(4, -2).repeat_interleave(4, -1)  # "b 3 t 16 24"
    z = vae.encode(video)
    assert z.shape == (2, 4, 5, 4, 6) and vae.downsample_factor == 4
    torch.testing.assert_close(z[:, :3], 2.0 * coarse)
    torch.testing.assert_close(z[:, 3], 2.0 * coarse.mean(1))
    torch.testing.assert_close(vae.sample_moments(vae.encode_moments(video)), z)
    smooth = torch.linspace(-1, 1, 24).expand(1, 3, 2, 16, 24)  # bilinear keeps a ramp's interior
    assert (vae.decode(vae.encode(smooth)) - smooth)[..., 4:-4].abs().max() < 0.05
    vae.save_pretrained(tmp_path / "vae")
    loaded = FrozenVAE.from_pretrained(tmp_path / "vae")
    assert isinstance(loaded, PixelVAE) and loaded.factor == 4 and loaded.scale_factor == 2.0
    torch.testing.assert_close(loaded.decode(z), vae.decode(z))
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.train().training
    with pytest.raises(ValueError, match="factor"):
        PixelVAE(factor=0)


def test_build_encoders_kinds():
    from omegaconf import OmegaConf

    from keyvid.models.encoders import PixelVAE
    from keyvid.models.io import build_encoders

    enc = build_encoders(OmegaConf.create({"kind": "pixel", "pixel_factor": 4}))
    assert isinstance(enc.vae, PixelVAE) and enc.vae.factor == 4
    with pytest.raises(ValueError, match="encoders.kind='vqgan'.*pixel"):
        build_encoders(OmegaConf.create({"kind": "vqgan"}))


def test_clip_resize_is_upstreams_antialiased_bicubic():
    """Our resize (no private helper of another library) equals kornia's antialiased bicubic as
    diffusers carries it for SVD, where that helper still exists; and it blurs before downsampling."""
    from keyvid.models.encoders import resize_antialiased

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 320, 512, generator=g) * 2 - 1
    out = resize_antialiased(x, (224, 224))
    assert out.shape == (2, 3, 224, 224)
    plain = torch.nn.functional.interpolate(x, size=(224, 224), mode="bicubic", align_corners=True)
    assert out.std() < plain.std()  # the blur removes what a plain downsample aliases
    try:
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing as reference,
        )
    except ImportError:  # diffusers may drop its private helper; the blur check above still holds
        return
    for shape in ((2, 3, 320, 512), (1, 3, 16, 24), (1, 3, 1000, 700)):
        y = torch.rand(*shape, generator=g) * 2 - 1
        torch.testing.assert_close(resize_antialiased(y, (224, 224)), reference(y, (224, 224)), rtol=0, atol=1e-6)
