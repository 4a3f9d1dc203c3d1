"""Train state registered for checkpointing: step, samples seen, data position (torchtitan-style)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    samples_seen: int = 0  # summed over all ranks
    last_loss: float = float("nan")
    skipped_nonfinite: int = 0  # batches whose loss was NaN/inf, skipped without a step

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            if k in self.__dataclass_fields__:  # checkpoints written before a field was dropped (epoch)
                setattr(self, k, v)
