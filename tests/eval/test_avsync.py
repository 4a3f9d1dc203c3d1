import numpy as np
import pytest
import torch

from keyvid.eval.avsync import (AVSyncClassifier, align_prob, alignsync, audio_mel, avsync_classifier,
                                avsync_classifier_tiny, avsync_logits, image_audio_similarity,
                                load_avsync_classifier, mean_std, relsync)
from keyvid.models.imagebind_audio import imagebind_audio_tiny
from keyvid.models.imagebind_vision import (imagebind_vision_huge, imagebind_vision_tiny,
                                            load_imagebind_vision, to_upstream_key)


def test_relsync_and_alignsync_match_avsyncd_formulas():
    gen, ref = torch.tensor([1.0, -2.0]), torch.tensor([1.0, 0.5])
    rel = relsync(gen, ref)
    expected = torch.exp(gen) / (torch.exp(ref) + torch.exp(gen))
    assert torch.allclose(rel, expected.double()) and rel[0] == 0.5  # ground truth against itself
    gen_sims, ref_first = torch.tensor([[0.2, 0.3], [0.1, 0.0]]), torch.tensor([0.25, 0.1])
    probs = (torch.exp(gen_sims) / (torch.exp(ref_first)[:, None] + torch.exp(gen_sims))).mean(1)
    assert torch.allclose(align_prob(gen_sims, ref_first), probs.double())
    assert torch.allclose(alignsync(gen_sims, ref_first, rel), (probs * expected).double())
    m, s = mean_std(rel)
    assert m == pytest.approx(float(expected.mean())) and s > 0


def test_classifier_runs_and_loads_avsyncd_folder(tmp_path):
    torch.manual_seed(0)
    net = avsync_classifier_tiny().eval()
    mels = torch.randn(2, 1, 128, 204)
    clips = torch.rand(2, 12, 3, 16, 16)
    logits = avsync_logits(net, mels, clips, size=32)
    assert logits.shape == (2,) and torch.isfinite(logits).all()
    # the full-size classifier's key names, saved the way AVSyncD's diffusers sub-folders hold them
    full = avsync_classifier()
    for part in ("audio_encoder", "video_encoder", "head"):
        (tmp_path / part).mkdir()
        torch.save(getattr(full, part).state_dict(), tmp_path / part / "diffusion_pytorch_model.bin")
    head_keys = set(full.head.state_dict())
    assert head_keys == {"fc.0.weight", "fc.0.bias", "fc.3.weight", "fc.3.bias", "fc.6.weight", "fc.6.bias"}
    assert "conv5x.0.res_conv.weight" in full.video_encoder.state_dict()
    loaded = load_avsync_classifier(tmp_path)
    assert isinstance(loaded, AVSyncClassifier)
    with pytest.raises(FileNotFoundError, match="checkpoint-40000"):
        load_avsync_classifier(tmp_path / "absent")


def test_image_audio_similarity_is_cosine():
    torch.manual_seed(0)
    vision, audio = imagebind_vision_tiny(32).eval(), imagebind_audio_tiny(stride=(10, 10), out_embed_dim=32).eval()
    sims = image_audio_similarity(vision, audio, torch.rand(2, 12, 3, 20, 20), torch.randn(2, 1, 128, 204))
    assert sims.shape == (2, 12) and float(sims.abs().max()) <= 1.0 + 1e-5


def test_vision_keys_follow_imagebind_and_load(tmp_path):
    with torch.device("meta"):  # names only: no 630 M-parameter allocation
        huge_keys = {to_upstream_key(k) for k in imagebind_vision_huge().state_dict()}
    for k in ("modality_preprocessors.vision.rgbt_stem.proj.1.weight", "modality_preprocessors.vision.cls_token",
              "modality_preprocessors.vision.pos_embedding_helper.pos_embed",
              "modality_trunks.vision.pre_transformer_layer.0.weight",
              "modality_trunks.vision.blocks.31.attn.in_proj_weight", "modality_trunks.vision.blocks.0.mlp.fc2.bias",
              "modality_heads.vision.0.bias", "modality_heads.vision.2.weight"):
        assert k in huge_keys
    torch.manual_seed(0)
    src = imagebind_vision_tiny()
    torch.save({"imagebind_model." + k: v for k, v in src.upstream_state_dict().items()}, tmp_path / "ib.pth")
    dst = load_imagebind_vision(tmp_path / "ib.pth", imagebind_vision_tiny())
    x = torch.randn(1, 3, 28, 28)
    assert torch.allclose(src.eval().embed(x), dst.embed(x))
    with pytest.raises(FileNotFoundError, match="imagebind_huge"):
        load_imagebind_vision(tmp_path / "none.pth")


def test_audio_mel_keeps_centre_two_seconds():
    wave = np.zeros((1, 64000), np.float32)
    wave[:, 24000:40000] = np.sin(np.arange(16000) / 3.0)
    mel = audio_mel(wave, 16000)
    assert mel.shape == (1, 128, 204)
    assert torch.equal(mel, audio_mel(wave[:, 16000:48000], 16000))
