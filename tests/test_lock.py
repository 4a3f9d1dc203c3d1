"""requirements/lock.txt: the exact package set CI installs (scripts/setup.sh, refreshed by scripts/lock.sh)."""

import re
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[_canonical(m.group(1))] = m.group(2)
    return pins


def _project_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + project["optional-dependencies"]["dev"]


def test_lock_pins_every_requirement_and_agrees_with_pyproject():
    lock = _lock()
    for req in _project_requirements():
        name = _canonical(re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0])
        assert name in lock, f"{req} (pyproject.toml) is not in requirements/lock.txt: run scripts/lock.sh"
        if "==" in req:
            assert lock[name] == req.split("==")[1].strip(), f"{req} (pyproject.toml) vs lock {lock[name]}"
    # the torch stack is the GPU image's (../shared/ENV_NOTES.md)
    assert (lock["torch"], lock["torchaudio"], lock["torchvision"]) == ("2.11.0", "2.11.0", "0.26.0")


@pytest.mark.skipif(Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(), reason="not the project's .venv")
def test_project_venv_matches_the_lock():
    lock = _lock()
    drift = {}
    # site-packages only: setuptools puts its vendored copies (packaging, zipp, ...) on sys.path too
    for dist in metadata.distributions(path=[sysconfig.get_paths()["purelib"]]):
        name = _canonical(dist.metadata["Name"])
        if name in lock and dist.version != lock[name]:
            drift[name] = (dist.version, lock[name])
    assert not drift, f"installed vs locked: {drift}; rerun scripts/setup.sh"
