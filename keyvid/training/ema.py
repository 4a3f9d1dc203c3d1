"""EMA of the trainable weights (diffusers' EMAModel), checkpointed with the train state."""

from __future__ import annotations

from diffusers.training_utils import EMAModel


def setup_ema(cfg_train, model):
    """None when ``train.ema_decay`` is 0; otherwise an EMA over the parameters that train."""
    if not cfg_train.ema_decay:
        return None
    return EMAModel([p for p in model.parameters() if p.requires_grad], decay=cfg_train.ema_decay)
