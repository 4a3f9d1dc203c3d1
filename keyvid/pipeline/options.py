"""How the two diffusion stages sample: one typed object (``SamplingOptions``) instead of a dozen
keywords, with the paper's and upstream's settings as defaults and every value checked at once."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

from keyvid.diffusion.freenoise import NOISE_MODES, NoiseMode
from keyvid.diffusion.guidance import GuidanceScales
from keyvid.diffusion.sampling import FINAL_STEPS

AnchorMode = Literal["none", "replace"]
ANCHOR_MODES = ("none", "replace")


@dataclass(frozen=True)
class SamplingOptions:
    """Sampling settings of both stages (``KeyVIDPipeline.__call__`` takes them, or their names as keywords).

    steps: DDIM steps of each stage (paper Appendix F: 90).
    scales_key / scales_interp: Eq. 4 guidance scales of the keyframe and interpolation stages
        (Appendix G; s_aud 9.0 for interpolation is upstream's script, the paper says 7.5).
    guidance_rescale: Lin et al. 2023's rescale of the guided v (upstream 0.7).
    eta: DDIM eta (upstream's ``--ddim_eta 1.0``).
    final_step: "x0" (the clean prediction at the last DDIM step) or "upstream"
        (``keyvid.diffusion.sampling``'s module docstring says why "x0" is the default).
    noise, window, stride: the interpolator's FreeNoise settings (``keyvid.diffusion.freenoise``).
    anchor_keyframes: "none" (paper and upstream: the interpolator's output as it is) or "replace"
        (the generated keyframe latents are written back at their indices after every interpolation
        step, noised to that step, so the video holds the keyframes exactly).
    sequential: the guidance branches and the FreeNoise windows one at a time instead of batched
        (same result up to rounding; the reference for bench/pipeline_breakdown.py).
    progress: tqdm bars over the DDIM steps.
    """

    steps: int = 90
    scales_key: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=7.5)
    scales_interp: GuidanceScales = GuidanceScales(img=2.0, txt=7.5, aud=9.0)
    guidance_rescale: float = 0.7
    eta: float = 1.0
    final_step: str = "x0"
    noise: NoiseMode = "freenoise"
    window: int = 12
    stride: int = 6
    anchor_keyframes: AnchorMode = "none"
    sequential: bool = False
    progress: bool = False

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        for name in ("scales_key", "scales_interp"):
            if not isinstance(getattr(self, name), GuidanceScales):
                raise TypeError(f"{name} must be a GuidanceScales, got {type(getattr(self, name)).__name__}")
        for name, value, allowed in (("final_step", self.final_step, FINAL_STEPS), ("noise", self.noise, NOISE_MODES),
                                     ("anchor_keyframes", self.anchor_keyframes, ANCHOR_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.window < 1 or self.stride < 1 or self.stride > self.window:
            raise ValueError(f"FreeNoise window {self.window} / stride {self.stride}: need 1 <= stride <= window")

    def updated(self, **overrides) -> SamplingOptions:
        """A copy with ``overrides``; an unknown name fails with the list of known ones."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown sampling option(s) {unknown}; expected some of {sorted(known)}")
        return replace(self, **overrides) if overrides else self

    def stage(self, name: str) -> dict:
        """The keywords of ``keyvid.diffusion.sampling.denoise`` for stage "keyframes" or "interpolation"."""
        scales = self.scales_key if name == "keyframes" else self.scales_interp
        return dict(steps=self.steps, scales=scales, guidance_rescale=self.guidance_rescale, eta=self.eta,
                    final_step=self.final_step, progress=self.progress, sequential=self.sequential)
