"""Where the time of the 512 UNet goes: CUDA kernel time by kind, and the top kernels.

    python bench/profile_unet.py --batch 8 --frames 12 --ckpt          # training step
    python bench/profile_unet.py --batch 4 --frames 48 --eval --bf16w  # one guided DDIM step (4 branches)

Kinds: gemm (cuBLAS/CUTLASS matmuls), conv (cuDNN convolutions and their layout transposes),
attention (SDPA kernels), norm (group/layer norm), copy (contiguous/cat/transpose copies),
elementwise (activations, adds, casts), fused reduction / pointwise (inductor's Triton kernels under
``--rc``), optimizer, other. ``step_ms`` is the profiled step's wall time: the part of it
not covered by kernels is launch overhead and host work.
"""

import argparse
import collections
import json
import re
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from unet_train_step import inputs  # sibling script: bench/ is on sys.path when run as a file
from keyvid.models.unet import keyframe_unet_512

KINDS = [
    ("fused reduction (inductor)", r"^triton_(red|per)_"),  # compiled norms and their neighbours
    ("fused pointwise (inductor)", r"^triton_"),
    ("attention", r"flash|fmha|sdpa|attention|cudnn_generated_fort_native_sdpa"),
    ("conv", r"conv|implicit_gemm|xmma_fprop|xmma_dgrad|xmma_wgrad|nchwToNhwc|nhwcToNchw|dgrad|wgrad|fprop"),
    ("gemm", r"gemm|cutlass|sm90_xmma|nvjet|cublas|splitK"),
    ("norm", r"norm|welford"),
    ("optimizer", r"adam|multi_tensor"),
    ("copy", r"copy|cat|transpose|permute|CatArray|direct_copy|elementwise_kernel_with_index|index"),
    ("elementwise", r"elementwise|vectorized|triton|silu|gelu|mul|add|reduce|fill"),
]


def kind(name: str) -> str:
    low = name.lower()
    for k, pattern in KINDS:
        if re.search(pattern, low):
            return k
    return "other"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--ckpt", action="store_true")
    p.add_argument("--ckpt-levels", default=None, help="with --ckpt: e.g. 01 = checkpoint levels 0 and 1 only")
    p.add_argument("--eval", action="store_true", help="forward only, no grad")
    p.add_argument("--bf16w", action="store_true", help="with --eval: bf16 weights, no autocast")
    p.add_argument("--rc", action="store_true", help="KeyframeUNet.compile_blocks()")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--rows", type=int, default=30)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    with torch.device("cuda"):
        model = keyframe_unet_512()
    if a.ckpt:
        model.enable_gradient_checkpointing()
        model.set_checkpoint_levels(None if a.ckpt_levels is None else [int(c) for c in a.ckpt_levels])
    inp = inputs(a.batch, a.frames)
    if a.eval and a.bf16w:
        model.to(torch.bfloat16)
        inp = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inp.items()}
    if a.eval:
        model.eval()
    if a.channels_last:
        model.set_channels_last(weights=a.eval)
    if a.rc:
        model.compile_blocks()
    target = torch.randn(a.batch, 4, a.frames, 40, 64, device="cuda")
    opt = None if a.eval else torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step():
        if a.eval:
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(**inp)
            return
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.mse_loss(model(**inp).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        step_ms = 1e3 * (time.perf_counter() - t0)
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.self_device_time_total for e in events)
    by_kind = collections.Counter()
    for e in events:
        by_kind[kind(e.key)] += e.self_device_time_total
    summary = {
        "config": vars(a),
        "step_ms": round(step_ms, 1),
        "kernel_ms": round(total / 1e3, 1),
        "share_pct": {k: round(100 * v / total, 1) for k, v in by_kind.most_common()},
        "top": [
            {"kind": kind(e.key), "ms": round(e.self_device_time_total / 1e3, 2), "calls": e.count, "name": e.key[:120]}
            for e in sorted(events, key=lambda e: -e.self_device_time_total)[: a.rows]
        ],
    }
    print(json.dumps(summary, indent=1))
    if a.out:
        json.dump(summary, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
