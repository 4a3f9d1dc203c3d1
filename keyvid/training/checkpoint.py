"""Checkpoints: every rank saves (accelerate#1171), atomically, with rotation.

``accelerator.save_state`` must run on every rank: DeepSpeed gathers shards collectively, so
wrapping it in ``is_main_process`` hangs (diffusers#2606). It writes into ``<name>.tmp``; after a
barrier the main process renames it to ``checkpoint-<step>`` and only then writes the
``COMPLETE`` marker, so a crash mid-save leaves a ``.tmp`` that resume never picks up.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator

_PATTERN = re.compile(r"^checkpoint-(\d+)$")
MARKER = "COMPLETE"


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir()
             if (m := _PATTERN.match(p.name)) and (p / MARKER).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, keep_last: int = 3) -> Path:
    final = ckpt_dir / f"checkpoint-{step}"
    tmp = ckpt_dir / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # a stale partial save of the same step
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every rank
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        (final / MARKER).write_text(f"{step}\n")
        for old in list_checkpoints(ckpt_dir)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume_if_possible(accelerator: Accelerator, ckpt_dir: Path, resume: str | bool = "auto") -> Path | None:
    """``resume``: "auto"/True (latest complete checkpoint, if any), False, or a checkpoint path."""
    if resume is False or resume in ("never", "false", None):
        return None
    if resume in (True, "auto", "latest", "true"):
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            return None
    else:
        path = Path(resume)
        if not (path / MARKER).exists():
            raise FileNotFoundError(f"not a complete checkpoint (no {MARKER} marker): {path}")
    check_custom_states(path)
    accelerator.load_state(str(path))
    return path


class UnsafeCheckpoint(ValueError):
    pass


def check_custom_states(path: Path) -> None:
    """accelerate loads ``register_for_checkpointing`` objects (``custom_checkpoint_<i>.pkl``: our
    TrainState and EMA) with a full unpickler, so a checkpoint from elsewhere could run code on
    resume. Ours hold only numbers and tensors: each must load with ``weights_only=True`` first.
    (The model is safetensors; accelerate loads the optimizer, scheduler and RNG files weights-only.)"""
    for f in sorted(Path(path).glob("custom_checkpoint_*.pkl")):
        try:
            torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure means: do not unpickle it for real
            raise UnsafeCheckpoint(f"{f}: not a plain tensors-and-numbers state file, refusing to load it "
                                   f"(a pickle can run code): {str(err).splitlines()[0][:200]}") from err
