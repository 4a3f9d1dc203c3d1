"""FreeNoise: window fusion of temporal attention, noise rescheduling, the upstream noise option."""

import pytest
import torch

from keyvid.diffusion.freenoise import (
    freenoise_noise,
    initial_noise,
    keyframe_interpolated_noise,
    pyramid_weights,
    temporal_self_attentions,
    temporal_windows,
    window_fused_attend,
    window_starts,
)
from keyvid.models.attention import attend
from keyvid.models.unet import keyframe_unet_tiny

HEADS = 2


def _qkv(b=3, n=48, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, n, c, generator=g, dtype=torch.float64) for _ in range(3)]


def _loop_reference(q, k, v, window, stride):
    """Hand-written fusion: one window at a time, weighted sum over windows / sum of weights."""
    b, n, c = q.shape
    total = torch.zeros_like(q)
    count = torch.zeros(n, dtype=q.dtype)
    weights = pyramid_weights(window).to(q.dtype)
    for s in window_starts(n, window, stride):
        out = attend(q[:, s : s + window], k[:, s : s + window], v[:, s : s + window], HEADS)
        total[:, s : s + window] += out * weights[:, None]
        count[s : s + window] += weights
    return total / count[:, None], out  # fused, and the last window's output


def test_window_starts_and_weights():
    assert window_starts(48, 12, 6) == [0, 6, 12, 18, 24, 30, 36]
    assert window_starts(50, 12, 6) == [0, 6, 12, 18, 24, 30, 36, 38]  # last window reaches the end
    assert window_starts(10, 12, 6) == [0]
    assert pyramid_weights(12).tolist() == [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
    assert pyramid_weights(5).tolist() == [1, 2, 3, 2, 1]
    with pytest.raises(ValueError, match="stride"):
        window_starts(48, 4, 6)


def test_pyramid_weights_match_diffusers():
    from diffusers.models.attention import FreeNoiseTransformerBlock

    for n in (4, 5, 12, 16):
        # _get_frame_weights does not use self.
        assert pyramid_weights(n).tolist() == FreeNoiseTransformerBlock._get_frame_weights(None, n, "pyramid")


@pytest.mark.parametrize("window", [48, 64])
def test_window_covering_all_frames_is_plain_attention(window):
    q, k, v = _qkv()
    torch.testing.assert_close(window_fused_attend(q, k, v, HEADS, window=window, stride=6), attend(q, k, v, HEADS))


@pytest.mark.parametrize("n,window,stride", [(48, 12, 6), (50, 12, 6), (20, 8, 3), (16, 4, 4)])
def test_fused_equals_weighted_average_of_windows(n, window, stride):
    q, k, v = _qkv(n=n)
    fused = window_fused_attend(q, k, v, HEADS, window=window, stride=stride)
    ref, last = _loop_reference(q, k, v, window, stride)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-12)
    # Not upstream's "last window only": the frames of the last window differ once they are shared.
    if stride < window:
        s = window_starts(n, window, stride)[-1]
        assert (fused[:, s : s + window] - last).abs().max() > 1e-3


@pytest.mark.parametrize("n,window,stride", [(48, 12, 6), (50, 12, 6), (16, 4, 4), (30, 12, 4)])
def test_both_fused_forms_equal_the_reference(n, window, stride):
    """The two forms used when the stride divides the window: per-phase attention calls (eager) and
    one masked score matrix (under torch.compile), the latter also reached through torch.compile."""
    from keyvid.diffusion.freenoise import _masked_fused_attend, _phase_fused_attend

    q, k, v = _qkv(n=n)
    ref, _ = _loop_reference(q, k, v, window, stride)
    starts = window_starts(n, window, stride)
    for fn in (_phase_fused_attend, _masked_fused_attend):
        torch.testing.assert_close(fn(q, k, v, HEADS, starts, window, stride), ref, rtol=0, atol=1e-12)
    compiled = torch.compile(window_fused_attend, backend="eager", fullgraph=True)
    out = compiled(q.float(), k.float(), v.float(), HEADS, window=window, stride=stride)
    torch.testing.assert_close(out, ref.float(), rtol=0, atol=1e-5)


def test_toy_attention_hand_computed():
    # One head, width 1, n = 3, window 2, stride 1: windows {0,1} and {1,2}, weights [1, 1].
    # Frame 1's output is the plain mean of its two windows' outputs; frames 0 and 2 have one window.
    q = torch.tensor([[[0.0], [1.0], [2.0]]], dtype=torch.float64)
    k = q.clone()
    v = torch.tensor([[[10.0], [20.0], [30.0]]], dtype=torch.float64)
    out = window_fused_attend(q, k, v, 1, window=2, stride=1)

    def two(qi, kj):  # softmax over two keys, values picked by index
        w = torch.softmax(torch.tensor([qi * kj[0], qi * kj[1]], dtype=torch.float64), 0)
        return w

    w01 = two(1.0, (0.0, 1.0))
    w12 = two(1.0, (1.0, 2.0))
    frame1 = 0.5 * (w01[0] * 10 + w01[1] * 20) + 0.5 * (w12[0] * 20 + w12[1] * 30)
    assert out[0, 1, 0].item() == pytest.approx(frame1.item(), abs=1e-12)
    frame0 = two(0.0, (0.0, 1.0)) @ torch.tensor([10.0, 20.0], dtype=torch.float64)
    assert out[0, 0, 0].item() == pytest.approx(frame0.item(), abs=1e-12)


def test_temporal_windows_hook_in_unet():
    torch.manual_seed(0)
    model = keyframe_unet_tiny(interpolator=True).eval()
    # Give the zero-initialised projections weights so temporal attention reaches the output.
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)) and not m.weight.any():
            m.reset_parameters()
    b, t = 1, 16
    g = torch.Generator().manual_seed(1)
    inputs = dict(
        x=torch.randn(b, 8, t, 4, 4, generator=g),
        timesteps=torch.tensor([500]),
        context=torch.randn(b, 77 + 16 * t, 1024, generator=g),
        audio=torch.randn(b, t, 3, 768, generator=g),
        fs=torch.tensor([24]),
    )
    attns = temporal_self_attentions(model)
    assert len(attns) == 2 * 8  # init_attn, 2 encoder, 1 middle, 4 decoder temporal transformers, 2 attentions each
    with torch.no_grad():
        plain = model(**inputs)
        with temporal_windows(model, window=t, stride=4):
            full = model(**inputs)
        with temporal_windows(model, window=8, stride=4):
            windowed = model(**inputs)
        after = model(**inputs)
    torch.testing.assert_close(full, plain)
    assert (windowed - plain).abs().max() > 1e-4
    torch.testing.assert_close(after, plain)  # the hook is removed on exit
    assert all(a.window_attend is None for a in attns)


def test_freenoise_noise_reschedules_earlier_windows():
    shape = (2, 4, 48, 3, 5)
    g = torch.Generator().manual_seed(0)
    noise = freenoise_noise(shape, 12, 6, generator=g)
    base = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise[:, :, :12], base[:, :, :12])  # the first window is untouched
    for start in range(12, 48, 6):
        block = noise[:, :, start : start + 6]
        source = noise[:, :, start - 12 : start - 6]
        # a permutation of the frames one window earlier
        matches = [[torch.equal(block[:, :, i], source[:, :, j]) for j in range(6)] for i in range(6)]
        assert all(sum(row) == 1 for row in matches) and all(sum(col) == 1 for col in zip(*matches))
    # not the identity everywhere: the shuffle happened
    same = [torch.equal(noise[:, :, s : s + 6], noise[:, :, s - 12 : s - 6]) for s in range(12, 48, 6)]
    assert not all(same)


def test_freenoise_noise_matches_diffusers_shuffle_context():
    from types import SimpleNamespace

    from diffusers.pipelines.free_noise_utils import AnimateDiffFreeNoiseMixin

    host = SimpleNamespace(
        _free_noise_context_length=12, _free_noise_context_stride=6, _free_noise_noise_type="shuffle_context",
        vae_scale_factor=1,
    )
    theirs = AnimateDiffFreeNoiseMixin._prepare_latents_free_noise(
        host, 2, 4, 48, 3, 5, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(7)
    )
    ours = freenoise_noise((2, 4, 48, 3, 5), 12, 6, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ours, theirs)


def test_freenoise_noise_deterministic_by_seed():
    shape = (1, 4, 48, 2, 2)
    a = freenoise_noise(shape, generator=torch.Generator().manual_seed(3))
    b = freenoise_noise(shape, generator=torch.Generator().manual_seed(3))
    c = freenoise_noise(shape, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_freenoise_noise_marginals_standard_normal():
    # The batch holds independent base draws; the shuffle is shared, so each frame is N(0, 1) over it.
    noise = freenoise_noise((4000, 1, 48, 1, 1), generator=torch.Generator().manual_seed(0))
    per_frame = noise[:, 0, :, 0, 0]
    assert per_frame.mean(0).abs().max() < 0.08
    assert (per_frame.std(0) - 1).abs().max() < 0.08
    # and long-range correlation exists: frame f and f+12k share a source draw somewhere
    corr = torch.corrcoef(per_frame.T)
    assert (corr[12:18, 0:6] > 0.99).sum() == 6


def test_keyframe_interpolated_noise_is_upstream_blend():
    shape = (1, 2, 48, 2, 2)
    keys = [0, 8, 20, 40]
    noise = keyframe_interpolated_noise(shape, keys, generator=torch.Generator().manual_seed(0))
    base = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for k in keys + [47]:
        torch.testing.assert_close(noise[:, :, k], base[:, :, k])
    j, left, right = 3, 0, 8  # upstream's (mirrored) weights: (j-l)/len on x_l, (r-j)/len on x_r
    torch.testing.assert_close(noise[:, :, j], 3 / 8 * base[:, :, left] + 5 / 8 * base[:, :, right])
    j, left, right = 45, 40, 47
    torch.testing.assert_close(noise[:, :, j], 5 / 7 * base[:, :, left] + 2 / 7 * base[:, :, right])


def test_initial_noise_by_name():
    shape = (1, 4, 48, 2, 2)
    a = initial_noise("freenoise", shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, freenoise_noise(shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="keyframe indices"):
        initial_noise("keyframe_interpolation", shape)
    with pytest.raises(ValueError, match="unknown noise mode"):
        initial_noise("shuffle", shape)
