"""RAFT motion-score throughput (frame pairs/s) on the GPU, per batch size and precision.

    python bench/raft_flow.py --out bench_raft.json

Random-initialised weights (no pretrained file on the machine): the arithmetic is the same as a
trained RAFT, so the speed is representative. "naive" feeds all pairs of a batch in one call (what
fails in cuDNN's grid_sample at 64 on torch 2.11); "chunked" is keyvid.data.raft.RaftFlow.
"""

import argparse
import json
import time

import torch

from keyvid.data.raft import RaftFlow


def timed(fn, reps):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=None)
    p.add_argument("--sizes", default="320x512,360x640")
    p.add_argument("--batches", default="16,32,64")
    p.add_argument("--updates", type=int, default=12)
    p.add_argument("--archs", default="raft_large,raft_small")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the RAFT model")
    p.add_argument("--no-naive", action="store_true", help="skip the single-call comparison")
    a = p.parse_args()
    results = []
    for arch in a.archs.split(","):
        for dtype in a.dtypes.split(","):
            flow = RaftFlow(arch, None, device="cuda", num_flow_updates=a.updates, dtype=dtype, max_pairs=32,
                            compile=a.compile)
            for size in a.sizes.split(","):
                h, w = map(int, size.split("x"))
                for n in map(int, a.batches.split(",")):
                    x = torch.rand(n + 1, 3, h, w, device="cuda") * 2 - 1
                    row = {"arch": arch, "dtype": dtype, "size": size, "pairs": n, "updates": a.updates,
                           "compiled": a.compile}
                    dt = timed(lambda: flow.flow_pairs(x[:-1], x[1:]), 3)
                    row["chunked_pairs_per_s"] = round(n / dt, 1)
                    flow.max_pairs = n
                    try:
                        if a.no_naive:
                            raise RuntimeError("skipped")
                        row["naive_pairs_per_s"] = round(n / timed(lambda: flow.flow_pairs(x[:-1], x[1:]), 3), 1)
                    except RuntimeError as e:
                        row["naive_error"] = str(e).splitlines()[0][:120]
                    flow.max_pairs = 32
                    row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    torch.cuda.reset_peak_memory_stats()
                    print(json.dumps(row), flush=True)
                    results.append(row)
    if a.out:
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": results},
                  open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
