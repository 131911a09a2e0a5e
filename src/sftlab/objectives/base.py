"""The objective axis: a per-batch loss, registered under its config name.

A batch is a dict of tensors made by ``sftlab.data.tokenize.collate`` (``collate_packed`` for packed batches):
``input_ids`` (B, T), ``attention_mask`` (B, T), ``labels`` (B, T) with -100 on every non-response
token, ``n_tokens`` (B,) response-token counts, plus one (B,) tensor per name in ``Objective.columns``
(per-example values joined by id from Parquet tables, e.g. ``ref_logp``, ``confident``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from sftlab.lazy import torch

if TYPE_CHECKING:
    import pandas as pd

from sftlab.registry import constructor_parameters, lookup, registrar

OBJECTIVES: dict[str, type["Objective"]] = {}


register_objective = registrar(OBJECTIVES, "objective")

#: the column of per-example log πref(y|x): an objective whose batch carries it compares the policy with the reference
REFERENCE_COLUMN = "ref_logp"
#: the SFT baseline every paper's method is compared with
BASELINE_OBJECTIVE = "ntp"

#: how a loss term's per-item values are reduced over the global batch (``training.loss_reduction``)
REDUCTIONS = ("example_mean", "token_mean", "sum")


@dataclass
class LossTerm:
    """One term of an objective's loss on a micro-batch, before any reduction.

    ``sums`` (K,): per unit (an example; SFTMix's Mixup term: a pair) the sum of the term's per-item losses;
    ``counts`` (K,): the items of each unit (response tokens; SFTMix's mixed positions). ``sums / counts`` is a unit's
    own mean. A sequence-level loss ℓ (MinorSFT, DPO-SFT) is taken as the mean over its answer's tokens: sum |y|·ℓ.
    """

    sums: torch.Tensor
    counts: torch.Tensor
    weight: float = 1.0


def reduce_terms(terms: Mapping[str, LossTerm], reduction: str, totals: Mapping[str, tuple[float, float]]) -> torch.Tensor:
    """The micro-batch's share of the global batch's loss Σ weight · R(term).

    ``totals`` maps each term to (units, items) of the whole global batch (every micro-batch of the optimiser step on
    every process), so that the shares of all micro-batches add up to the loss of the global batch, whatever its layout:
    ``example_mean``: Σ_units (sums/counts) / units; ``token_mean``: Σ sums / items; ``sum``: Σ sums.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"training.loss_reduction: {reduction!r} is not one of {list(REDUCTIONS)}")
    loss = None
    for name, term in terms.items():
        units, items = totals[name]
        sums = term.sums.float()
        if reduction == "example_mean":
            value = (sums / term.counts.clamp(min=1).to(sums.dtype)).sum() / max(float(units), 1.0)
        elif reduction == "token_mean":
            value = sums.sum() / max(float(items), 1.0)
        else:
            value = sums.sum()
        loss = term.weight * value if loss is None else loss + term.weight * value
    return loss


def term_totals(terms: Mapping[str, LossTerm]) -> dict[str, tuple[float, float]]:
    """(units, items) of each term of one micro-batch: its totals when the micro-batch is the whole batch."""
    return {name: (float(len(t.counts)), float(t.counts.sum())) for name, t in terms.items()}


def reference_objectives() -> tuple[str, ...]:
    """The objectives whose loss compares the policy with πref (their batches carry ``REFERENCE_COLUMN``)."""
    return tuple(name for name, cls in OBJECTIVES.items() if cls.needs_reference())


def paper_objectives(paper: str) -> tuple[str, ...]:
    """The objectives of one paper's method, the paper's own (its label is the paper's name) last."""
    names = [name for name, cls in OBJECTIVES.items() if cls.paper == paper]
    return tuple(sorted(names, key=lambda n: (OBJECTIVES[n].label == paper, n)))


def objective_label(name: str) -> str:
    return lookup(OBJECTIVES, "objective", name).label


def build_objective(name: str, params: dict[str, Any] | None = None) -> "Objective":
    return lookup(OBJECTIVES, "objective", name)(**(params or {}))


class Objective(abc.ABC):
    """Base class. Subclasses implement ``terms`` and ``counts``; the trainer reduces the terms over the global batch
    (``training.loss_reduction``)."""

    name: ClassVar[str]
    #: extra per-example columns the batch must carry (joined by id from Parquet tables)
    columns: ClassVar[tuple[str, ...]] = ()
    #: the reduction ``loss`` applies within one micro-batch (the objective's own definition of its batch loss)
    batch_reduction: ClassVar[str] = "token_mean"
    #: the paper whose method it is (its report and cost row, e.g. "MinorSFT"); None: the SFT baseline
    paper: ClassVar[str | None] = None
    #: how reports name the method
    label: ClassVar[str]
    #: whether it combines pairs of examples within each per-device batch (SFTMix's Mixup): ``batch_size`` must be even
    #: and at least 2, and its batches are laid out by its own sampler (their real-token share: ``gpu_cost.yaml``'s
    #: ``batch_efficiency.pairs``)
    pairs_examples: ClassVar[bool] = False

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The constructor's parameters with their defaults (the method's default settings)."""
        return dict(constructor_parameters(cls.__init__))

    @staticmethod
    def derived_columns(table: "pd.DataFrame") -> dict[str, "pd.Series"]:
        """Columns of ``columns`` it computes from a per-example table it is given (keyed by the table's ``id``), where
        the table holds them under another form; none by default."""
        return {}

    @classmethod
    def needs_reference(cls) -> bool:
        """Whether its batches carry log πref (so the workflow scores the reference first)."""
        return REFERENCE_COLUMN in cls.columns

    def __init__(self, **params: Any) -> None:
        if params:
            raise ValueError(f"objective {self.name!r} takes no parameters, got {sorted(params)}")

    @abc.abstractmethod
    def terms(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[dict[str, LossTerm], dict[str, float]]:
        """The loss terms of this micro-batch, unreduced, and metrics to log (plain floats)."""

    @abc.abstractmethod
    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
        """(units, items) of each loss term of ``batch``, from the batch alone (no forward pass): the trainer adds
        them up over the global batch before the step."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss of this micro-batch alone (``batch_reduction``) and metrics to log."""
        terms, metrics = self.terms(model, batch)
        return reduce_terms(terms, self.batch_reduction, term_totals(terms)), metrics

    def train_sampler(self, dataset, batch_size: int, seed: int, lengths: list[int] | None = None):
        """A ``torch.utils.data.Sampler`` over ``dataset`` if the objective needs a special batch layout, else None.

        ``lengths`` (tokens per example) asks for batches of similar lengths, as far as the layout allows."""
        return None


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's inputs: padded batches carry an attention mask, packed ones (``collate_packed``) position ids.

    Packed: no cache, because transformers only derives the per-example mask from restarting position ids when
    there is neither an attention mask nor a key-value cache (a cache would let attention cross examples).
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
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


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor,
                   seq_idx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of response-token log-probabilities per example, log π(y|x), and the response lengths |y|.

    For a packed batch (``collate_packed``) pass its ``seq_idx``: the sums are then taken per example, (B,).
    """
    logps, mask = token_logps(logits, labels)
    if seq_idx is None:
        return logps.sum(-1), mask.sum(-1)
    owner = seq_idx[:, 1:].reshape(-1)  # shifted label t+1 belongs to the example of token t+1
    n = int(seq_idx.max()) + 1
    sums = logps.new_zeros(n).index_add(0, owner, logps.reshape(-1))
    return sums, torch.bincount(owner[mask.reshape(-1)], minlength=n)


def example_counts(batch: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(examples, response tokens) of a padded or packed batch."""
    return len(batch["n_tokens"]), int(batch["n_tokens"].sum())


def batch_sequence_logps(logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``sequence_logps`` of a padded or packed batch."""
    return sequence_logps(logits, batch["labels"], batch.get("seq_idx"))


def unpack(values: torch.Tensor, batch: dict[str, torch.Tensor], fill=0) -> torch.Tensor:
    """A packed batch's (1, N, ...) per-token tensor laid out as the padded (B, T, ...) one (right padding ``fill``);
    a padded batch's tensor is returned as it is. Differentiable: gradients flow back to the packed positions."""
    if "seq_idx" not in batch:
        return values
    rows, positions = batch["seq_idx"][0], batch["position_ids"][0]
    out = values.new_full((int(rows.max()) + 1, int(positions.max()) + 1, *values.shape[2:]), fill)
    return out.index_put((rows, positions), values[0])
