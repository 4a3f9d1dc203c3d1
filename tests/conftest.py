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

    # The long end-to-end tests (marked slow) first: under `-n 2` they then run beside the many short
    # ones instead of leaving one worker idle at the end. A stable sort, so every worker collects the
    # same order, as pytest-xdist requires.
    items.sort(key=lambda item: 0 if "slow" in item.keywords else 1)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    """Synthetic clips at 64x96 -> WebDataset shards (train: 2 shards), as the trainers read them."""
    from data_prep.shards import write_tiny_shards

    pattern = write_tiny_shards(tmp_path_factory.mktemp("tiny_data"))
    shards = sorted(Path(pattern).parent.glob("train-*.tar"))
    assert len(shards) == 2, shards
    return pattern
