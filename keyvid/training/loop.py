"""The training loop shared by the three trainers: accumulation, stepping, logging, saving.

The model-specific part is a ``loss_step(batch) -> (loss, logs)`` closure written in each launch
script (torchtune's ``_loss_step``); everything here is generic.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator

from keyvid.training.checkpoint import save_checkpoint
from keyvid.training.state import TrainState


class NonFiniteLoss(RuntimeError):
    pass


class Preempted(RuntimeError):
    """Raised after the checkpoint a stop signal (SIGTERM, SIGUSR1) asked for has been saved."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated job


STOP_SIGNALS = ("SIGTERM", "SIGUSR1")  # SLURM: scancel / preemption, and `#SBATCH --signal=USR1@120`


class StopRequest:
    """Within ``with StopRequest() as stop``, a stop signal sets ``stop.requested`` instead of killing
    the process mid-step; ``train_loop`` then checkpoints and stops. Installed only in the main thread
    (Python delivers signals there); the previous handlers come back on exit.
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals, self.requested, self.signal_name, self._old = signals, False, None, {}

    def _handle(self, signum, frame):
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (getattr(signal, name) for name in self.signals if hasattr(signal, name)):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


@contextmanager
def exit_on_preemption(accelerator: Accelerator):
    """Entry scripts: a ``Preempted`` run (checkpoint saved) ends the trackers and exits with 143."""
    try:
        yield
    except Preempted as stopped:
        accelerator.print(stopped)
        accelerator.end_training()
        raise SystemExit(stopped.exit_code) from None


def train_loop(
    accelerator: Accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler,
    make_batches: Callable[[int], Iterator[dict]],
    loss_step: Callable[[dict], tuple[torch.Tensor, dict]],
    state: TrainState,
    *,
    max_steps: int,
    ckpt_dir: Path,
    save_every: int,
    keep_last: int = 3,
    log_every: int = 10,
    max_grad_norm: float | None = 1.0,
    ema=None,
    batch_size: Callable[[dict], int] = lambda b: len(b["key"]),
    max_nonfinite_in_row: int = 5,
    on_step: Callable[[int, dict], None] | None = None,
    time_limit_minutes: float | None = None,
) -> TrainState:
    """Run until ``state.step == max_steps``; saves every ``save_every`` steps and at the end.

    ``time_limit_minutes`` (wall clock from the call, compiling included) ends the run early as if
    ``max_steps`` had been reached: the step it stopped at is checkpointed and the caller exports as
    usual. A rerun with ``train.resume=auto`` goes on from there towards ``max_steps``.

    ``make_batches(step)`` starts the data stream for a given step. It is restarted after every
    checkpoint, so a run resumed from step k reads exactly the batches the uninterrupted run read
    after its step-k save: with model, optimizer and RNG restored, the losses continue unchanged.
    """
    model.train()
    with StopRequest() as stop:
        batches = make_batches(state.step)
        stop_everywhere = False
        bad_in_row = 0
        t0, seen0 = time.perf_counter(), state.samples_seen
        deadline = None if time_limit_minutes is None else time.monotonic() + 60.0 * time_limit_minutes
        out_of_time = False
        data_wait = 0.0  # seconds spent waiting for batches since the last log line
        while state.step < max_steps:
            tw = time.perf_counter()
            batch = next(batches)
            data_wait += time.perf_counter() - tw
            with accelerator.accumulate(model):
                loss, logs = loss_step(batch)
                # One collective gives both the logged mean loss and the skip decision: a NaN/inf on any
                # rank makes the mean non-finite, so every rank skips together (or DDP/DeepSpeed would hang).
                # The same collective carries the stop request, so every rank stops after the same step.
                # So does the time limit: a rank past its deadline ends the run on every rank.
                late = deadline is not None and time.monotonic() > deadline
                flags = torch.cat([loss.detach().float().reshape(1),
                                   torch.tensor([float(stop.requested), float(late)], device=loss.device)])
                mean_loss, stop_mean, late_mean = accelerator.reduce(flags, "mean").tolist()
                stop_everywhere = stop_everywhere or stop_mean > 0
                out_of_time = out_of_time or late_mean > 0
                if not math.isfinite(mean_loss):
                    state.skipped_nonfinite += 1
                    bad_in_row += 1
                    optimizer.zero_grad(set_to_none=True)
                    accelerator.print(f"non-finite loss at step {state.step} (keys {batch.get('key')}): skipped")
                    if bad_in_row >= max_nonfinite_in_row:
                        raise NonFiniteLoss(f"{bad_in_row} non-finite losses in a row at step {state.step}; "
                                            f"the last complete checkpoint in {ckpt_dir} is kept")
                    continue
                bad_in_row = 0
                accelerator.backward(loss)
                if accelerator.sync_gradients and max_grad_norm:
                    logs["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), max_grad_norm))
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state.samples_seen += batch_size(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            state.last_loss = mean_loss
            if ema is not None:
                ema.step([p for p in accelerator.unwrap_model(model).parameters() if p.requires_grad])
            if state.step % log_every == 0 or state.step == max_steps:
                dt = time.perf_counter() - t0
                logs = {"loss": state.last_loss, "lr": lr_scheduler.get_last_lr()[0],
                        "samples_per_s": (state.samples_seen - seen0) / max(dt, 1e-9),
                        "data_wait_share": data_wait / max(dt, 1e-9), **logs}
                if torch.cuda.is_available():
                    logs["gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
                t0, seen0, data_wait = time.perf_counter(), state.samples_seen, 0.0
                accelerator.log(logs, step=state.step)
                accelerator.print(f"step {state.step}/{max_steps} " + " ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) and math.isfinite(v) else f"{k}={v}" for k, v in logs.items()))
            if on_step is not None:
                on_step(state.step, batch)  # e.g. sample previews; called on every rank
            if state.step % save_every == 0 or state.step == max_steps or stop_everywhere or out_of_time:
                save_checkpoint(accelerator, ckpt_dir, state.step, keep_last)
                if stop_everywhere and state.step < max_steps:
                    raise Preempted(f"stop signal ({stop.signal_name or 'on another rank'}) at step {state.step}: "
                                    f"checkpoint saved in {ckpt_dir}; rerun with train.resume=auto to continue")
                if out_of_time and state.step < max_steps:
                    accelerator.print(f"time limit of {time_limit_minutes} min reached at step {state.step}/{max_steps}: "
                                      f"checkpoint saved in {ckpt_dir}")
                    break
                if state.step < max_steps:
                    batches = make_batches(state.step)
    return state
