import pytest
import torch
from diffusers import DDIMScheduler

from keyvid.diffusion import (
    DiffusionSchedule,
    GuidanceScales,
    apply_model,
    combine_branches,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    guided_v,
    rescale_guidance,
)
from tests.diffusion.test_schedule import AUDIO_TOKENS, FRAMES, LATENT, TinyDenoiser, make_cond


def make_nulls(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "text": torch.randn(1, 77, 1024, generator=generator),
        "image": torch.randn(1, FRAMES * 16, 1024, generator=generator),
        "audio": torch.randn(1, FRAMES, AUDIO_TOKENS, 768, generator=generator),
    }


def test_trailing_timesteps_match_upstream_uniform_trailing():
    schedule = DiffusionSchedule()
    ts = ddim_timesteps(schedule, 90)
    # upstream make_ddim_timesteps('uniform_trailing'): round(arange(1000, 0, -1000/90)) - 1
    expected = [round(1000 - i * 1000 / 90) - 1 for i in range(90)]
    assert ts == expected and ts[0] == 999 and ts[-1] == 10
    assert {a - b for a, b in zip(ts, ts[1:])} == {11, 12}


def _diffusers_direction_residue(scheduler, t: int, t_prev: int, eta: float) -> torch.Tensor:
    """``1 - a_prev - sigma^2`` exactly as diffusers' ``DDIMScheduler.step`` forms it: float32 0-dim tensors.

    With eta = 1 at the zero-SNR step the value is 0 in exact arithmetic; in float32 it is a rounding
    residue of either sign (the 0-dim ``** 0.5`` kernel differs by an ulp between CPU builds and
    capabilities), and diffusers takes its square root, so its output there is NaN on some machines.
    """
    ac = scheduler.alphas_cumprod
    a_t, a_prev = ac[t], ac[t_prev]
    variance = ((1 - a_prev) / (1 - a_t)) * (1 - a_t / a_prev)
    return 1 - a_prev - (eta * variance**0.5) ** 2


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_step_equals_diffusers_where_they_coincide(eta):
    # 10 steps divide 1000, so diffusers' t - T // steps is the real next timestep; no dynamic rescale.
    schedule = DiffusionSchedule(dynamic_rescale=False)
    scheduler = schedule.ddim_scheduler()
    scheduler.set_timesteps(10)
    ts = ddim_timesteps(schedule, 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 2, 4, 4, generator=g, dtype=torch.float64)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else None
        v = torch.randn(x.shape, generator=g, dtype=torch.float64)
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
        ours = ddim_step(schedule, v, t, t_prev, x, eta, noise, final_step="upstream")
        ref = scheduler.step(v, t, x, eta=eta, variance_noise=noise).prev_sample
        assert torch.isfinite(ours).all()
        x_t, x = x, ours
        if t == 999 and eta == 1.0:
            # The zero-SNR step with eta = 1: alpha_bar(999) = 0, so x0 = -v, sigma^2 = 1 - a_prev and the
            # eps coefficient sqrt(1 - a_prev - sigma^2) is exactly 0. Ours must be that limit (float64
            # arithmetic on float32 table values: 1e-12 is many ulps of float64 yet far below any bug).
            a_prev = schedule.alphas_cumprod[t_prev].item()
            assert schedule.alphas_cumprod[t].item() == 0.0
            limit = a_prev**0.5 * (-v) + (1.0 - a_prev) ** 0.5 * noise
            torch.testing.assert_close(ours, limit, atol=1e-12, rtol=0)
            # diffusers' value there depends on the sign of its float32 residue: NaN when negative (seen on
            # AVX-512 CPUs), else off by sqrt(residue) * |eps|. If diffusers ever clamps the residue the NaN
            # branch fails and this test tells us.
            residue = _diffusers_direction_residue(scheduler, t, t_prev, eta).item()
            if residue < 0:
                assert torch.isnan(ref).all()
                continue
            atol = residue**0.5 * x_t.abs().max().item() + 1e-5  # at alpha_bar = 0 the eps prediction is x_t
        else:
            # Both use the same float32 table; diffusers rounds its coefficients (sqrt of float32) to float32,
            # ours keeps them in float64: about 6e-8 relative on |x| <= 5, i.e. <= 3e-7; 1e-5 leaves 30x.
            atol = 1e-5
        torch.testing.assert_close(ours, ref, atol=atol, rtol=1e-4)


def test_final_step_x0_is_diffusers_with_alpha_to_one():
    # final_step="x0" is DDIM's last step to alpha_bar = 1 (diffusers set_alpha_to_one=True): the x0 prediction.
    schedule = DiffusionSchedule(dynamic_rescale=False)
    scheduler = DDIMScheduler.from_config(schedule.ddim_scheduler().config, set_alpha_to_one=True)
    scheduler.set_timesteps(10)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 4, 2, 4, 4, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    ours = ddim_step(schedule, v, 99, None, x, eta=1.0, noise=torch.randn(x.shape, generator=g, dtype=torch.float64))
    ref = scheduler.step(v, 99, x, eta=1.0, variance_noise=torch.zeros_like(x)).prev_sample
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="final_step"):
        ddim_step(schedule, v, 99, None, x, eta=1.0, final_step="alpha_one")


class OracleDenoiser(torch.nn.Module):
    """Returns the exact v of a known clean latent x0 (scaled by the dynamic rescale, as in training), so
    whatever error a sample has comes from the sampler."""

    def __init__(self, x0: torch.Tensor, schedule: DiffusionSchedule):
        super().__init__()
        self.x0, self.schedule = x0, schedule

    def forward(self, x, timesteps, **_):
        s = self.schedule
        x_t = x[:, : self.x0.shape[1]]
        reps = x_t.shape[0] // self.x0.shape[0]  # the stacked guidance branches
        x0 = self.x0.repeat(reps, *([1] * (x_t.ndim - 1))) * s.x0_scale(timesteps).view(-1, 1, 1, 1, 1).to(x_t)
        a = s.alphas_cumprod.to(x_t)[timesteps].view(-1, 1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).clamp_min(1e-12).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_sample_returns_the_clip_only_with_the_x0_final_step(eta):
    # Suspect 2 and 3 of the "pipeline must learn" issue: upstream's last step leaves sqrt(1 - 0.99915) = 0.029
    # of fresh noise per frame and keeps the smallest timestep's x0 shrink (the rescale is never undone).
    schedule = DiffusionSchedule()
    g = torch.Generator().manual_seed(8)
    x0 = 0.2 * torch.randn(2, 4, FRAMES, LATENT, LATENT, generator=g, dtype=torch.float64)  # PixelVAE-like std
    cond = {k: v.double() if v.is_floating_point() else v for k, v in make_cond(2, g).items()}
    nulls = {k: v.double() for k, v in make_nulls(g).items()}
    model = OracleDenoiser(x0, schedule)
    out = {mode: ddim_sample(model, x0.shape, cond, nulls, steps=30, eta=eta, final_step=mode, schedule=schedule,
                             generator=torch.Generator().manual_seed(9)) for mode in ("x0", "upstream")}
    torch.testing.assert_close(out["x0"], x0, atol=1e-9, rtol=0)
    err = out["upstream"] - x0
    gain = (out["upstream"] * x0).sum() / (x0 * x0).sum()
    assert 0.95 < gain.item() < 0.99  # the last timestep's rescale factor, never undone
    assert (err - (gain - 1) * x0).std().item() > 0.02  # the noise of the last step (0.029 per entry)


def test_dynamic_rescale_is_undone_step_by_step():
    schedule = DiffusionSchedule()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 1, 2, 2, generator=g, dtype=torch.float64)
    v = torch.randn(x.shape, generator=g, dtype=torch.float64)
    t, t_prev = 500, 200
    with_rescale = ddim_step(schedule, v, t, t_prev, x, eta=0.0)
    plain = ddim_step(DiffusionSchedule(dynamic_rescale=False), v, t, t_prev, x, eta=0.0)
    # x_prev = sqrt(a_prev) x0 * s(t_prev)/s(t) + dir, so the difference is sqrt(a_prev) x0 (ratio - 1).
    x0 = schedule.predict_x0_from_v(x, torch.tensor([t]), v)
    ratio = (schedule.scale_arr[t_prev] / schedule.scale_arr[t]).item()
    expected = schedule.alphas_cumprod[t_prev].sqrt().item() * x0 * (ratio - 1)
    torch.testing.assert_close(with_rescale - plain, expected)


def test_batched_guidance_equals_sequential_eq4():
    torch.manual_seed(0)
    model = TinyDenoiser().eval()
    g = torch.Generator().manual_seed(2)
    b = 2
    cond = make_cond(b, g)
    nulls = make_nulls(g)
    x = torch.randn(b, 4, FRAMES, LATENT, LATENT, generator=g)
    t = torch.tensor([900, 400])
    scales = GuidanceScales(img=2.0, txt=7.5, aud=5.0)

    def with_parts(text, image, audio):
        context = torch.cat([text, image], dim=1)
        return dict(cond, context=context, audio=audio)

    text, image = cond["context"][:, :77], cond["context"][:, 77:]
    null_text, null_image = nulls["text"].expand_as(text), nulls["image"].expand_as(image)
    null_audio = nulls["audio"].expand_as(cond["audio"])
    with torch.no_grad():
        e_uncond = apply_model(model, x, t, with_parts(null_text, null_image, null_audio))
        e_img = apply_model(model, x, t, with_parts(null_text, image, null_audio))
        e_img_txt = apply_model(model, x, t, with_parts(text, image, null_audio))
        e_full = apply_model(model, x, t, cond)
        sequential = (
            e_uncond
            + scales.img * (e_img - e_uncond)
            + scales.txt * (e_img_txt - e_img)
            + scales.aud * (e_full - e_img_txt)
        )
        batched = guided_v(model, x, t, cond, nulls, scales, guidance_rescale=0.0)
    torch.testing.assert_close(batched, sequential, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(e_img, e_uncond) and not torch.allclose(e_full, e_img_txt)

    calls = []
    model.register_forward_hook(lambda module, args, kwargs_out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        guided_v(model, x, t, cond, nulls, scales)
    assert calls == [4 * b]  # one forward over the stacked branches


def test_unit_scales_reduce_to_the_conditional_prediction():
    g = torch.Generator().manual_seed(3)
    parts = [torch.randn(2, 4, 3, 2, 2, generator=g) for _ in range(4)]
    torch.testing.assert_close(combine_branches(*parts, GuidanceScales(1.0, 1.0, 1.0)), parts[3])


def test_guidance_rescale():
    g = torch.Generator().manual_seed(4)
    guided = 3.0 * torch.randn(2, 4, 3, 5, 5, generator=g)
    conditional = torch.randn(2, 4, 3, 5, 5, generator=g)
    assert rescale_guidance(guided, conditional, 0.0) is guided
    full = rescale_guidance(guided, conditional, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), conditional.flatten(1).std(1))
    torch.testing.assert_close(rescale_guidance(guided, conditional, 0.7), 0.7 * full + 0.3 * guided)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ten_step_sample_runs_with_all_branches(eta):
    torch.manual_seed(0)
    model = TinyDenoiser().eval()
    g = torch.Generator().manual_seed(5)
    cond = make_cond(2, g)
    nulls = make_nulls(g)
    shape = (2, 4, FRAMES, LATENT, LATENT)
    calls = []
    model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    a = ddim_sample(model, shape, cond, nulls, steps=10, eta=eta, generator=torch.Generator().manual_seed(6))
    b = ddim_sample(model, shape, cond, nulls, steps=10, eta=eta, generator=torch.Generator().manual_seed(6))
    assert a.shape == shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    assert calls == [8] * 20
