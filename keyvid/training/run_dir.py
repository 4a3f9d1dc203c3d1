"""The run directory, identical on every rank, plus what it records about the run.

Under multi-process launch each rank resolves the config by itself, so a per-rank ``${now:}``
gives each rank its own directory (hydra#2070). The directory therefore comes from the launcher:
an explicit ``run_dir=``, else the SLURM job id; a single process may fall back to a timestamp.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def resolve_run_dir(run_dir: str | None, root: str | Path, name: str) -> Path:
    if run_dir:
        return Path(run_dir).absolute()
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        array = os.environ.get("SLURM_ARRAY_TASK_ID")
        return Path(root).absolute() / name / (f"{job}_{array}" if array else job)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("multi-process run without run_dir= or SLURM_JOB_ID: ranks would disagree on the "
                         "run directory; pass run_dir=<path> on the command line")
    return Path(root).absolute() / name / time.strftime("%Y%m%d-%H%M%S")


def git_revision(repo: str | Path | None = None) -> str:
    repo = Path(repo or Path(__file__).resolve().parents[2])
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def record_run(run_dir: Path, resolved_config_yaml: str) -> None:
    """Write the resolved config and the git revision (main process only)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(resolved_config_yaml)
    (run_dir / "git_revision.txt").write_text(git_revision() + "\n")
