"""RAFT optical flow (torchvision) as a motion-score backend, batched on GPU.

Weights come from a local file (torchvision's ``raft_large_C_T_SKHT_V2`` / ``raft_small_C_T_V2``
state dicts, e.g. ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``); nothing is downloaded.

Batching: torchvision's RAFT samples its correlation pyramid with ``grid_sample``; on torch 2.11
cuDNN's grid_sample fails with CUDNN_STATUS_NOT_SUPPORTED at 64 frame pairs per call
(../shared/ENV_NOTES.md). Rather than disabling cuDNN (half the speed), frame pairs are fed in
chunks of at most ``max_pairs`` (default 32), so any number of frames works at full speed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ARCHS = ("raft_large", "raft_small")


def build_raft(arch: str = "raft_large", weights: str | Path | None = None) -> torch.nn.Module:
    """A torchvision RAFT, random-initialised when ``weights`` is None (tests), else loaded."""
    from torchvision.models.optical_flow import raft_large, raft_small

    if arch not in ARCHS:
        raise ValueError(f"unknown RAFT arch {arch!r}; expected one of {ARCHS}")
    model = (raft_large if arch == "raft_large" else raft_small)(weights=None, progress=False)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"RAFT weights not found: {path} (set flow.weights to a local copy of torchvision's {arch} state dict)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return model.eval().requires_grad_(False)


class RaftFlow:
    """``backend(frames) -> "(t-1) 2 h w"`` flow in pixels, with the ClassicFlow call signature."""

    def __init__(self, arch: str = "raft_large", weights: str | Path | None = None, *, device: str | None = None,
                 num_flow_updates: int = 12, max_pairs: int = 32, dtype: str = "bfloat16", compile: bool = False):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = build_raft(arch, weights).to(self.device)
        if compile:  # fuses RAFT's many small update-step ops; compiles once per input shape
            self.model = torch.compile(self.model)
        self.num_flow_updates, self.max_pairs = num_flow_updates, max_pairs
        if dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"unknown dtype {dtype!r} for RAFT")
        # bf16 autocast only on GPU; RAFT's flow is accumulated in float32 by the update steps
        self.autocast = dtype != "float32" and self.device.type == "cuda"
        self.dtype = getattr(torch, dtype)

    @torch.inference_mode()
    def flow_pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """"n 3 h w" float in [-1, 1] (already on device) -> "n 2 h w" float32 flow."""
        h, w = a.shape[-2:]
        # RAFT needs sizes divisible by 8 and at least 128 (its 4-level correlation pyramid)
        ph, pw = max(128, h + (-h) % 8) - h, max(128, w + (-w) % 8) - w
        if ph or pw:
            a = F.pad(a, (0, pw, 0, ph), mode="replicate")
            b = F.pad(b, (0, pw, 0, ph), mode="replicate")
        out = []
        for i in range(0, len(a), self.max_pairs):
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
                flow = self.model(a[i:i + self.max_pairs], b[i:i + self.max_pairs],
                                  num_flow_updates=self.num_flow_updates)[-1]
            out.append(flow.float()[..., :h, :w])
        return torch.cat(out)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # "t h w c" uint8 -> "t c h w" [-1, 1]
        return self.flow_pairs(x[:-1], x[1:]).cpu().numpy()
