"""Offline VAE latents for existing shards, so the generator and interpolator trainers can skip
the VAE encoder (issue #6; the VAE is about 5 % of a training step but a fixed cost per frame).

For every sample it stores ``latents.npy``: the posterior's mean and log-variance of every frame,
float16, "8 t h w" (``FrozenVAE.encode_moments``); the trainer draws a fresh posterior sample
from them each time, exactly as encoding online does. Shards are rewritten one by one into
``out_dir`` (tmp + rename; done when the ``.json`` sidecar is copied), so a killed job resumes.

    python -m data_prep.latents --shards 'shards/train-{000000..000011}.tar' --vae weights/sd21_vae --out shards_latents
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tarfile
from pathlib import Path

import braceexpand
import numpy as np
import torch

from data_prep.shards import TAR_MTIME
from keyvid.data.dataset import _decode_frames, frames_to_tensor


def _samples(tar_path: Path):
    """(key, {member suffix: bytes}) in file order."""
    current, members = None, {}
    with tarfile.open(tar_path) as tar:
        for info in tar:
            key, _, suffix = info.name.partition(".")
            if key != current and current is not None:
                yield current, members
                members = {}
            current = key
            members[suffix] = tar.extractfile(info).read()
    if current is not None:
        yield current, members


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), TAR_MTIME
    tar.addfile(info, io.BytesIO(data))


@torch.no_grad()
def add_latents(src: Path, dst: Path, vae, device: str = "cpu") -> int:
    """Copy shard ``src`` to ``dst`` with a ``latents.npy`` member per sample; returns the count."""
    tmp = dst.with_name(dst.name + ".partial")
    n = 0
    with tarfile.open(tmp, "w") as out:
        for key, members in _samples(src):
            meta = json.loads(members["meta.json"])
            frames = _decode_frames(members, np.arange(int(meta["num_frames"])))
            moments = vae.encode_moments(frames_to_tensor(frames, None)[None].to(device))[0]
            buf = io.BytesIO()
            np.save(buf, moments.half().cpu().numpy(), allow_pickle=False)
            for suffix, data in members.items():
                _add(out, f"{key}.{suffix}", data)
            _add(out, f"{key}.latents.npy", buf.getvalue())
            n += 1
    tmp.replace(dst)
    return n


def main(argv=None) -> None:
    from keyvid.models.encoders import FrozenVAE

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shards", required=True, help="brace pattern of the input shards")
    p.add_argument("--vae", required=True, help="local diffusers AutoencoderKL folder")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    vae = FrozenVAE.from_pretrained(a.vae).to(a.device)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for url in braceexpand.braceexpand(a.shards):
        src = Path(url)
        sidecar = src.with_suffix(".json")
        if (out / sidecar.name).exists():
            continue  # done
        n = add_latents(src, out / src.name, vae, a.device)
        if sidecar.exists():
            shutil.copy(sidecar, out / sidecar.name)
        else:
            (out / sidecar.name).write_text(json.dumps({"samples": n}))
        print(f"{src.name}: {n} samples")


if __name__ == "__main__":
    main()
