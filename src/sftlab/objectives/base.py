"""The objective axis: a per-batch loss, registered under its config name.

A batch is a dict of tensors made by ``sftlab.data.collate``:
``input_ids`` (B, T), ``attention_mask`` (B, T), ``labels`` (B, T) with -100 on every non-response
token, ``n_tokens`` (B,) response-token counts, plus one (B,) tensor per name in ``Objective.columns``
(per-example values joined by id from Parquet tables, e.g. ``ref_logp``, ``confident``).
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar

import torch

from sftlab.registry import lookup, registrar

OBJECTIVES: dict[str, type["Objective"]] = {}


register_objective = registrar(OBJECTIVES, "objective")


def build_objective(name: str, params: dict[str, Any] | None = None) -> "Objective":
    return lookup(OBJECTIVES, "objective", name)(**(params or {}))


class Objective(abc.ABC):
    """Base class. Subclasses implement ``loss``; the trainer only wires batches into it."""

    name: ClassVar[str]
    #: extra per-example columns the batch must carry (joined by id from Parquet tables)
    columns: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **params: Any) -> None:
        if params:
            raise ValueError(f"objective {self.name!r} takes no parameters, got {sorted(params)}")

    @abc.abstractmethod
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of this micro-batch and metrics to log (plain floats)."""

    def train_sampler(self, dataset, batch_size: int, seed: int):
        """A ``torch.utils.data.Sampler`` over ``dataset`` if the objective needs a special batch layout, else None."""
        return None


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


#: positions per log-sum-exp chunk: bounds the float32 working set to chunk × vocabulary (0.5 GB at a 128K vocabulary)
LOGSUMEXP_CHUNK = 1024


def chunked_logsumexp(logits: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """log Σ_v exp(logits[..., v]) in float32, ``chunk`` positions at a time.

    Slices are views, so float32 logits are never copied; lower-precision logits are upcast one chunk at a time.
    """
    chunk = chunk or LOGSUMEXP_CHUNK
    if logits.shape[0] == 0:
        return logits.new_zeros(logits.shape[:-1], dtype=torch.float32)
    if logits.dim() > 2:
        return torch.stack([chunked_logsumexp(row, chunk) for row in logits])
    return torch.cat([torch.logsumexp(logits[start:start + chunk].float(), dim=-1)
                      for start in range(0, logits.shape[0], chunk)])


def selective_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[..., target] in float32 without materialising the (…, vocabulary) log-softmax:
    the target's logit minus the position's log-sum-exp (TRL's ``selective_log_softmax``)."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1).float()
    return picked - chunked_logsumexp(logits)


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the next-token labels and their mask.

    ``logits`` (B, T, V) from positions 0..T-1 predict tokens 1..T; returns (B, T-1) float32 log-probs
    (0 where masked) and the (B, T-1) boolean mask of response positions.
    """
    shifted_labels = labels[:, 1:]
    mask = shifted_labels != -100
    safe = shifted_labels.masked_fill(~mask, 0)
    logps = selective_logps(logits[:, :-1], safe)
    return logps * mask, mask


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probabilities per example, log π(y|x), and the response lengths |y|."""
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)
