import pytest
import torch
import torch.nn as nn

from keyvid.diffusion import Conditioning, DiffusionSchedule, drop_conditions, drop_masks

FRAMES, LATENT, TOKENS, AUDIO_TOKENS = 3, 8, 77 + 3 * 16, 5


class TinyDenoiser(nn.Module):
    """A few Conv3d layers with the UNet's call signature; every condition changes the output."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.inp = nn.Conv3d(8, width, 3, padding=1)
        self.time = nn.Embedding(1000, width)
        self.fs = nn.Embedding(64, width)
        self.frame = nn.Embedding(64, width)
        self.context = nn.Linear(1024, width)
        self.audio = nn.Linear(768, width)
        self.out = nn.Conv3d(width, 4, 3, padding=1)

    def forward(self, x, timesteps, *, context, audio, fs, frame_idx):
        h = self.inp(x)
        emb = self.time(timesteps) + self.fs(fs) + torch.tanh(self.context(context)).mean(1)  # "b c"
        per_frame = self.frame(frame_idx) + torch.tanh(self.audio(audio)).mean(2)  # "b t c"
        h = h + emb[:, :, None, None, None] + per_frame.permute(0, 2, 1)[:, :, :, None, None]
        return self.out(torch.nn.functional.silu(h))


def make_cond(batch: int, generator: torch.Generator) -> Conditioning:
    return Conditioning(
        concat=torch.randn(batch, 4, FRAMES, LATENT, LATENT, generator=generator),
        context=torch.randn(batch, TOKENS, 1024, generator=generator),
        audio=torch.randn(batch, FRAMES, AUDIO_TOKENS, 768, generator=generator),
        fs=torch.randint(1, 30, (batch,), generator=generator),
        frame_idx=torch.randint(0, 48, (batch, FRAMES), generator=generator),
    )


def test_tables_match_diffusers_ddim_scheduler():
    schedule = DiffusionSchedule()
    scheduler = schedule.ddim_scheduler()
    # diffusers builds them in float32, upstream and we in float64: the last betas divide tiny alpha_bars.
    torch.testing.assert_close(schedule.betas.float(), scheduler.betas, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(schedule.alphas_cumprod.float(), scheduler.alphas_cumprod, atol=1e-6, rtol=1e-5)


def test_scaled_linear_betas_then_zero_terminal_snr():
    schedule = DiffusionSchedule()
    raw = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    raw_sqrt_ab = torch.cumprod(1 - raw, 0).sqrt()
    # Lin et al. Algorithm 1 keeps sqrt(alpha_bar_0) and zeroes sqrt(alpha_bar_T-1).
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-12)
    assert schedule.sqrt_alphas_cumprod[0].item() == pytest.approx(raw_sqrt_ab[0].item(), rel=1e-12)
    expected = (raw_sqrt_ab - raw_sqrt_ab[-1]) * raw_sqrt_ab[0] / (raw_sqrt_ab[0] - raw_sqrt_ab[-1])
    torch.testing.assert_close(schedule.sqrt_alphas_cumprod, expected)
    assert torch.all(schedule.alphas_cumprod[1:] < schedule.alphas_cumprod[:-1])


def test_v_round_trips():
    schedule = DiffusionSchedule()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 4, 2, 5, 5, generator=g, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 250, 700, 999])
    x_t = schedule.q_sample(x0, t, noise)
    v = schedule.v_target(x0, noise, t)
    torch.testing.assert_close(schedule.predict_x0_from_v(x_t, t, v), x0)
    torch.testing.assert_close(schedule.predict_eps_from_v(x_t, t, v), noise)
    # Zero terminal SNR: x_T is pure noise and v_T = -x0.
    torch.testing.assert_close(x_t[3], noise[3])
    torch.testing.assert_close(v[3], -x0[3])


def test_dynamic_rescale_factors():
    schedule = DiffusionSchedule()
    assert schedule.scale_arr.shape == (1400,)
    scale = schedule.x0_scale(torch.tensor([0, 200, 399, 400, 999])).tolist()
    assert scale == pytest.approx([1.0, 1.0 - 0.3 * 200 / 399, 0.7, 0.7, 0.7])
    off = DiffusionSchedule(dynamic_rescale=False).x0_scale(torch.tensor([0, 999])).tolist()
    assert off == [1.0, 1.0]


def test_training_loss_uses_scaled_x0_and_v_target():
    schedule = DiffusionSchedule()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, FRAMES, LATENT, LATENT, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([100, 800])
    cond = make_cond(2, g)
    seen = {}

    def oracle(x, timesteps, *, context, audio, fs, frame_idx):
        seen["x"] = x
        scaled = x0 * schedule.x0_scale(t).float().view(-1, 1, 1, 1, 1)
        return schedule.v_target(scaled, noise, timesteps)

    assert schedule.training_loss(oracle, x0, t, cond, noise=noise).item() == pytest.approx(0.0, abs=1e-10)
    assert seen["x"].shape == (2, 8, FRAMES, LATENT, LATENT)
    torch.testing.assert_close(seen["x"][:, 4:], cond["concat"])


def test_training_loss_decreases_with_a_tiny_model():
    torch.manual_seed(0)
    schedule = DiffusionSchedule()
    model = TinyDenoiser()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 4, FRAMES, LATENT, LATENT, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([300, 600])
    cond = make_cond(2, g)
    losses = []
    for _ in range(30):
        loss = schedule.training_loss(model, x0, t, cond, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_drop_bands_match_upstream_frequencies():
    p, n = 0.05, 200_000
    masks = drop_masks(n, p, torch.Generator().manual_seed(3), scheme="upstream")
    text, image, audio = masks["text"], masks["image"], masks["audio"]
    freq = lambda m: m.float().mean().item()  # noqa: E731
    assert freq(text) == pytest.approx(2 * p, abs=0.004)
    assert freq(image) == pytest.approx(2 * p, abs=0.004)
    assert freq(audio) == pytest.approx(2 * p, abs=0.004)
    assert freq(text & ~image & ~audio) == pytest.approx(p, abs=0.003)  # [0, p)
    assert freq(text & image & ~audio) == pytest.approx(p, abs=0.003)  # [p, 2p)
    assert freq(~text & image & audio) == pytest.approx(p, abs=0.003)  # [2p, 3p)
    assert freq(~text & ~image & audio) == pytest.approx(p, abs=0.003)  # [3p, 4p)
    assert not (text & image & audio).any()
    assert freq(text | image | audio) == pytest.approx(4 * p, abs=0.005)


def _patterns(masks):
    """The (text, image, audio) kept/dropped patterns that occur, with their frequencies."""
    kept = torch.stack([~masks["text"], ~masks["image"], ~masks["audio"]], 1)
    patterns, counts = kept.unique(dim=0, return_counts=True)
    return {tuple(int(v) for v in pat): c.item() / len(kept) for pat, c in zip(patterns, counts)}


# Eq. 4's branches as (text, image, audio) kept: (∅,∅,∅), (img,∅,∅), (img,txt,∅), (img,txt,aud); and the
# full branch when sampling without text, (img,∅,aud).
GUIDANCE_BRANCHES = {(0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 1, 1), (0, 1, 1)}


def test_branches_dropout_trains_every_guidance_branch():
    p, n = 0.05, 200_000
    freq = _patterns(drop_masks(n, p, torch.Generator().manual_seed(3), scheme="branches"))
    assert set(freq) == GUIDANCE_BRANCHES
    for pattern in GUIDANCE_BRANCHES - {(1, 1, 1)}:
        assert freq[pattern] == pytest.approx(p, abs=0.003), pattern
    assert freq[(1, 1, 1)] == pytest.approx(1 - 4 * p, abs=0.005)
    # upstream's bands never train two of the branches Eq. 4 evaluates
    upstream = _patterns(drop_masks(n, p, torch.Generator().manual_seed(3), scheme="upstream"))
    assert GUIDANCE_BRANCHES - set(upstream) == {(0, 0, 0), (0, 1, 0)}
    with pytest.raises(ValueError, match="dropout scheme"):
        drop_masks(4, p, scheme="none")


def test_drop_conditions_replaces_per_sample_and_is_seeded():
    b = 64
    cond = {
        "text": torch.ones(b, 7, 4),
        "image": torch.ones(b, 5, 6),
        "audio": torch.ones(b, 3, 2, 8),
        "fs": torch.arange(b),
    }
    null = {"text": torch.zeros(1, 7, 4), "image": torch.zeros(1, 5, 6), "audio": torch.zeros(1, 3, 2, 8)}
    out = drop_conditions(cond, null, torch.Generator().manual_seed(4), uncond_prob=0.2)
    masks = drop_masks(b, 0.2, torch.Generator().manual_seed(4))
    for name in ("text", "image", "audio"):
        dropped = out[name].flatten(1).eq(0).all(1)
        kept = out[name].flatten(1).eq(1).all(1)
        assert torch.equal(dropped, masks[name]) and torch.equal(kept, ~masks[name])
    assert out["fs"] is cond["fs"]
    assert cond["text"].eq(1).all()  # the input is not modified
