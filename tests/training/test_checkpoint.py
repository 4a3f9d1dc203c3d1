import pytest
import torch
from accelerate import Accelerator

from keyvid.training.checkpoint import MARKER, latest_checkpoint, list_checkpoints, resume_if_possible, save_checkpoint
from keyvid.training.run_dir import resolve_run_dir
from keyvid.training.state import TrainState


def _setup():
    acc = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model, opt = acc.prepare(model, opt)
    state = TrainState()
    acc.register_for_checkpointing(state)
    return acc, model, state


def test_partial_checkpoints_are_never_picked(tmp_path):
    acc, model, state = _setup()
    for step in (1, 2, 3, 4):
        state.step = step
        save_checkpoint(acc, tmp_path, step, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-4"]
    (tmp_path / "checkpoint-9.tmp").mkdir()  # a crash mid-save
    (tmp_path / "checkpoint-7").mkdir()  # renamed but no marker
    assert latest_checkpoint(tmp_path).name == "checkpoint-4"
    state.step = 0
    with torch.no_grad():
        model.weight.zero_()
    assert resume_if_possible(acc, tmp_path, "auto").name == "checkpoint-4"
    assert state.step == 4 and model.weight.abs().sum() > 0
    with pytest.raises(FileNotFoundError, match=MARKER):
        resume_if_possible(acc, tmp_path, str(tmp_path / "checkpoint-7"))
    assert resume_if_possible(acc, tmp_path / "empty", "auto") is None


def test_run_dir_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert resolve_run_dir(str(tmp_path / "x"), "runs", "gen") == tmp_path / "x"
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert resolve_run_dir(None, tmp_path, "gen") == tmp_path / "gen" / "123"
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="run_dir"):
        resolve_run_dir(None, tmp_path, "gen")


def test_train_state_reads_checkpoints_with_dropped_fields():
    """TrainState.epoch was never used and is gone; a checkpoint that still has it loads."""
    state = TrainState()
    state.load_state_dict({"step": 7, "samples_seen": 14, "epoch": 0, "last_loss": 0.5, "skipped_nonfinite": 0})
    assert state.step == 7 and not hasattr(state, "epoch") and "epoch" not in state.state_dict()
