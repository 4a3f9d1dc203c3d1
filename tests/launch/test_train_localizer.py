import signal
import subprocess
import sys
import time

import pytest
import torch

from keyvid.training.checkpoint import list_checkpoints
from keyvid.models.io import load_exported
from tests.launch.helpers import REPO, _free_port, env, losses, run_script


def _shards(tiny_shards):
    return f"data.train_shards='{tiny_shards}'"


def test_two_steps_then_resume_continues_exactly(tiny_shards, tmp_path):
    full = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path / 'a'}",
                      "train.max_steps=6")
    ref = losses(full.stdout)
    assert sorted(ref) == [1, 2, 3, 4, 5, 6]
    part = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path / 'b'}",
                      "train.max_steps=2")
    assert sorted(losses(part.stdout)) == [1, 2]
    resumed = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path / 'b'}",
                         "train.max_steps=6")
    assert "at step 2" in resumed.stdout
    got = losses(resumed.stdout)
    assert sorted(got) == [3, 4, 5, 6]
    for step, value in got.items():
        assert value == pytest.approx(ref[step], abs=1e-5), step
    run = tmp_path / "b"
    assert (run / "config.yaml").exists() and (run / "git_revision.txt").exists()
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    model = load_exported(run / "export")
    assert model(torch.zeros(1, 1, 128, 204)).shape == (1, 48)
    assert any((run / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=-1", "train.batch_size"),
    ("data.train_shards=/nonexistent/train-000000.tar", "data.train_shards"),
    ("train.bogus_key=1", "bogus_key"),
    ("pretrained_imagebind=/nonexistent/imagebind_huge.pth", "imagebind_huge.pth"),
])
def test_bad_config_fails_at_startup_naming_the_key(tiny_shards, tmp_path, override, message):
    p = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path}", override,
                   check=False)
    assert p.returncode != 0
    assert message in p.stdout + p.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_ddp_two_cpu_processes(tiny_shards, tmp_path):
    p = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path}",
                   "train.max_steps=2", launcher="cpu_ddp.yaml")
    assert sorted(losses(p.stdout)) == [1, 2]
    assert (tmp_path / "checkpoints" / "checkpoint-2" / "COMPLETE").exists()


def _launch_zero2(tiny_shards, run_dir, max_steps):
    from tests.launch.helpers import _free_port

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "launch/accelerate/cpu_zero2.yaml"), "--main_process_port", str(_free_port()),
           str(REPO / "launch/train_localizer.py"), "debug=tiny", _shards(tiny_shards), f"run_dir={run_dir}",
           f"train.max_steps={max_steps}", "train.save_every=1"]
    return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun may start workers in new sessions)."""
    import os
    from pathlib import Path

    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.parametrize("kill_after", [1, 3])
def test_zero2_killed_mid_run_resumes_and_continues(tiny_shards, tmp_path, kill_after):
    """DeepSpeed ZeRO-2, 2 CPU processes over gloo: SIGKILL the whole job once checkpoint
    ``kill_after`` is complete, relaunch, and check step and loss continue as uninterrupted."""
    ref = losses(run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={tmp_path / 'ref'}",
                            "train.max_steps=5", "train.save_every=1", launcher="cpu_zero2.yaml").stdout)
    run_dir = tmp_path / "run"
    proc = _launch_zero2(tiny_shards, run_dir, 5)
    deadline = time.time() + 240
    while not (run_dir / "checkpoints" / f"checkpoint-{kill_after}" / "COMPLETE").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    _kill_tree(proc.pid)
    proc.wait()
    done = list_checkpoints(run_dir / "checkpoints")
    assert done and all((p / "COMPLETE").exists() for p in done)
    last = int(done[-1].name.split("-")[1])
    resumed = run_script("train_localizer.py", "debug=tiny", _shards(tiny_shards), f"run_dir={run_dir}",
                         "train.max_steps=5", "train.save_every=1", launcher="cpu_zero2.yaml")
    assert f"at step {last}" in resumed.stdout
    got = losses(resumed.stdout)
    assert sorted(got) == list(range(last + 1, 6))
    for step, value in got.items():
        assert value == pytest.approx(ref[step], abs=1e-4), (step, got, ref)


def test_sigterm_checkpoints_then_exits_143_and_resumes_exactly(tiny_shards, tmp_path):
    """SLURM's scancel / preemption: SIGTERM mid-run saves the step it was in and exits 143; the
    resumed run continues from that step exactly as a run whose checkpoint fell on that step does
    (the data stream restarts at every checkpoint, so that is the reference, not the unbroken run)."""
    args = ["debug=tiny", _shards(tiny_shards), "train.save_every=100", "train.log_every=1"]
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "launch/train_localizer.py"), *args, f"run_dir={run_dir}",
                             "train.max_steps=30"], cwd=REPO, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen, deadline = "", time.time() + 240
    while "step 2/30" not in seen:  # a line per step: stop once training runs
        line = proc.stdout.readline()
        assert line or proc.poll() is None, seen
        seen += line
        assert time.time() < deadline, seen
    proc.send_signal(signal.SIGTERM)
    out = seen + proc.communicate(timeout=240)[0]
    assert proc.returncode == 143, out
    done = list_checkpoints(run_dir / "checkpoints")
    assert len(done) == 1 and (done[0] / "COMPLETE").exists() and "stop signal (SIGTERM)" in out
    last = int(done[0].name.split("-")[1])
    assert 2 <= last < 30
    resumed = run_script("train_localizer.py", *args, f"run_dir={run_dir}", "train.max_steps=30")
    got = losses(resumed.stdout)
    assert sorted(got) == list(range(last + 1, 31))
    run_script("train_localizer.py", *args, f"run_dir={tmp_path / 'ref'}", f"train.max_steps={last}")
    ref = losses(run_script("train_localizer.py", *args, f"run_dir={tmp_path / 'ref'}", "train.max_steps=30").stdout)
    for step, value in got.items():
        assert value == pytest.approx(ref[step], abs=1e-5), step


@pytest.mark.parametrize("launcher", ["accelerate", "torchrun"])
def test_sigterm_to_the_launcher_reaches_both_workers_and_checkpoints(tiny_shards, tmp_path, launcher):
    """SLURM signals the job step's launcher (srun runs ``accelerate launch`` or ``torchrun``), not the
    workers, which torch elastic starts in sessions of their own. The launcher's agent forwards the
    SIGTERM; both ranks must stop after the same step, save one complete checkpoint there, and leave
    no worker running."""
    import psutil

    run_dir = tmp_path / "run"
    script = [str(REPO / "launch/train_localizer.py"), "debug=tiny", _shards(tiny_shards), "train.save_every=100",
              "train.log_every=1", f"run_dir={run_dir}", "train.max_steps=200"]
    port = str(_free_port())
    cmd = ([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(REPO / "launch/accelerate/cpu_ddp.yaml"), "--main_process_port", port, *script]
           if launcher == "accelerate" else
           [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port, *script])
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, deadline = "", time.time() + 240
    while "step 3/200" not in seen:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, seen
        seen += line
        assert time.time() < deadline, seen
    workers = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)  # the launcher only, as srun / scancel do
    out = seen + proc.communicate(timeout=240)[0]
    assert proc.returncode != 0, out  # a stopped run is not a finished one
    done = list_checkpoints(run_dir / "checkpoints")
    assert len(done) == 1 and (done[0] / "COMPLETE").exists(), out
    assert 3 <= int(done[0].name.split("-")[1]) < 200
    assert "stop signal (SIGTERM)" in out, out
    psutil.wait_procs(workers, timeout=30)
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], out
