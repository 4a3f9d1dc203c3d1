"""Weights are untrusted files: every load goes through safetensors, ``torch.load(weights_only=True)``,
TorchScript, or the numpy-only unpickler of keyvid/eval/fvd.py (issue 21, part 6)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("keyvid", "launch", "data_prep", "bench") for p in (ROOT / d).rglob("*.py")]


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call ``name(...)`` (balanced parentheses)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end():i - 1])
    return out


def test_every_torch_load_is_weights_only():
    bad = [f"{p.relative_to(ROOT)}: torch.load({args})" for p in SOURCES
           for args in _calls(p.read_text(), "torch.load") if "weights_only=True" not in args]
    assert not bad, bad


def test_no_plain_unpickling_outside_the_restricted_loader():
    allowed = ROOT / "keyvid" / "eval" / "fvd.py"  # _NumpyUnpickler: numpy's reconstruction globals only
    bad = [f"{p.relative_to(ROOT)}:{i + 1}" for p in SOURCES if p != allowed
           for i, line in enumerate(p.read_text().splitlines())
           if re.search(r"\bpickle\.(load|loads|Unpickler)\b|\bnp\.load\(.*allow_pickle=True", line)]
    assert not bad, bad


def test_a_checkpoint_whose_state_pickle_would_run_code_is_refused(tmp_path):
    """accelerate unpickles custom_checkpoint_<i>.pkl (TrainState, EMA) fully; resume checks it first."""
    import os
    import pickle

    import pytest
    import torch
    from accelerate import Accelerator

    from keyvid.training.checkpoint import UnsafeCheckpoint, resume_if_possible, save_checkpoint
    from keyvid.training.state import TrainState

    acc = Accelerator(cpu=True, log_with=None)
    model, opt = acc.prepare(torch.nn.Linear(2, 1), torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1))
    acc.register_for_checkpointing(TrainState())
    save_checkpoint(acc, tmp_path, 1)
    assert resume_if_possible(acc, tmp_path, "auto").name == "checkpoint-1"  # our own file loads
    marker = tmp_path / "code_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "checkpoint-1" / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeCheckpoint, match="custom_checkpoint_0.pkl: not a plain"):
        resume_if_possible(acc, tmp_path, "auto")
    assert not marker.exists()
