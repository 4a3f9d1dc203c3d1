import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PORT_TAKEN = re.compile(r"address already in use|EADDRINUSE|DistNetworkError", re.I)
STEP = re.compile(r"^step (\d+)/\d+ loss=([0-9.eE+-]+)", re.M)


def env():
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    e.pop("WORLD_SIZE", None)
    return e


def run_script(script, *overrides, launcher=None, check=True, timeout=300):
    """Run a launch script (optionally under ``accelerate launch --config_file <launcher>``)."""
    for _ in range(2):
        cmd = [sys.executable, str(REPO / "launch" / script), *overrides]
        if launcher:
            cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                   str(REPO / "launch" / "accelerate" / launcher), "--main_process_port", str(_free_port()),
                   str(REPO / "launch" / script), *overrides]
        p = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
        # _free_port's port can be taken by another test between its check and the rendezvous: one retry
        if not (launcher and p.returncode != 0 and PORT_TAKEN.search(p.stdout + p.stderr)):
            break
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}")
    return p


def losses(output: str) -> dict[int, float]:
    return {int(s): float(v) for s, v in STEP.findall(output)}


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
