"""Plain SFT: mean token cross-entropy over the response tokens of the batch."""

from __future__ import annotations

from sftlab.lazy import torch

from .base import Objective, model_inputs, register_objective, token_logps


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all response tokens of the batch (prompt tokens carry label -100)."""
    logps, mask = token_logps(logits, labels)
    return -logps.sum() / mask.sum().clamp(min=1)


@register_objective("ntp")
class NTP(Objective):
    def loss(self, model, batch):
        logits = model(**model_inputs(batch)).logits
        loss = ntp_loss(logits, batch["labels"])
        return loss, {}
