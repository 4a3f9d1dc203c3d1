"""Training-step throughput, peak memory and MFU of the 512 keyframe UNet on one GPU.

    python bench/unet_train_step.py --configs "b2-t12,b8-t12-ckpt,b8-t12-ckpt-compile" --out bench_unet.json

Each config: ``b<batch>-t<frames>`` plus flags ``ckpt`` (gradient checkpointing), ``ckptL<levels>``
(checkpoint only the stages at these resolution levels, e.g. ``ckptL0``: ``set_checkpoint_levels``),
``sub`` (upstream's trainable subset instead of full fine-tuning: ``set_unet_trainable(unet,
"upstream")``), ``compile``
(torch.compile of the whole UNet), ``rc`` (regional: ``KeyframeUNet.compile_blocks()``, whole
ResBlocks and transformers), ``rcb`` (``compile_blocks(scope="block")``: ResBlocks and inner
transformer blocks), ``cl`` (``set_channels_last()``: channels-last activations), ``clw``
(channels-last conv weights too), ``cb`` (cudnn.benchmark), ``nochunk`` (one SDPA call however
large the batch of sequences: ``keyvid.models.attention.SDPA_MAX_BATCH`` off), ``eval`` (forward only, no grad,
``model.eval()``), ``bf16w`` (with ``eval``: bf16 weights and inputs, no autocast, as inference
can run). A step
is forward + v-loss + backward + fused AdamW on every parameter (full fine-tuning), bf16 autocast over fp32 master
weights. FLOPs of one step are counted with torch's FlopCounterMode (matmuls, convs, SDPA);
MFU = model FLOPs (no checkpoint recompute) / step time / the measured bf16 dense matmul
rate (``--peak``, default: measured here).
"""

import argparse
import gc
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from keyvid.models import attention, builders
from keyvid.training.video_diffusion import set_unet_trainable

LATENT = (40, 64)  # --latent
DEFAULT_SDPA_MAX_BATCH = attention.SDPA_MAX_BATCH


def matmul_peak(n=8192, reps=20):
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


def inputs(b, t, device="cuda"):
    g = torch.Generator(device=device).manual_seed(0)
    return dict(
        x=torch.randn(b, 8, t, *LATENT, device=device, generator=g),
        timesteps=torch.randint(0, 1000, (b,), device=device, generator=g),
        context=torch.randn(b, 77 + 16 * t, 1024, device=device, generator=g),
        audio=torch.randn(b, t, 12, 768, device=device, generator=g),
        fs=torch.full((b,), 6, device=device),
        frame_idx=torch.arange(t, device=device).expand(b, t) * (48 // t),
    )


def count_flops(model, inp, target, train):
    """FLOPs of one sample's step (they are linear in the batch)."""
    one = {k: v[:1] for k, v in inp.items()}
    with FlopCounterMode(display=False) as fc:
        with torch.autocast("cuda", dtype=torch.bfloat16), torch.set_grad_enabled(train):
            out = model(**one).float()
        if train:
            F.mse_loss(out, target[:1]).backward()
    model.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def run(spec, peak, steps, size="512"):
    parts = spec.split("-")
    b, t = int(parts[0][1:]), int(parts[1][1:])
    flags = set(parts[2:])
    row = {"config": spec, "batch": b, "frames": t}
    attention.SDPA_MAX_BATCH = 2**62 if "nochunk" in flags else DEFAULT_SDPA_MAX_BATCH
    with torch.device("cuda"):
        model = builders.unet(size)
    if "sub" in flags:  # before the FLOP count: frozen weights get no weight gradients
        set_unet_trainable(model, "upstream")
    torch.backends.cudnn.benchmark = "cb" in flags
    inp = inputs(b, t)
    target = torch.randn(b, 4, t, *LATENT, device="cuda")
    train = "eval" not in flags
    # model FLOPs: eager, before checkpointing (its recompute is not useful work) and compilation
    try:
        flops = count_flops(model, inp, target, train) * b
    except torch.OutOfMemoryError:  # the eager, un-checkpointed pass can need more than the step
        flops = None
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()
    if "bf16w" in flags and not train:
        model.to(torch.bfloat16)
        inp = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inp.items()}
    if not train:
        model.eval()
    levels = [f for f in flags if f.startswith("ckptL")]
    if "ckpt" in flags or levels:
        model.enable_gradient_checkpointing()
        model.set_checkpoint_levels([int(c) for c in levels[0][5:]] if levels else None)
    # drop the previous config's graphs: each config's new shapes would otherwise count towards
    # dynamo's recompile limit and could push later configs into eager fallbacks
    torch._dynamo.reset()
    if "cl" in flags or "clw" in flags:
        model.set_channels_last(weights="clw" in flags)
    if "rc" in flags:
        model.compile_blocks()
    if "rcb" in flags:
        model.compile_blocks(scope="block")
    fwd = torch.compile(model) if "compile" in flags else model
    torch.cuda.reset_peak_memory_stats()  # the step's own peak, not the FLOP count's
    params = [p for p in model.parameters() if p.requires_grad]
    row["trainable_params"] = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True) if train else None

    def step():
        if train:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = F.mse_loss(fwd(**inp).float(), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                fwd(**inp)

    try:
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        row["first_step_s"] = round(time.perf_counter() - t0, 1)
        for _ in range(2):
            step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        row["step_s"] = round(dt, 4)
        row["clips_per_s"] = round(b / dt, 2)
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
        if flops is not None:
            row["tflop_per_step"] = round(flops / 1e12, 2)
            row["mfu_pct"] = round(100 * flops / dt / peak, 1)
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    except RuntimeError as e:  # e.g. a fused SDPA kernel refusing a shape ("nochunk")
        row["error"] = str(e).splitlines()[0][:300]
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    model = fwd = opt = None  # free the GPU memory before the next config
    gc.collect()
    torch.cuda.empty_cache()
    return row


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", default="b2-t12,b8-t12-ckpt")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--peak", type=float, default=None, help="bf16 matmul FLOP/s; default: measure")
    p.add_argument("--out", default=None)
    p.add_argument("--size", default="512", help="UNet size (keyvid.models.builders.unet): 512 | small | tiny")
    p.add_argument("--latent", default="40x64", help="latent HxW (small in REPRODUCTION.md: 16x24)")
    a = p.parse_args()
    global LATENT
    LATENT = tuple(int(v) for v in a.latent.split("x"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    peak = a.peak or matmul_peak()
    print(json.dumps({"device": torch.cuda.get_device_name(), "bf16_matmul_tflops": round(peak / 1e12, 1)}), flush=True)
    rows = []
    for spec in a.configs.split(","):
        rows.append(run(spec, peak, a.steps, a.size))
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "bf16_matmul_tflops": round(peak / 1e12, 1), "rows": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
