"""One 48-frame video through the whole KeyVID pipeline, per stage, 512 config with random weights.

    python bench/pipeline_breakdown.py --steps 90 --out bench_pipeline.json   # one H100, ~3-5 min
    python bench/pipeline_breakdown.py --tiny --steps 2                         # CPU smoke run, seconds

Components (random init, nothing downloaded; the arithmetic is what matters):
  * two ``keyframe_unet_512`` (generator, interpolator) and two ``image_resampler_512`` projectors,
    zero-initialised layers re-initialised so every branch and window changes the output (otherwise
    the output head is zero and the batched-vs-sequential difference is trivially 0);
  * ImageBind-huge audio trunk and the huge localizer;
  * an SD-2.x-sized AutoencoderKL (diffusers config, 8x down, 4 latent channels);
  * CLIP text and vision towers at OpenCLIP ViT-H/14 sizes (transformers configs: text 1024 wide,
    24 layers; vision 1280 wide, 32 layers, 224 px, patch 14), with the in-memory byte-level
    tokenizer of the tiny encoders (the real BPE vocabulary would need a download; the text tower
    costs the same).

bf16 autocast over fp32 weights on the GPU (fp32 on the CPU with ``--tiny``). The stages are the
body of ``KeyVIDPipeline.__call__`` with timers around them (``--tiny`` checks that they give the
same frames as ``pipe(...)``):

  localizer      mel, motion score, Algorithm 1
  encode         CLIP text/image, ImageBind audio, VAE encode of the input image
  keyframes      12 frames, ``steps`` DDIM steps, 4 guidance branches batched per step
  interpolation  48 frames, ``steps`` DDIM steps, FreeNoise windows 12/6, 4 branches batched
  decode         VAE decode of the 48 frames

Sampling TFLOP/s: the FLOPs of one guided step of each stage are counted with FlopCounterMode
(matmuls, convs, SDPA) and multiplied by ``steps``, divided by the stage's time; compared with the
bf16 8192^3 matmul rate measured in the same run.

Sequential reference (``sequential=True`` of the pipeline: the four guidance branches one forward
at a time, the FreeNoise windows one attention call at a time): ``--compare-steps`` steps of each
sampling stage from the same x_T and seeds, batched vs sequential: time, speed-up and the largest
absolute difference of the resulting latents (bf16 kernels differ with the batch size, so the
difference is rounding, not zero).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from unet_train_step import matmul_peak  # sibling script: bench/ is on sys.path when run as a file
from keyvid.diffusion.denoiser import Encoded, encode_conditions, null_conditions
from keyvid.diffusion.guidance import GuidanceScales
from keyvid.diffusion.schedule import DiffusionSchedule
from keyvid.models.audio_frontend import waveform_to_mel
from keyvid.models.encoders import sd2_vae_random, vit_h_image_random, vit_h_text_random
from keyvid.models.imagebind_audio import imagebind_audio_huge
from keyvid.models.localizer import keyframe_localizer_huge
from keyvid.models.resampler import image_resampler_512
from keyvid.models.unet import keyframe_unet_512
from keyvid.pipeline import KeyVIDPipeline, prepare_image, tiny_pipeline, to_uint8
from keyvid.pipeline.tiny import randomize_zero_init

SR = 16000
SCALES_KEY = GuidanceScales(img=2.0, txt=7.5, aud=7.5)
SCALES_INTERP = GuidanceScales(img=2.0, txt=7.5, aud=9.0)


# ------------------------------------------------------------------------------------ components


def pipeline_512(device: str) -> KeyVIDPipeline:
    torch.manual_seed(0)
    schedule = DiffusionSchedule()  # its tables stay on the CPU, as in from_pretrained
    with torch.device(device):  # initialise on the GPU: CPU init of ~3.5 B parameters takes minutes
        generator, interpolator = keyframe_unet_512(), keyframe_unet_512(interpolator=True)
        for unet in (generator, interpolator):
            randomize_zero_init(unet)
        pipe = KeyVIDPipeline(
            localizer=keyframe_localizer_huge(),
            audio_encoder=imagebind_audio_huge(out_embed_dim=None),
            generator=generator,
            interpolator=interpolator,
            generator_projector=image_resampler_512(),
            interpolator_projector=image_resampler_512(),
            vae=sd2_vae_random(),
            text_encoder=vit_h_text_random(),
            image_encoder=vit_h_image_random(),
            schedule=schedule,
            height=320,
            width=512,
        )
    return pipe.to(device)


# ------------------------------------------------------------------------------------ stages


def inputs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 256, (360, 640, 3), dtype=np.uint8)
    wave = 0.01 * rng.randn(2 * SR).astype(np.float32)
    for t in (0.3, 0.8, 1.2, 1.7):  # four impacts: the localizer curve has peaks
        wave[int(t * SR) : int(t * SR) + 800] += rng.randn(800).astype(np.float32)
    return image, wave


class Timer:
    """Wall time and peak memory per stage (synchronising the GPU around each)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = {}
        self.peak_gib: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_gib[name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.seconds[name] = round(time.perf_counter() - t0, 3)


def encode(pipe: KeyVIDPipeline, image, wave, text: str, seed: int, timer: Timer) -> dict:
    """The part of ``KeyVIDPipeline.__call__`` before sampling, for a batch of one."""
    dev = pipe.device
    gen = torch.Generator("cpu").manual_seed(seed)
    with timer("localizer"):
        mel = waveform_to_mel(wave, SR)[None].to(dev)
        motion = pipe.motion_score(mel).cpu().numpy()
        key_idx = pipe.choose_keyframes("localizer", motion, [seed])
    with timer("encode"):
        pixels = prepare_image(image, pipe.height, pipe.width)[None].to(dev)
        encoded = encode_conditions(pipe.encoders, [text], pixels, mel)
        null = null_conditions(pipe.encoders, dev)
        enc = dict(
            frame_idx=torch.from_numpy(key_idx).to(dev),
            encoded=Encoded(encoded.text.to(dev), encoded.image, encoded.audio),
            null=Encoded(null.text.to(dev), null.image, null.audio),
            # fp32 diffusion state: under autocast the VAE returns bf16 latents, and the keyframe
            # noise takes the dtype of this latent.
            first=pipe.vae.encode(pixels[:, :, None], generator=gen).float(),
        )
    return dict(enc=enc, key_idx=key_idx, motion=motion, state=gen.get_state())


def _conds(enc: dict) -> dict:
    """The shared encodings, as the pipeline's stage methods take them."""
    return {"enc": enc["encoded"], "null": enc["null"]}


def _gens(state: torch.Tensor) -> list[torch.Generator]:
    """A fresh CPU generator at a saved state: each sampling stage can be replayed from where
    ``__call__`` would have started it."""
    g = torch.Generator("cpu")
    g.set_state(state)
    return [g]


def keyframes(pipe: KeyVIDPipeline, prep: dict, steps: int, state: torch.Tensor, sequential: bool = False):
    """Stage 2 from generator state ``state``: ("1 4 12 h w" latents, the state it leaves)."""
    gens = _gens(state)
    out = pipe._generate_keyframes(
        prep["enc"]["first"], prep["enc"]["frame_idx"], **_conds(prep["enc"]), gens=gens, steps=steps,
        scales=SCALES_KEY, guidance_rescale=0.7,
        eta=1.0, progress=False, sequential=sequential,
    )
    return out, gens[0].get_state()


def interpolate(pipe: KeyVIDPipeline, prep: dict, key_latents: torch.Tensor, steps: int, state: torch.Tensor,
                sequential: bool = False) -> torch.Tensor:
    """Stage 3 from generator state ``state``: "1 4 48 h w" latents."""
    return pipe._interpolate(
        key_latents, prep["enc"]["frame_idx"], **_conds(prep["enc"]), gens=_gens(state), steps=steps,
        scales=SCALES_INTERP, guidance_rescale=0.7,
        eta=1.0, progress=False, noise="freenoise", window=12, stride=6, sequential=sequential,
    )


def decode(pipe: KeyVIDPipeline, latents: torch.Tensor) -> np.ndarray:
    return to_uint8(pipe.vae.decode(latents))


# ------------------------------------------------------------------------------------ measurements


def matmul_rate(device: torch.device) -> float | None:
    """bf16 dense matmul FLOP/s, measured as bench/unet_train_step.py does."""
    return matmul_peak() if device.type == "cuda" else None


def unet_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the KeyframeUNet calls in ``fn`` (not the projectors, which run once per stage)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return sum(counter.get_flop_counts()["KeyframeUNet"].values())


def timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def compare(batched: Callable[[], torch.Tensor], sequential: Callable[[], torch.Tensor], device) -> dict:
    """Batched vs sequential on the same x_T and seeds; each warmed up once at this shape first."""
    (ref, t_b), (seq, t_s) = timed(batched, device), timed(sequential, device)
    (ref, t_b), (seq, t_s) = timed(batched, device), timed(sequential, device)
    diff = (ref.float() - seq.float()).abs().max().item()
    return {
        "batched_s": round(t_b, 3),
        "sequential_s": round(t_s, 3),
        "speedup": round(t_s / t_b, 2),
        "max_abs_diff": diff,
        "max_abs_output": ref.float().abs().max().item(),
    }


def self_compare(pipe, prep, key, state, compare_steps, device) -> dict:
    """Batched vs sequential, ``compare_steps`` DDIM steps of each sampling stage."""
    return {
        "keyframes": compare(
            lambda: keyframes(pipe, prep, compare_steps, prep["state"])[0],
            lambda: keyframes(pipe, prep, compare_steps, prep["state"], sequential=True)[0],
            device,
        ),
        "interpolation": compare(
            lambda: interpolate(pipe, prep, key, compare_steps, state),
            lambda: interpolate(pipe, prep, key, compare_steps, state, sequential=True),
            device,
        ),
    }


def run(pipe: KeyVIDPipeline, steps: int, compare_steps: int, device: torch.device, check: bool,
        compile_blocks: bool = False, channels_last: bool = True) -> dict:
    image, wave = inputs()
    text, seed = "a hammer hitting a nail", 0
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    )
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else None
    with torch.no_grad(), autocast:
        # Warm-up: one step of everything (kernel selection, allocator) outside the timings.
        prep = encode(pipe, image, wave, text, seed, Timer(device))
        key, state = keyframes(pipe, prep, 1, prep["state"])
        decode(pipe, interpolate(pipe, prep, key, 1, state))
        # FLOPs of one guided step, counted eagerly (FlopCounterMode does not see compiled kernels)
        flops_key = unet_flops(lambda: keyframes(pipe, prep, 1, prep["state"]))
        flops_interp = unet_flops(lambda: interpolate(pipe, prep, key, 1, state))
        if compile_blocks:
            pipe.compile_unets(channels_last=channels_last)
            t0 = time.perf_counter()
            key, state = keyframes(pipe, prep, 1, prep["state"])
            decode(pipe, interpolate(pipe, prep, key, 1, state))
            compile_s = time.perf_counter() - t0

        timer = Timer(device)
        t0 = time.perf_counter()
        prep = encode(pipe, image, wave, text, seed, timer)
        with timer("keyframes"):
            key, state = keyframes(pipe, prep, steps, prep["state"])
        with timer("interpolation"):
            latents = interpolate(pipe, prep, key, steps, state)
        with timer("decode"):
            frames = decode(pipe, latents)
        total = time.perf_counter() - t0

        if check:  # the timed stages are __call__: same frames
            out = pipe(image, wave, SR, text, steps=steps, seed=seed, scales_key=SCALES_KEY,
                       scales_interp=SCALES_INTERP)
            assert np.array_equal(out.frames, frames), "the timed stages differ from __call__"
            assert np.array_equal(out.keyframes, prep["key_idx"]), "the timed stages differ from __call__"

        # with compile_blocks the sequential path's shapes would compile again: compared eagerly only
        sequential = None if compile_blocks else self_compare(pipe, prep, key, state, compare_steps, device)
    assert frames.shape[1] == 48

    rate = matmul_rate(device)
    t_key, t_interp = timer.seconds["keyframes"], timer.seconds["interpolation"]
    sampling_flops = steps * (flops_key + flops_interp)
    achieved = sampling_flops / (t_key + t_interp)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32",
        "steps": steps,
        "frames": int(frames.shape[1]),
        "size": [pipe.height, pipe.width],
        "keyframes": prep["key_idx"][0].tolist(),
        "total_s": round(total, 2),
        "stage_s": timer.seconds,
        "stage_peak_gib": timer.peak_gib or None,
        "weights_gib": round(weights_gib, 2) if weights_gib is not None else None,
        "peak_gib": max(timer.peak_gib.values()) if timer.peak_gib else None,  # the stages' peaks
        "unet_tflop_per_step": {
            "keyframes": round(flops_key / 1e12, 3),
            "interpolation": round(flops_interp / 1e12, 3),
        },
        "sampling_pflop": round(sampling_flops / 1e15, 4),
        "sampling_tflops": round(achieved / 1e12, 2),
        "stage_tflops": {
            "keyframes": round(steps * flops_key / t_key / 1e12, 2),
            "interpolation": round(steps * flops_interp / t_interp / 1e12, 2),
        },
        "matmul_bf16_tflops": round(rate / 1e12, 1) if rate else None,
        "sampling_fraction_of_matmul": round(achieved / rate, 3) if rate else None,
        "compare_steps": compare_steps,
        "sequential_vs_batched": sequential,
        "compile_blocks": compile_blocks,
        "channels_last": compile_blocks and channels_last,
        "compile_s": round(compile_s, 1) if compile_blocks else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=90)
    p.add_argument("--compare-steps", type=int, default=3, help="DDIM steps of the batched-vs-sequential runs")
    p.add_argument("--tiny", action="store_true", help="tiny_pipeline on the CPU (a smoke run of this script)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--compile-blocks", action="store_true",
                   help="KeyVIDPipeline.compile_unets() (regional compile, channels-last) after the eager warm-up "
                        "(no sequential comparison)")
    p.add_argument("--no-channels-last", action="store_true", help="with --compile-blocks: NCHW activations")
    a = p.parse_args()
    if a.tiny:
        device = torch.device("cpu")
        pipe = tiny_pipeline(seed=0)
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        pipe = pipeline_512("cuda")
    for name in KeyVIDPipeline.MODULES:  # inference only; FlopCounterMode's module tracker needs it too
        getattr(pipe, name).requires_grad_(False)
    row = run(pipe, a.steps, a.compare_steps, device, check=a.tiny, compile_blocks=a.compile_blocks,
              channels_last=not a.no_channels_last)
    row["parameters_m"] = {
        name: round(sum(t.numel() for t in getattr(pipe, name).parameters()) / 1e6, 1)
        for name in KeyVIDPipeline.MODULES
    }
    text = json.dumps(row)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
