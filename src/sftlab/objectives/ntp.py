"""Plain SFT: the negative log-likelihood of the response tokens, reduced by ``training.loss_reduction``."""

from __future__ import annotations

from sftlab.lazy import torch

from .base import LossTerm, Objective, batch_sequence_logps, example_counts, model_inputs, register_objective, token_logps


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood over all response tokens of the batch (prompt tokens carry label -100)."""
    logps, mask = token_logps(logits, labels)
    return -logps.sum() / mask.sum().clamp(min=1)


def nll_term(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> LossTerm:
    """Per example the summed NLL of its response tokens, and their number."""
    logps, n_tokens = batch_sequence_logps(logits, batch)
    return LossTerm(-logps, n_tokens)


@register_objective("ntp")
class NTP(Objective):
    label = "SFT"

    def terms(self, model, batch):
        return {"nll": nll_term(model(**model_inputs(batch)).logits, batch)}, {}

    def counts(self, batch):
        return {"nll": example_counts(batch)}
