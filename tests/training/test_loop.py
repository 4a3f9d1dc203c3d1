import itertools

import pytest
import torch
from accelerate import Accelerator

from keyvid.training.checkpoint import latest_checkpoint
from keyvid.training.loop import NonFiniteLoss, train_loop
from keyvid.training.state import TrainState


def _linear():
    """A prepared Linear(2, 1) with SGD and a constant schedule: the smallest thing train_loop runs."""
    acc = Accelerator(cpu=True, log_with=None)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return (acc, *acc.prepare(model, opt, sched))


def _ones(step):
    while True:
        yield {"x": torch.ones(2, 2), "key": ["a", "b"]}


def _run(tmp_path, losses_at, max_steps=4, max_bad=3):
    acc, model, opt, sched = _linear()
    state = TrainState()
    calls = itertools.count()

    def loss_step(batch):
        i = next(calls)
        loss = model(batch["x"]).pow(2).mean()
        return (loss * float("nan") if i in losses_at else loss), {}

    train_loop(acc, model, opt, sched, _ones, loss_step, state, max_steps=max_steps, ckpt_dir=tmp_path,
               save_every=100, log_every=1, max_nonfinite_in_row=max_bad)
    return state, model


def test_nonfinite_losses_are_skipped_and_counted(tmp_path):
    state, model = _run(tmp_path, losses_at={1, 2})
    assert state.step == 4 and state.skipped_nonfinite == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_nonfinite_in_a_row_abort(tmp_path):
    with pytest.raises(NonFiniteLoss, match="3 non-finite losses in a row"):
        _run(tmp_path, losses_at={1, 2, 3})


def test_stop_signal_checkpoints_the_step_and_stops(tmp_path):
    import os
    import signal

    from keyvid.training.loop import Preempted

    acc, model, opt, sched = _linear()
    state, calls = TrainState(), itertools.count()

    def loss_step(batch):
        if next(calls) == 2:  # SIGTERM arrives during the third step
            os.kill(os.getpid(), signal.SIGTERM)
        return model(batch["x"]).pow(2).mean(), {}

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted, match="SIGTERM.*step 3"):
        train_loop(acc, model, opt, sched, _ones, loss_step, state, max_steps=10, ckpt_dir=tmp_path,
                   save_every=100, log_every=1)
    assert state.step == 3 and (tmp_path / "checkpoint-3").is_dir()  # the step finished, then was saved
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is removed again


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import errno

    from keyvid.training.checkpoint import list_checkpoints

    acc, model, opt, sched = _linear()
    real_save = acc.save_state

    def save_state(path, *a, **k):  # the second save writes part of its files, then the disk is full
        real_save(path, *a, **k)
        if path.endswith("checkpoint-4.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(acc, "save_state", save_state)

    with pytest.raises(OSError, match="No space left"):
        train_loop(acc, model, opt, sched, _ones, lambda b: (model(b["x"]).pow(2).mean(), {}), TrainState(),
                   max_steps=6, ckpt_dir=tmp_path, save_every=2, log_every=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-2"]  # what resume=auto picks
    assert (tmp_path / "checkpoint-4.tmp").exists() and not (tmp_path / "checkpoint-4").exists()


def test_time_limit_checkpoints_and_ends_the_run_normally(tmp_path):
    acc, model, opt, sched = _linear()
    state = TrainState()

    # a limit of 0 minutes is past after the first step: no exception, the step is checkpointed
    train_loop(acc, model, opt, sched, _ones, lambda b: (model(b["x"]).pow(2).mean(), {}), state,
               max_steps=50, ckpt_dir=tmp_path, save_every=100, log_every=100, time_limit_minutes=0.0)
    assert state.step == 1
    assert latest_checkpoint(tmp_path).name == "checkpoint-1"
