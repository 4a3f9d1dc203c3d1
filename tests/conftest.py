import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "upstream"
MEDIA = SHARED / "media"


def _needs(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} is absent (a user's clone has no ../shared)")


needs_fixtures = _needs(FIXTURES)
needs_media = _needs(MEDIA)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
