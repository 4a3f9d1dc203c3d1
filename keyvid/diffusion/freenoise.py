"""FreeNoise for the 48-frame motion interpolator (paper Appendix F: window 12, stride 6).

FreeNoise (Qiu et al. 2024, arXiv:2310.15169; AILab-CVC/FreeNoise) has two parts, both here:

* **Noise rescheduling** (``freenoise_noise``): the first ``window`` frames get i.i.d. noise; every
  later block of ``stride`` frames reuses the noise of the block ``window`` frames earlier, in a
  seeded random order. Frames far apart then share noise (long-range correlation) while each frame's
  noise is still a standard normal draw. diffusers' AnimateDiff ``shuffle_context`` does the same
  (a method of its pipeline mixin; tests check that both give identical noise from one seed).
* **Window fusion** (``window_fused_attend`` installed by ``temporal_windows``): every temporal
  self-attention attends within sliding windows of ``window`` frames, and each frame's output is
  the average of its windows' outputs weighted by the triangular ("pyramid") weights
  1, 2, ..., w/2, w/2, ..., 1, so a frame counts most in the windows it is central to.

Upstream KeyVID differs in two ways, one kept as an option:

* its noise is ``"keyframe_interpolation"`` (``keyframe_interpolated_noise``), a linear blend of the
  keyframes' noise instead of the shuffle; selectable by name;
* its windowed attention (``lvdm/modules/attention_freenoise.py``) accumulates the weighted sum and
  then returns ``to_out(out)`` of the *last* window instead of the fused ``value / count``. We return
  the fused result.

The windows run batched, not looped: when the stride divides the window (12 / 6), the windows of each
"phase" (0, 12, 24, 36 and 6, 18, 30) are a reshape of the frames and go through one attention call per
phase; otherwise all windows are gathered onto the batch axis of one call.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from diffusers.utils.torch_utils import randn_tensor
from einops import rearrange
from torch import nn

from keyvid.models.attention import SelfAttention, TemporalTransformer, attend

NoiseMode = Literal["freenoise", "keyframe_interpolation"]
NOISE_MODES: tuple[str, ...] = ("freenoise", "keyframe_interpolation")


def _check_window(window: int, stride: int) -> None:
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be positive")
    if stride > window:
        raise ValueError(f"stride {stride} is larger than window {window}: some frames would lie in no window")


def window_starts(num_frames: int, window: int, stride: int) -> list[int]:
    """First frame of each window: 0, stride, 2 stride, ... (FreeNoise ``get_views``), plus one window
    ending at the last frame when the stride does not reach it (upstream leaves those frames out)."""
    _check_window(window, stride)
    if num_frames <= window:
        return [0]
    starts = list(range(0, num_frames - window + 1, stride))
    if starts[-1] + window < num_frames:
        starts.append(num_frames - window)
    return starts


def pyramid_weights(window: int) -> torch.Tensor:
    """FreeNoise's triangular window weights: [1, 2, ..., w/2, w/2, ..., 2, 1] for even w,
    [1, ..., (w+1)/2, ..., 1] for odd w. Same values as diffusers'
    ``FreeNoiseTransformerBlock._get_frame_weights(w, "pyramid")`` (a method of a module we do not use)."""
    ramp = torch.arange(1, (window + 1) // 2 + 1, dtype=torch.float32)
    return torch.cat([ramp, ramp.flip(0)[window % 2:]])


def window_fused_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, *, window: int, stride: int,
    sequential: bool = False,
) -> torch.Tensor:
    """``attend`` over sliding frame windows, fused with pyramid weights: "b n (h d)" in and out.

    ``n`` is the frame axis (the temporal transformer folds space into the batch). All windows go
    through one ``attend`` call, stacked on the batch axis; a frame's output is
    ``sum_w p_w out_w / sum_w p_w`` over the windows ``w`` holding it. With ``n <= window`` this is
    plain attention. ``sequential=True`` calls ``attend`` once per window (FreeNoise's and
    upstream's loop), the reference the batched path is measured against.
    """
    b, n, c = q.shape
    if n <= window:
        return attend(q, k, v, heads)
    if sequential:
        weight = pyramid_weights(window).to(device=q.device, dtype=q.dtype)[:, None]
        total, norm = torch.zeros_like(q), q.new_zeros(n, 1)
        for s in window_starts(n, window, stride):
            frames = slice(s, s + window)
            total[:, frames] += attend(q[:, frames], k[:, frames], v[:, frames], heads) * weight
            norm[frames] += weight
        return total / norm
    starts = window_starts(n, window, stride)
    if window % stride == 0:
        if torch.compiler.is_compiling():
            return _masked_fused_attend(q, k, v, heads, starts, window, stride)
        return _phase_fused_attend(q, k, v, heads, starts, window, stride)
    idx = torch.tensor(starts, device=q.device)[:, None] + torch.arange(window, device=q.device)  # "w l"
    num_windows = idx.shape[0]

    def windows(z: torch.Tensor) -> torch.Tensor:
        return rearrange(z[:, idx], "b w l c -> (b w) l c")

    out = rearrange(attend(windows(q), windows(k), windows(v), heads), "(b w) l c -> b (w l) c", w=num_windows)
    weight = pyramid_weights(window).to(device=q.device, dtype=q.dtype).repeat(num_windows)  # "(w l)"
    flat = idx.flatten()
    total = q.new_zeros(b, n, c).index_add_(1, flat, out * weight[:, None])
    norm = q.new_zeros(n).index_add_(0, flat, weight)
    return total / norm[:, None]


def _phase_fused_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, starts: list[int], window: int, stride: int
) -> torch.Tensor:
    """``window_fused_attend`` when the stride divides the window (FreeNoise's 12 / 6).

    The windows fall into ``window // stride`` phases of back-to-back, disjoint windows (starts
    0, 12, 24, 36 and 6, 18, 30 for 48 frames), plus the extra window ending at the last frame if
    there is one. A phase is a contiguous frame range, so its windows are a reshape of q, k and v
    (a view for the phase starting at frame 0) and one ``attend`` call; the phases' weighted outputs
    are summed slice by slice. Against gathering every window and scattering back with
    ``index_add_`` this moves less memory and has no atomics (deterministic).
    """
    b, n, c = q.shape
    groups = _phases(starts, window, stride)
    pyramid = pyramid_weights(window).to(device=q.device, dtype=q.dtype)
    total = None
    norm = q.new_zeros(n)  # sums of small integers: exact in any float dtype
    for first, count in groups:
        frames = slice(first, first + count * window)
        weight = pyramid.repeat(count)
        qs, ks, vs = (z[:, frames].reshape(b * count, window, c) for z in (q, k, v))
        out = attend(qs, ks, vs, heads).reshape(b, count * window, c) * weight[:, None]
        if total is None and first == 0 and count * window == n:
            total = out
        else:
            total = q.new_zeros(b, n, c) if total is None else total
            total[:, frames] += out
        norm[frames] += weight
    return total / norm[:, None]


def _phases(starts: list[int], window: int, stride: int) -> list[tuple[int, int]]:
    """(first frame, number of windows) per phase of back-to-back windows, then the extra window."""
    per_phase = window // stride
    regular = [s for s in starts if s % stride == 0]
    groups = [(phase[0], len(phase)) for phase in (regular[p::per_phase] for p in range(per_phase)) if phase]
    return groups + [(s, 1) for s in starts if s % stride]


def _masked_fused_attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, starts: list[int], window: int, stride: int
) -> torch.Tensor:
    """``window_fused_attend`` as one score matrix (what runs under ``torch.compile``).

    The fused output of frame i is ``sum_w p_w(i) softmax_w(s_i) V / sum_w p_w(i)``: a single
    probability matrix times V. With the windows grouped into phases of disjoint windows, each phase
    is one softmax of the full "n x n" scores under a block-diagonal mask, so the whole thing is two
    batched matmuls (QK^T, PV) plus elementwise work that inductor fuses; nothing is gathered and no
    12-frame attention tiles are launched. Scores and softmax in float32, as SDPA keeps them.
    """
    b, n, c = q.shape
    dim_head = c // heads
    frames = torch.arange(n, device=q.device)
    q4, k4, v4 = (rearrange(z, "b n (h d) -> b h n d", h=heads) for z in (q, k, v))
    acc = torch.promote_types(q.dtype, torch.float32)
    with torch.autocast(q.device.type, enabled=False):
        scores = torch.matmul(q4.to(acc), k4.to(acc).transpose(-1, -2)) * dim_head**-0.5
        pyramid = pyramid_weights(window).to(q.device, acc)
        probs = torch.zeros_like(scores)
        norm = torch.zeros(n, device=q.device, dtype=acc)
        for first, count in _phases(starts, window, stride):
            pos = frames - first
            inside = (pos >= 0) & (pos < count * window)
            block = torch.where(inside, pos // window, -1)  # window of each frame in this phase, -1: none
            same = (block[:, None] == block[None, :]) & inside[:, None]
            # rows outside the phase attend to everything (finite softmax) and are weighted 0
            p = scores.masked_fill(~(same | ~inside[:, None]), float("-inf")).softmax(-1)
            row_weight = torch.where(inside, pyramid[pos.clamp(0) % window], 0.0)
            probs = probs + p * row_weight[:, None]
            norm = norm + row_weight
        probs = probs / norm[:, None]
    out = torch.matmul(probs.to(v4.dtype), v4)
    return rearrange(out, "b h n d -> b n (h d)")


def temporal_self_attentions(model: nn.Module) -> list[SelfAttention]:
    """The self-attentions over frames: both attentions of every temporal transformer block
    (upstream's temporal ``attn1`` and its ``only_self_att`` ``attn2``), ``init_attn`` included."""
    found = []
    for module in model.modules():
        if isinstance(module, TemporalTransformer):
            for block in module.transformer_blocks:
                found += [block.attn1, block.attn2]
    return found


@contextmanager
def temporal_windows(
    model: nn.Module, window: int = 12, stride: int = 6, *, sequential: bool = False
) -> Iterator[nn.Module]:
    """Within the block, the temporal self-attentions of ``model`` use FreeNoise window fusion.

    Spatial layers and the temporal convolutions are untouched (FreeNoise windows attention only).
    The previous setting is restored on exit. ``sequential``: one window at a time
    (``window_fused_attend``).
    """
    _check_window(window, stride)
    fn = functools.partial(window_fused_attend, window=window, stride=stride, sequential=sequential)
    modules = temporal_self_attentions(model)
    previous = [m.window_attend for m in modules]
    for m in modules:
        m.window_attend = fn
    try:
        yield model
    finally:
        for m, prev in zip(modules, previous):
            m.window_attend = prev


def _generator_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def freenoise_noise(
    shape: Sequence[int],
    window: int = 12,
    stride: int = 6,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """FreeNoise's rescheduled initial noise "b c t h w".

    Frames ``[0, window)`` are i.i.d. standard normal. For ``s = window, window + stride, ...`` the
    frames ``[s, s + stride)`` take the noise of frames ``[s - window, s - window + stride)`` in a
    random order (one permutation per block, drawn from ``generator``, shared by the batch); blocks
    copy from blocks already rescheduled, as FreeNoise does. Each frame's noise is a copy of one
    standard normal draw, so every per-frame marginal stays N(0, 1).
    """
    _check_window(window, stride)
    noise = randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)
    num_frames = shape[2]
    for start in range(window, num_frames, stride):
        length = min(stride, num_frames - start)
        perm = torch.randperm(stride, generator=generator, device=_generator_device(generator))[:length]
        src = (start - window) + perm.to(noise.device)
        noise[:, :, start : start + length] = noise[:, :, src]
    return noise


def keyframe_interpolated_noise(
    shape: Sequence[int],
    keyframes: Sequence[int],
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Upstream KeyVID's initial noise (``pipeline_audio_cond_animation_freenoise_inpainting_new.py``).

    i.i.d. noise, then every frame strictly between two consecutive anchors ``l < j < r`` (the sorted
    keyframes plus the last frame) is replaced by ``(j - l)/(r - l) x_l + (r - j)/(r - l) x_r``,
    exactly as upstream writes it: the weight of an anchor grows with the distance from it (the
    mirror image of a usual lerp), and the blend is not renormalised, so in-between frames have
    variance ``a^2 + (1-a)^2`` (down to 0.5 midway). Frames before the first keyframe keep their noise.
    """
    noise = randn_tensor(tuple(shape), generator=generator, device=torch.device(device), dtype=dtype)
    num_frames = shape[2]
    anchors = sorted({int(k) for k in keyframes} | {num_frames - 1})
    if anchors[0] < 0 or anchors[-1] >= num_frames:
        raise ValueError(f"keyframes must lie in [0, {num_frames}), got {list(keyframes)}")
    for left, right in zip(anchors[:-1], anchors[1:]):
        span = right - left
        for j in range(left + 1, right):
            noise[:, :, j] = (j - left) / span * noise[:, :, left] + (right - j) / span * noise[:, :, right]
    return noise


def initial_noise(
    mode: NoiseMode,
    shape: Sequence[int],
    *,
    window: int = 12,
    stride: int = 6,
    keyframes: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The interpolator's x_T for one sample by name: ``"freenoise"`` or ``"keyframe_interpolation"``."""
    if mode == "freenoise":
        return freenoise_noise(shape, window, stride, generator, device, dtype)
    if mode == "keyframe_interpolation":
        if keyframes is None:
            raise ValueError("noise mode 'keyframe_interpolation' needs the keyframe indices")
        return keyframe_interpolated_noise(shape, keyframes, generator, device, dtype)
    raise ValueError(f"unknown noise mode {mode!r}; expected one of {NOISE_MODES}")
