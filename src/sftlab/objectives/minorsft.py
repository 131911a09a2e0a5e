"""MinorSFT and "SFT using DPO": losses of the implicit reward r = log πθ(y|x) − log πref(y|x).

log πref(y|x) is precomputed once per example (``ref_logprobs.parquet``, column ``ref_logp``) and joined
into the batch, so no reference model is held in memory while training.
"""

from __future__ import annotations

import abc

from sftlab.lazy import torch

from .base import (REFERENCE_COLUMN, LossTerm, Objective, batch_sequence_logps, example_counts, model_inputs,
                   register_objective)


def minorsft_loss(
    policy_logps: torch.Tensor, ref_logps: torch.Tensor, n_tokens: torch.Tensor, beta: float
) -> torch.Tensor:
    """Per-example −(2 / (β·|y|))·log σ(β·r); its gradient is −(2/|y|)·σ(−β·r)·∇log πθ(y|x)."""
    reward = policy_logps - ref_logps
    return -2.0 / (beta * n_tokens.to(reward.dtype)) * torch.nn.functional.logsigmoid(beta * reward)


def dpo_sft_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-example −log σ(β·r): DPO with the chosen answer only."""
    return -torch.nn.functional.logsigmoid(beta * (policy_logps - ref_logps))


class _RewardObjective(Objective):
    """A per-example loss ℓ(r, |y|), counted as the mean over the answer's |y| tokens: with ``loss_reduction``
    example_mean it is averaged over the examples (the papers' expectation), with token_mean weighed by |y| / tokens,
    so that at r = 0 MinorSFT's gradient is NTP's under every reduction."""

    columns = (REFERENCE_COLUMN,)
    batch_reduction = "example_mean"
    paper = "MinorSFT"

    def __init__(self, beta: float = 0.1) -> None:
        if not beta > 0:
            raise ValueError(f"objective {self.name!r}: beta must be positive, got {beta}")
        self.beta = float(beta)

    @abc.abstractmethod
    def per_example_loss(self, policy_logps, ref_logps, n_tokens) -> torch.Tensor:
        """Per-example loss from log πθ(y|x), log πref(y|x) and |y|."""

    def terms(self, model, batch):
        logits = model(**model_inputs(batch)).logits
        policy_logps, n_tokens = batch_sequence_logps(logits, batch)
        ref_logps = batch["ref_logp"].to(policy_logps.dtype)
        losses = self.per_example_loss(policy_logps, ref_logps, n_tokens)
        # the deviation metric's per-batch counterpart: r/|y| does not depend on β
        reward = ((policy_logps - ref_logps) / n_tokens).detach()
        return {"reward": LossTerm(losses * n_tokens, n_tokens)}, {"reward_per_token": float(reward.mean())}

    def counts(self, batch):
        return {"reward": example_counts(batch)}


@register_objective("minorsft")
class MinorSFT(_RewardObjective):
    label = "MinorSFT"

    def per_example_loss(self, policy_logps, ref_logps, n_tokens):
        return minorsft_loss(policy_logps, ref_logps, n_tokens, self.beta)


@register_objective("dpo_sft")
class DPOSFT(_RewardObjective):
    label = "DPO-SFT"

    def per_example_loss(self, policy_logps, ref_logps, n_tokens):
        return dpo_sft_loss(policy_logps, ref_logps, self.beta)
