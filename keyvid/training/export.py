"""Export a trained model as safetensors + the config that rebuilds it (nanoGPT keeps model_args
in the checkpoint; diffusers writes config.json beside the weights)."""

from __future__ import annotations

import json
from pathlib import Path

from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import save_file


def _restore_scalars(model, state: dict) -> dict:
    """0-dim parameters that ZeRO-3 holds as shape (1,) (keyvid.training.distributed) go back to 0-dim,
    so the export loads into a fresh model."""
    for name, p in model.named_parameters():
        if getattr(p, "keyvid_0dim", False) and name in state:
            state[name] = state[name].reshape(())
    return state


def export_model(accelerator: Accelerator, model, out_dir: Path, model_cfg: DictConfig) -> Path:
    """Gather the full state dict (ZeRO-3 included: every rank takes part) and write it on rank 0."""
    state = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        state = _restore_scalars(accelerator.unwrap_model(model), state)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        tmp.replace(out_dir / "model.safetensors")
        (out_dir / "config.json").write_text(json.dumps(OmegaConf.to_container(model_cfg, resolve=True), indent=1))
    accelerator.wait_for_everyone()
    return out_dir


def export_denoiser(accelerator: Accelerator, denoiser, out_dir: Path, ema=None) -> Path:
    """UNet and image projector as diffusers-style folders (``unet/``, ``image_proj/``: config.json +
    safetensors), with the EMA weights when EMA is on; ``KeyframeUNet.from_pretrained`` reads them.

    The state dict is gathered on every rank (ZeRO-3 needs all of them) and split by prefix, so the
    unwrapped module's own (possibly partitioned) tensors are never read."""
    state = accelerator.get_state_dict(denoiser)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(denoiser)
        if ema is not None:
            trainable = [n for n, p in model.named_parameters() if p.requires_grad]
            state.update({n: p.detach().to(state[n].dtype) for n, p in zip(trainable, ema.shadow_params)})
        state = _restore_scalars(model, state)
        for name in ("unet", "image_proj"):
            folder = out_dir / name
            folder.mkdir(parents=True, exist_ok=True)
            getattr(model, name).save_config(folder)
            sub = {k[len(name) + 1:]: v.contiguous() for k, v in state.items() if k.startswith(name + ".")}
            save_file(sub, str(folder / "diffusion_pytorch_model.safetensors.tmp"))
            (folder / "diffusion_pytorch_model.safetensors.tmp").replace(folder / "diffusion_pytorch_model.safetensors")
    accelerator.wait_for_everyone()
    return out_dir
