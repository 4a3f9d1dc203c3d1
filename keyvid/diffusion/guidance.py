"""Multimodal classifier-free guidance: condition dropout in training, Eq. 4 at sampling.

Training drops text, image and audio with one uniform draw per sample, in bands chosen so that
every branch the sampler uses is trained (``drop_conditions``; upstream's: ``scheme="upstream"``).
Sampling evaluates four branches in one batched forward and combines them as the paper's Appendix G,
Eq. 4 (``guided_v``):

    v = v(∅,∅,∅) + s_img (v(img,∅,∅) - v(∅,∅,∅)) + s_txt (v(img,txt,∅) - v(img,∅,∅))
                 + s_aud (v(img,txt,aud) - v(img,txt,∅))

Upstream KeyVID (lvdm/models/samplers/ddim_multiplecond.py, ``p_sample_ddim``) computes exactly these
four branches and this combination, so paper and code agree; its branch conditions are built in
scripts/evaluation/asva/pipeline_*.py: ``uc`` (null text, null image, null audio), ``uc_2`` (null text,
image, null audio), ``uc_3`` (text, image, null audio), ``cond``. The concat latent is kept in every
branch, as upstream. Upstream combines v-predictions; since the weights sum to one and
eps = sqrt(a) v + sqrt(1-a) x_t is affine in v, this equals Eq. 4 written on eps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

from keyvid.diffusion.schedule import Conditioning, Denoiser, apply_model

# Bands of the single uniform draw u, in units of uncond_prob p: a condition is dropped when
# lo * p <= u < hi * p for one of its bands.
# ``upstream``: DynamiCrafter (lvdm/models/ddpm3d.py get_batch_input) drops text on [0, 2p) and the
# image on [p, 3p); KeyVID (LatentVisualAudioDiffusion.get_batch_input) keeps those and adds audio on
# [2p, 4p), so with its uncond_prob 0.05: text only, text+image, image+audio, audio only, 5 % each. No
# sample ever has all three dropped, nor text and audio with the image kept, although Eq. 4 uses
# both of those branches, (∅,∅,∅) and (img,∅,∅): guidance then amplifies two untrained predictions.
# ``branches`` (default): exactly the branches sampling evaluates, p each: (∅,∅,∅) on [0, p),
# (img,∅,∅) on [p, 2p), (img,txt,∅) on [2p, 3p), and (img,∅,aud) on [3p, 4p), the full branch when
# sampling without text; the rest keep all three (docs/learning.md has the evidence).
DROP_SCHEMES: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "branches": {"text": ((0.0, 2.0), (3.0, 4.0)), "image": ((0.0, 1.0),), "audio": ((0.0, 3.0),)},
    "upstream": {"text": ((0.0, 2.0),), "image": ((1.0, 3.0),), "audio": ((2.0, 4.0),)},
}


def drop_masks(
    batch_size: int,
    uncond_prob: float = 0.05,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    scheme: str = "branches",
) -> dict[str, torch.Tensor]:
    """Which samples lose which condition: {"text"|"image"|"audio": bool "b"}, from one draw per sample."""
    if scheme not in DROP_SCHEMES:
        raise ValueError(f"unknown condition dropout scheme {scheme!r}; expected one of {tuple(DROP_SCHEMES)}")
    u = torch.rand(batch_size, generator=generator, device=device)
    masks = {}
    for name, bands in DROP_SCHEMES[scheme].items():
        masks[name] = torch.zeros(batch_size, dtype=torch.bool, device=device)
        for lo, hi in bands:
            masks[name] |= (u >= lo * uncond_prob) & (u < hi * uncond_prob)
    return masks


def drop_conditions(
    cond: Mapping[str, torch.Tensor],
    null_cond: Mapping[str, torch.Tensor],
    generator: torch.Generator | None = None,
    uncond_prob: float = 0.05,
    scheme: str = "branches",
) -> dict[str, torch.Tensor]:
    """Replace, per sample, the "text" / "image" / "audio" entries of ``cond`` by those of ``null_cond``.

    Entries are raw encoder inputs or outputs, batch-first; null entries may have batch 1. Upstream's
    nulls: the CLIP embedding of the empty prompt, CLIP of the all-zero image (it zeroes the pixels
    before the frozen CLIP, so its precomputed features are the same thing) and ImageBind of the
    all-zero mel. Drop before the trainable image/audio projectors so they learn the null path too.
    Other keys pass through unchanged: upstream never drops the concat latent, only the CLIP input.
    """
    batch_size = next(iter(cond.values())).shape[0]
    device = next(iter(cond.values())).device
    masks = drop_masks(batch_size, uncond_prob, generator, device, scheme)
    out = dict(cond)
    for name, mask in masks.items():
        if name in cond:
            value = cond[name]
            mask = mask.view(-1, *([1] * (value.ndim - 1)))
            out[name] = torch.where(mask, null_cond[name].to(value), value)
    return out


@dataclass(frozen=True)
class GuidanceScales:
    """Appendix G: s_img = 2 and s_aud = 7.5 for both stages; s_txt = 7.5 is upstream
    ``--unconditional_guidance_scale 7.5`` (scripts/generation.sh). Upstream's script runs the
    interpolation stage with s_aud = 9.0 where the paper says 7.5."""

    img: float = 2.0
    txt: float = 7.5
    aud: float = 7.5

    def __post_init__(self):
        for name in ("img", "txt", "aud"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"guidance scale {name} must be a finite number, got {value!r}")


def guidance_branches(cond: Conditioning, null_conds: Mapping[str, torch.Tensor]) -> Conditioning:
    """The four branch conditions stacked on batch: (∅,∅,∅), (img,∅,∅), (img,txt,∅), (img,txt,aud).

    ``null_conds``: "text" "1|b 77 1024" null text tokens, "image" "1|b (t*16) 1024" projected null image
    tokens, "audio" "1|b t L 768" null audio tokens. ``cond["context"]`` is text tokens then image
    tokens, so it is split at the null text length.
    """
    n_text = null_conds["text"].shape[1]
    text, image = cond["context"][:, :n_text], cond["context"][:, n_text:]
    null_text = null_conds["text"].to(text).expand_as(text)
    null_image = null_conds["image"].to(image).expand_as(image)
    null_audio = null_conds["audio"].to(cond["audio"]).expand_as(cond["audio"])
    context = torch.cat(
        [
            torch.cat([null_text, null_image], dim=1),
            torch.cat([null_text, image], dim=1),
            torch.cat([text, image], dim=1),
            cond["context"],
        ]
    )
    audio = torch.cat([null_audio, null_audio, null_audio, cond["audio"]])

    def rep(x: torch.Tensor) -> torch.Tensor:
        return x.repeat(4, *([1] * (x.ndim - 1)))

    return Conditioning(
        concat=rep(cond["concat"]),
        context=context,
        audio=audio,
        fs=rep(cond["fs"]),
        frame_idx=rep(cond["frame_idx"]),
    )


def combine_branches(
    v_uncond: torch.Tensor, v_img: torch.Tensor, v_img_txt: torch.Tensor, v_full: torch.Tensor, scales: GuidanceScales
) -> torch.Tensor:
    """Appendix G, Eq. 4."""
    return (
        v_uncond
        + scales.img * (v_img - v_uncond)
        + scales.txt * (v_img_txt - v_img)
        + scales.aud * (v_full - v_img_txt)
    )


def rescale_guidance(guided: torch.Tensor, conditional: torch.Tensor, phi: float) -> torch.Tensor:
    """Lin et al. 2023 Sec. 3.4: match the per-sample std of the guided prediction to the fully
    conditional one, mixed by ``phi``. Upstream applies it to v against the full-condition branch."""
    if phi == 0.0:
        return guided
    return rescale_noise_cfg(guided, conditional, guidance_rescale=phi)


def guided_v(
    model: Denoiser,
    x_t: torch.Tensor,
    t: torch.Tensor,
    cond: Conditioning,
    null_conds: Mapping[str, torch.Tensor],
    scales: GuidanceScales,
    guidance_rescale: float = 0.7,
    *,
    sequential: bool = False,
) -> torch.Tensor:
    """Guided v-prediction from ONE forward over the four branches stacked on batch.

    ``sequential=True`` runs the four branches as four forwards instead (what upstream's sampler
    does): the same arithmetic, kept as the reference the batched path is measured against
    (bench/pipeline_breakdown.py).
    """
    branches = guidance_branches(cond, null_conds)
    if sequential:
        parts = [{key: value.chunk(4)[i] for key, value in branches.items()} for i in range(4)]
        v_uncond, v_img, v_img_txt, v_full = (apply_model(model, x_t, t, c) for c in parts)
    else:
        v = apply_model(model, x_t.repeat(4, *([1] * (x_t.ndim - 1))), t.repeat(4), branches)
        v_uncond, v_img, v_img_txt, v_full = v.chunk(4)
    return rescale_guidance(combine_branches(v_uncond, v_img, v_img_txt, v_full, scales), v_full, guidance_rescale)
