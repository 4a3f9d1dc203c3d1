"""Activation memory a UNet training step keeps for backward, per stage and per resolution level,
per clip (eager; runs on CPU: it counts bytes, it does not time anything).

    python bench/activation_memory.py --latent 16x16

Counts the bytes of the tensors autograd saves during one bf16-autocast forward pass (saved-tensor
hooks; each storage once), per UNet stage. Per-clip bytes are the difference between batch 2 and
batch 1, so weights and their autocast copies (per step, not per clip) drop out. The saved tensors
grow linearly with the latent area (SDPA keeps O(tokens)), so a 16x16 latent predicts 40x64 by x10.
This is what ``set_checkpoint_levels`` trades: checkpointed levels keep only their inputs.
"""

import argparse
import json
from collections import defaultdict
from contextlib import contextmanager

import torch

from keyvid.models import builders

_current = ["other"]


def stages(model):
    named = {"init_attn": model.init_attn, "middle": model.middle_block}
    named.update({f"in{i}": s for i, s in enumerate(model.input_blocks)})
    named.update({f"out{i}": s for i, s in enumerate(model.output_blocks)})
    return named


@contextmanager
def stage_tracking(model):
    handles = []
    for name, module in stages(model).items():
        handles.append(module.register_forward_pre_hook(lambda m, a, n=name: _current.__setitem__(0, n)))
        handles.append(module.register_forward_hook(lambda m, a, o: _current.__setitem__(0, "other")))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def saved_bytes(model, b, t, latent):
    g = torch.Generator().manual_seed(0)
    inp = dict(
        x=torch.randn(b, 8, t, *latent, generator=g),
        timesteps=torch.randint(0, 1000, (b,), generator=g),
        context=torch.randn(b, 77 + 16 * t, 1024, generator=g),
        audio=torch.randn(b, t, 12, 768, generator=g),
        fs=torch.full((b,), 6),
        frame_idx=torch.arange(t).expand(b, t) * (48 // t),
    )
    seen, per_stage = set(), defaultdict(int)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(x):
        if isinstance(x, torch.Tensor):
            st = x.untyped_storage()
            ptr = st.data_ptr()
            if ptr not in seen and ptr not in params:
                seen.add(ptr)
                per_stage[_current[0]] += st.nbytes()
        return x

    with stage_tracking(model), torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**inp)
    del out
    return per_stage


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--latent", default="16x16", help="HxW; each side divisible by 8 (three downsamplings)")
    p.add_argument("--size", default="512")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    latent = tuple(int(v) for v in a.latent.split("x"))
    scale = 40 * 64 / (latent[0] * latent[1])
    torch.manual_seed(0)
    model = builders.unet(a.size).train()
    one = saved_bytes(model, 1, a.frames, latent)
    two = saved_bytes(model, 2, a.frames, latent)
    per_stage = {k: two.get(k, 0) - one.get(k, 0) for k in set(one) | set(two)}
    level_of = {name: s.level for name, s in stages(model).items()}
    per_level = defaultdict(int)
    for name, v in per_stage.items():
        per_level[f"level{level_of[name]}" if name in level_of else "other"] += v
    total = sum(per_stage.values())
    gib40 = lambda v: round(scale * v / 2**30, 2)  # noqa: E731
    result = {
        "frames": a.frames, "latent": a.latent, "per_clip_gib": round(total / 2**30, 3),
        "per_clip_gib_at_40x64": gib40(total),
        "per_level_gib_at_40x64": {k: gib40(v) for k, v in sorted(per_level.items())},
        "per_level_share_pct": {k: round(100 * v / total, 1) for k, v in sorted(per_level.items())},
        "per_stage_gib_at_40x64": {k: gib40(v) for k, v in sorted(per_stage.items())},
    }
    print(json.dumps(result, indent=1), flush=True)
    if a.out:
        json.dump(result, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
