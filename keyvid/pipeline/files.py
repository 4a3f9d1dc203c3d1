"""The pipeline's files: one subfolder per component (``COMPONENT_FILES``) plus ``pipeline.json``.

localizer/, generator/ and interpolator/ are exactly what the trainers export (keyvid.training.export:
export_model writes config.json + model.safetensors, export_denoiser writes unet/ and image_proj/),
so a run's export folder can be copied in as it is. Every missing file fails with its path before
anything is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from keyvid.diffusion.denoiser import STAGES
from keyvid.models.imagebind_audio import ImageBindAudio
from keyvid.models.localizer import KeyframeLocalizer
from keyvid.models.resampler import Resampler
from keyvid.models.unet import KeyframeUNet

PIPELINE_FILE = "pipeline.json"
WEIGHTS = "model.safetensors"  # our own modules; diffusers/transformers ones use their own names
_DIFFUSERS = ("config.json", "diffusion_pytorch_model.safetensors")
COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "localizer": ("config.json", WEIGHTS),
    "audio_encoder": ("config.json", WEIGHTS),
    **{f"{stage}/{part}": _DIFFUSERS for stage in STAGES for part in ("unet", "image_proj")},
    "vae": ("config.json",),  # AutoencoderKL weights, or none for a PixelVAE (FrozenVAE.from_pretrained checks)
    "text_encoder": ("config.json", "model.safetensors"),
    "image_encoder": ("config.json", "model.safetensors"),
}


def read_saved_config(root: Path) -> dict:
    """``pipeline.json`` of a ``save_pretrained`` folder, after checking every file it needs."""
    if not root.is_dir():
        raise FileNotFoundError(f"KeyVID pipeline directory not found: {root}")
    if not (root / PIPELINE_FILE).is_file():
        raise FileNotFoundError(f"{root / PIPELINE_FILE} not found: {root} is not a saved KeyVID pipeline")
    config = json.loads((root / PIPELINE_FILE).read_text())
    stages = config.get("stages", list(STAGES))  # folders saved before partial pipelines hold both
    for name, files in COMPONENT_FILES.items():
        head = name.partition("/")[0]
        if (head in STAGES and head not in stages) or (head == "localizer" and not config.get("localizer", True)):
            continue
        for file in files:
            if not (root / name / file).is_file():
                raise FileNotFoundError(f"KeyVID pipeline component {name!r}: {root / name / file} not found")
    return config


def check_exports(folders: dict[str, Path]) -> None:
    """The trainers' export folders (localizer / generator / interpolator) hold what they should."""
    for key, files in COMPONENT_FILES.items():
        stage, _, part = key.partition("/")
        if stage in folders:
            for file in files:
                path = folders[stage] / part / file
                if not path.is_file():
                    raise FileNotFoundError(f"{stage} export: {path} not found")


def stage_modules(folders: dict[str, Path]) -> dict[str, nn.Module | None]:
    """Each stage's UNet and image projector from ``folders[stage]`` (``unet/``, ``image_proj/``); None
    for a stage without a folder."""
    modules = {}
    for stage in STAGES:
        folder = folders.get(stage)
        modules[stage] = None if folder is None else KeyframeUNet.from_pretrained(folder / "unet")
        modules[f"{stage}_projector"] = None if folder is None else Resampler.from_pretrained(folder / "image_proj")
    return modules


def localizer_config(model: KeyframeLocalizer) -> dict:
    """A Hydra-instantiable config that rebuilds ``model`` (drop_path is inactive in eval)."""
    enc = model.encoder
    return {
        "_target_": "keyvid.models.localizer.keyframe_localizer",
        "embed_dim": enc.pos_embed.shape[-1],
        "num_blocks": len(enc.blocks),
        "num_heads": enc.blocks[0].attn.num_heads,
        "variant": model.variant,
        "num_frames": model.num_frames,
        "mel_frames": enc.mel_shape[1],
    }


def imagebind_config(enc: ImageBindAudio) -> dict:
    """A Hydra-instantiable config that rebuilds ``enc``."""
    return {
        "_target_": "keyvid.models.imagebind_audio.ImageBindAudio",
        "embed_dim": enc.pos_embed.shape[-1],
        "num_blocks": len(enc.blocks),
        "num_heads": enc.blocks[0].attn.num_heads,
        "kernel_size": enc.stem.proj.kernel_size[0],
        "stride": list(enc.stem.proj.stride),
        "num_mel_bins": enc.mel_shape[0],
        "mel_frames": enc.mel_shape[1],
        "cls_token": enc.cls_token is not None,
        "out_embed_dim": enc.head_proj.out_features if enc.has_head else None,
        "mlp_ratio": enc.blocks[0].mlp.fc1.out_features // enc.pos_embed.shape[-1],
    }


def save_module(path: Path, module: nn.Module, config: dict) -> None:
    """The trainers' export format (``keyvid.training.export.export_model``; ``keyvid.models.io.load_exported``
    reads it): the ``_target_`` config that rebuilds the module, and its weights."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, path / WEIGHTS)
