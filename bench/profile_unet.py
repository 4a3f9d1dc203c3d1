"""Top CUDA kernels of one 512-UNet training step (where the time goes).

    python bench/profile_unet.py --batch 2 --frames 12 [--ckpt]
"""

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from unet_train_step import inputs  # sibling script: bench/ is on sys.path when run as a file
from keyvid.models.unet import keyframe_unet_512


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--ckpt", action="store_true")
    p.add_argument("--rows", type=int, default=30)
    a = p.parse_args()
    with torch.device("cuda"):
        model = keyframe_unet_512()
    if a.ckpt:
        model.enable_gradient_checkpointing()
    inp = inputs(a.batch, a.frames)
    target = torch.randn(a.batch, 4, a.frames, 40, 64, device="cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.mse_loss(model(**inp).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=a.rows, max_name_column_width=90))


if __name__ == "__main__":
    main()
