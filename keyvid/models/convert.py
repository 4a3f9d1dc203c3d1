"""Checkpoint converters: DynamiCrafter-512 and upstream KeyVID -> this package's UNet and image projector.

Upstream checkpoints are Lightning ``{"state_dict": ...}`` files whose keys carry
``model.diffusion_model.`` (UNet) and ``image_proj_model.`` (Resampler) prefixes
(``lvdm/models/ddpm3d.py``). Our UNet keeps upstream's module tree; the only name
differences are the renames in :data:`UNET_RENAMES`.

CLI::

    python -m keyvid.models.convert --src dynamicrafter_512/model.ckpt --kind dynamicrafter --out ckpt/init
    python -m keyvid.models.convert --src keyvid_generator.ckpt --kind keyvid_generator --out ckpt/generator

writes ``OUT/unet`` and ``OUT/image_proj`` (each ``config.json`` + safetensors) loadable
with ``KeyframeUNet.from_pretrained`` / ``Resampler.from_pretrained``.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Literal

import torch

from keyvid.models.resampler import Resampler, image_resampler_512, interpolate_query_latents
from keyvid.models.unet import KeyframeUNet, keyframe_unet_512

UNET_PREFIX = "model.diffusion_model."
IMAGE_PROJ_PREFIX = "image_proj_model."

# (upstream, ours) key fragments. The typo "temopral" is upstream's; the other three
# drop Sequential indices that only existed to hold a Dropout(0) or a GEGLU wrapper.
UNET_RENAMES: tuple[tuple[str, str], ...] = (
    (".temopral_conv.", ".temporal_conv."),
    (".to_out.0.", ".to_out."),
    (".ff.net.0.proj.", ".ff.proj."),
    (".ff.net.2.", ".ff.out."),
)

CheckpointKind = Literal["dynamicrafter", "keyvid_generator", "keyvid_interpolator"]
StateDict = dict[str, torch.Tensor]


def unet_key_from_upstream(key: str) -> str:
    """Upstream UNet key (without prefix) -> ours."""
    for upstream, ours in UNET_RENAMES:
        key = key.replace(upstream, ours)
    return key


def unet_key_to_upstream(key: str) -> str:
    """Our UNet key -> upstream's (without prefix)."""
    for upstream, ours in UNET_RENAMES:
        key = key.replace(ours, upstream)
    return key


def load_state_dict(path: str | Path) -> StateDict:
    """Read a checkpoint's flat state dict: safetensors, or a torch file with ``weights_only=True``.

    Lightning's ``{"state_dict": ...}`` wrapper is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds objects other than tensors, which weights_only=True refuses to unpickle; "
            "re-save its state_dict alone (or as safetensors) first"
        ) from err
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    return dict(obj)


def split_upstream(state_dict: StateDict) -> tuple[StateDict, StateDict]:
    """Full upstream state dict -> (UNet with our key names, image projector). Other prefixes
    (VAE, CLIP, ImageBind, the unused ``audio_proj_model``, schedule buffers) are dropped."""
    unet = {
        unet_key_from_upstream(k[len(UNET_PREFIX):]): v for k, v in state_dict.items() if k.startswith(UNET_PREFIX)
    }
    image_proj = {k[len(IMAGE_PROJ_PREFIX):]: v for k, v in state_dict.items() if k.startswith(IMAGE_PROJ_PREFIX)}
    if not unet:
        raise KeyError(f"no '{UNET_PREFIX}*' keys: not an upstream DynamiCrafter/KeyVID checkpoint")
    return unet, image_proj


def _check_shapes(name: str, converted: StateDict, target: StateDict, allow_missing: bool) -> None:
    unexpected = sorted(set(converted) - set(target))
    missing = sorted(set(target) - set(converted))
    wrong = [
        f"{k}: {tuple(converted[k].shape)} vs {tuple(target[k].shape)}"
        for k in converted.keys() & target.keys()
        if converted[k].shape != target[k].shape
    ]
    problems = []
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}")
    if missing and not allow_missing:
        problems.append(f"missing keys {missing[:8]}")
    if wrong:
        problems.append(f"shape mismatches {wrong[:8]}")
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems))


def convert_keyvid(
    state_dict: StateDict, unet: KeyframeUNet, image_proj: Resampler
) -> tuple[StateDict, StateDict]:
    """Upstream KeyVID generator/interpolator state dict -> (UNet, image projector) state dicts.

    ``unet``/``image_proj`` give the expected keys and shapes (they may live on the meta
    device); every key must be present with the right shape.
    """
    unet_sd, proj_sd = split_upstream(state_dict)
    _check_shapes("unet", unet_sd, unet.state_dict(), allow_missing=False)
    _check_shapes("image_proj", proj_sd, image_proj.state_dict(), allow_missing=False)
    return unet_sd, proj_sd


def convert_dynamicrafter(
    state_dict: StateDict, unet: KeyframeUNet, image_proj: Resampler
) -> tuple[StateDict, StateDict, list[str]]:
    """DynamiCrafter-512 state dict -> (UNet, image projector) state dicts + the new UNet keys.

    KeyVID = DynamiCrafter + audio cross-attention (``attn2.to_k_ap/to_v_ap/beta``),
    ``frame_idx_embedding`` and ``audio_proj_2`` (fixtures README section 1). These new
    parameters take their values from the freshly built ``unet``, whose init is
    upstream's: zeros for ``to_k_ap``, ``to_v_ap``, ``beta`` and ``frame_idx_embedding.2``,
    so the converted model computes what DynamiCrafter does, and default Linear init for
    ``frame_idx_embedding.0`` and ``audio_proj_2``. Upstream loads DynamiCrafter with
    ``strict=False`` over a fresh model, which is the same thing.

    The image queries are stretched from DynamiCrafter's 16 frames to the projector's
    ``video_length`` as upstream does (:func:`interpolate_query_latents`).
    """
    dc_unet, dc_proj = split_upstream(state_dict)
    target = unet.state_dict()
    _check_shapes("unet", dc_unet, target, allow_missing=True)
    new_keys = sorted(set(target) - set(dc_unet))
    dtype = dc_unet["out.2.weight"].dtype  # new tensors follow the checkpoint's precision
    unet_sd = {k: dc_unet[k] if k in dc_unet else target[k].detach().to(dtype, copy=True) for k in target}

    proj_sd = dict(dc_proj)
    video_length = image_proj.config.video_length
    num_queries = image_proj.config.num_queries
    if proj_sd["latents"].shape[1] != num_queries * video_length:
        proj_sd["latents"] = interpolate_query_latents(proj_sd["latents"].float(), video_length, num_queries).to(
            proj_sd["latents"].dtype
        )
    _check_shapes("image_proj", proj_sd, image_proj.state_dict(), allow_missing=False)
    return unet_sd, proj_sd, new_keys


def convert_checkpoint(src: str | Path, kind: CheckpointKind, out: str | Path) -> list[str]:
    """Convert ``src`` and write ``out/unet`` and ``out/image_proj``; returns the new UNet keys
    (empty unless ``kind == "dynamicrafter"``)."""
    state_dict = load_state_dict(src)
    interpolator = kind == "keyvid_interpolator"
    new_keys: list[str] = []
    if kind == "dynamicrafter":
        # New parameters need real initial values, so build on CPU (about 6 GB in float32).
        unet, image_proj = keyframe_unet_512(), image_resampler_512()
        unet_sd, proj_sd, new_keys = convert_dynamicrafter(state_dict, unet, image_proj)
    elif kind in ("keyvid_generator", "keyvid_interpolator"):
        with torch.device("meta"):
            unet, image_proj = keyframe_unet_512(interpolator=interpolator), image_resampler_512()
        unet_sd, proj_sd = convert_keyvid(state_dict, unet, image_proj)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    # assign=True adopts the checkpoint tensors, so meta-built modules need no memory of their own.
    unet.load_state_dict(unet_sd, strict=True, assign=True)
    image_proj.load_state_dict(proj_sd, strict=True, assign=True)
    out = Path(out)
    unet.save_pretrained(out / "unet")
    image_proj.save_pretrained(out / "image_proj")
    return new_keys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", required=True, help="upstream checkpoint (.ckpt/.pt/.safetensors)")
    parser.add_argument("--kind", required=True, choices=["dynamicrafter", "keyvid_generator", "keyvid_interpolator"])
    parser.add_argument("--out", required=True, help="output directory (gets unet/ and image_proj/)")
    args = parser.parse_args(argv)
    new_keys = convert_checkpoint(args.src, args.kind, args.out)
    print(f"wrote {args.out}/unet and {args.out}/image_proj")
    if new_keys:
        print(f"{len(new_keys)} KeyVID parameters initialised fresh: {', '.join(new_keys[:6])}, ...")


if __name__ == "__main__":
    main()
