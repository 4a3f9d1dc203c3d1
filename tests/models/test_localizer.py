
import pytest
import torch

from keyvid.models.imagebind_audio import ImageBindAudio
from keyvid.models.localizer import (
    KeyframeLocalizer,
    keyframe_localizer,
    keyframe_localizer_huge,
    keyframe_localizer_tiny,
)


def _mel(b=2, frames=204, seed=0):
    return torch.randn(b, 1, 128, frames, generator=torch.Generator().manual_seed(seed))


def test_paper_variant_scores_one_per_frame_in_unit_interval():
    torch.manual_seed(0)
    model = keyframe_localizer_tiny().eval()
    assert model.variant == "paper" and model.encoder.grid == (12, 48)
    scores = model(_mel())
    assert scores.shape == (2, 48)
    assert torch.all((scores >= 0) & (scores <= 1))
    # Appendix A: the interpolated position embedding stays frozen; the rest trains.
    assert not model.encoder.pos_embed.requires_grad
    assert model.encoder.stem.proj.weight.requires_grad


def test_upstream_variant_shapes_and_grid():
    torch.manual_seed(0)
    model = keyframe_localizer_tiny("upstream").eval()
    assert model.encoder.grid == (29, 48) and model.encoder.num_prefix_tokens == 0
    assert model.encoder.pos_embed.requires_grad
    out = model(_mel())
    assert out.shape == (2, 48)
    # upstream's own 198-frame crop: 29 x 46 = 1334 tokens mixed into 48 frames
    up198 = keyframe_localizer(32, 1, 2, variant="upstream", mel_frames=198)
    assert up198.token_mix.in_features == 1334
    assert up198(_mel(frames=198)).shape == (2, 48)


def test_losses_per_variant():
    pred, target = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.0]])
    paper, upstream = keyframe_localizer_tiny("paper"), keyframe_localizer_tiny("upstream")
    torch.testing.assert_close(paper.loss(pred, target), torch.tensor(0.75))  # L1, Eq. 3
    torch.testing.assert_close(upstream.loss(pred, target), torch.tensor(0.625))  # MSE
    with pytest.raises(ValueError, match="shape"):
        paper.loss(pred, target[:, :1])


def test_columns_map_to_frames_and_resample():
    torch.manual_seed(0)
    model = keyframe_localizer_tiny()
    # tokens whose value is the time column: per-frame features must equal the column index
    f, t = model.encoder.grid
    tokens = torch.arange(t, dtype=torch.float32).repeat(f)[None, :, None].expand(1, -1, 4)
    tokens = torch.cat([torch.full((1, 1, 4), 99.0), tokens], 1)
    torch.testing.assert_close(model.frame_features(tokens)[0, :, 0], torch.arange(48.0))
    # stride (10, 10): 19 columns resampled to 48 frames, monotone, spanning the clip
    coarse = KeyframeLocalizer(ImageBindAudio(32, 1, 2, stride=(10, 10), out_embed_dim=None))
    assert coarse.encoder.grid == (12, 19)
    tokens19 = torch.cat([torch.zeros(1, 1, 4), torch.arange(19.0).repeat(12)[None, :, None].expand(1, -1, 4)], 1)
    feats = coarse.frame_features(tokens19)[0, :, 0]
    assert feats.shape == (48,) and torch.all(feats[1:] >= feats[:-1]) and feats[0] == 0 and feats[-1] == 18


def test_tiny_overfits_fixed_batch():
    torch.manual_seed(0)
    model = keyframe_localizer_tiny()
    mel = _mel(4, seed=1)
    target = torch.rand(4, 48, generator=torch.Generator().manual_seed(2))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(30):
        loss = model.loss(model(mel), target)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())


def test_bad_variant_and_input():
    with pytest.raises(ValueError, match="variant"):
        keyframe_localizer_tiny("wav2vec")
    with pytest.raises(ValueError, match="mel"):
        keyframe_localizer_tiny()(torch.randn(1, 128, 204))


def test_huge_builds_on_meta():
    with torch.device("meta"):
        model = keyframe_localizer_huge()
    assert model.encoder.pos_embed.shape == (1, 577, 768)
    assert model.readout.in_features == 768 and model.frame_bias.shape == (48,)
