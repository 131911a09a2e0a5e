"""SFTMix: next-token prediction plus a Mixup regulariser between confident and unconfident examples.

Batch layout (made by ``PairSampler``): a batch of B = 2P examples holds the pairs' first members in rows
0..P-1 and their partners in rows P..2P-1; pair i is (row i, row P+i). With ``pairing: confidence`` the
first half is confident and the second unconfident; with ``pairing: random`` both come from the whole pool.

ℓ = ℓ_NTP(whole batch) + μ·ℓ_mix. For ℓ_mix, each sequence's last-layer hidden states (the LM head's input)
at its response positions (positions whose shifted label is not −100), in order, are truncated to
n = min(N_c, N_u) of the pair, mixed as Z̃ = λ·Z_c + (1−λ)·Z_u with λ ~ Beta(α, α) per pair, and scored as
λ·CE(lm_head(Z̃), y_c) + (1−λ)·CE(lm_head(Z̃), y_u). Each term is reduced over the global batch by
``training.loss_reduction``: token_mean takes ℓ_mix over all mixed positions of all pairs (token-weighted, like
ℓ_NTP), example_mean per pair and then over the pairs, sum adds them all up.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
from sftlab.lazy import torch

from sftlab.data.batching import length_grouped_order

from .base import LossTerm, Objective, chunked_logsumexp, example_counts, model_inputs, register_objective, unpack
from .ntp import nll_term

PAIRINGS = ("confidence", "random")


def output_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """The LM head, looked up through DDP (``.module``) and peft wrappers (they forward the attribute)."""
    while isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head


def forward_with_final_hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """(logits, final hidden states) from one forward pass.

    The hidden states are exactly the LM head's input (after the final norm), captured by a forward
    pre-hook. ``output_hidden_states`` is avoided on purpose: whether its last entry is taken before
    or after the final norm has changed between transformers versions and differs across architectures.
    """
    captured: list[torch.Tensor] = []
    handle = output_embeddings(model).register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    try:
        logits = model(**model_inputs(batch)).logits
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected the LM head to run once per forward pass, it ran {len(captured)} times")
    return logits, captured[0]


def mixup_loss(
    hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module, lam: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """(ℓ_mix over all mixed positions of the batch, number of mixed positions)."""
    term = mixup_term(hidden, labels, lm_head, lam)
    n_positions = int(term.counts.sum())
    return term.sums.sum() / max(n_positions, 1), n_positions


def mixed_positions(n_tokens: torch.Tensor) -> torch.Tensor:
    """Mixed positions of each pair (row i, row P+i): the shorter answer's length."""
    half = len(n_tokens) // 2
    return torch.minimum(n_tokens[:half], n_tokens[half:])


def mixup_term(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module, lam: torch.Tensor) -> LossTerm:
    """ℓ_mix summed per pair over its mixed positions, and their number, for a batch laid out as pairs (row i, row P+i).

    ``hidden`` (2P, T, H) is the LM head's input, ``labels`` (2P, T) the unshifted labels, ``lam`` (P,).
    """
    rows = hidden.shape[0]
    if rows % 2:
        raise ValueError(f"SFTMix needs an even batch (pairs), got {rows} rows")
    half = rows // 2
    targets = labels[:, 1:]
    mask = targets != -100
    n = mixed_positions(mask.sum(-1))
    # k-th response position of each row; keep the first n of the pair, so that both members' kept
    # positions come out of boolean indexing in the same (pair, k) order
    rank = mask.cumsum(-1) - 1
    keep = mask & (rank < torch.cat([n, n]).unsqueeze(-1))
    states = hidden[:, :-1]
    z_c, z_u = states[:half][keep[:half]], states[half:][keep[half:]]
    y_c, y_u = targets[:half][keep[:half]], targets[half:][keep[half:]]
    lam_pos = lam.to(hidden.device).repeat_interleave(n)
    mix = lam_pos.to(hidden.dtype).unsqueeze(-1)
    logits = lm_head(mix * z_c + (1 - mix) * z_u)
    log_norm = chunked_logsumexp(logits)  # once for both targets
    lam_pos = lam_pos.float()
    per_position = -(
        lam_pos * logits.gather(-1, y_c.unsqueeze(-1)).squeeze(-1).float()
        + (1 - lam_pos) * logits.gather(-1, y_u.unsqueeze(-1)).squeeze(-1).float()
        - log_norm
    )
    pair = torch.arange(half, device=per_position.device).repeat_interleave(n)
    return LossTerm(per_position.new_zeros(half).index_add(0, pair, per_position), n, weight=1.0)


def example_tokens(batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each example's real tokens: the same for a padded batch and its packed form."""
    if "seq_idx" in batch:
        ids, owner = batch["input_ids"][0], batch["seq_idx"][0]
        return [ids[owner == row] for row in range(len(batch["n_tokens"]))]
    return [ids[mask.bool()] for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def pair_lambdas(alpha: float, seed: int, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """λ ~ Beta(α, α) for each pair (row i, row P+i), from a generator keyed on (seed, the pair's token ids).

    Keying on the pair rather than on a step counter or the micro-batch keeps λ the same across resumed runs, batch
    layouts, micro-batch sizes and processes without any state. numpy's Generator is used because torch's Beta
    sampler takes no generator.
    """
    rows = example_tokens(batch)
    half = len(rows) // 2
    keys = [zlib.crc32(torch.cat([first, partner]).detach().cpu().numpy().tobytes())
            for first, partner in zip(rows[:half], rows[half:])]
    return torch.tensor([np.random.default_rng([seed, key]).beta(alpha, alpha) for key in keys], dtype=torch.float32)


class PairSampler:
    """Indices laid out as pair batches: each run of ``batch_size`` indices is P first members, then their P partners.

    ``confident`` (one bool per dataset row) pairs the i-th confident with the i-th unconfident example, both
    halves shuffled each epoch; the smaller half is cycled through fresh shuffles so every example of both halves
    is seen each epoch. ``confident=None`` pairs random×random from the whole pool (with an odd pool, one example
    sits out each epoch). The last batch is filled up with pairs from the start of the epoch's order, so every
    batch has exactly ``batch_size`` rows: accelerate's ``BatchSamplerShard`` (HF Trainer) then hands whole
    batches, hence whole pairs, to each process — leave ``num_replicas=1`` there. When each process builds
    its own DataLoader (plain DDP), pass ``num_replicas``/``rank``: process r gets batches r, r+W, ...,
    the batch count padded to a multiple of W with pairs recycled from the start of the epoch's order, so every
    process runs the same number of steps. Call ``set_epoch`` every epoch.
    """

    def __init__(
        self,
        confident: Sequence[bool] | None,
        batch_size: int,
        seed: int = 0,
        n_examples: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        lengths: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"SFTMix needs an even batch size of at least 2 (pairs), got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} out of range for {num_replicas} replicas")
        if confident is None:
            if n_examples is None or n_examples < 2:
                raise ValueError(f"random pairing needs n_examples >= 2, got {n_examples}")
            self.pool = np.arange(n_examples)
            self.halves = None
        else:
            flags = np.asarray(confident, dtype=bool)
            self.halves = (np.flatnonzero(flags), np.flatnonzero(~flags))
            if not (len(self.halves[0]) and len(self.halves[1])):
                raise ValueError(
                    f"confidence pairing needs both halves, got {len(self.halves[0])} confident and "
                    f"{len(self.halves[1])} unconfident examples"
                )
        self.batch_size, self.seed, self.num_replicas, self.rank = batch_size, seed, num_replicas, rank
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _n_pairs(self) -> int:
        if self.halves is None:
            return len(self.pool) // 2
        return max(len(h) for h in self.halves)

    def _n_batches(self) -> int:
        per_replica = math.ceil(math.ceil(self._n_pairs() / (self.batch_size // 2)) / self.num_replicas)
        return per_replica * self.num_replicas

    def __len__(self) -> int:
        return self._n_batches() // self.num_replicas * self.batch_size

    def pairs(self, epoch: int) -> np.ndarray:
        """(n_pairs, 2) array of (first member, partner) dataset indices for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.halves is None:
            order = rng.permutation(self.pool)
            n = len(order) // 2
            return np.stack([order[:n], order[n : 2 * n]], axis=1)
        n = self._n_pairs()
        columns = []
        for half in self.halves:
            cycles = [rng.permutation(half) for _ in range(math.ceil(n / len(half)))]
            columns.append(np.concatenate(cycles)[:n])
        return np.stack(columns, axis=1)

    def __iter__(self):
        pairs = self.pairs(self.epoch)
        per_batch = self.batch_size // 2
        n_batches = self._n_batches()
        # pad with whole pairs recycled from the start of the epoch's order
        pairs = np.resize(pairs, (n_batches * per_batch, 2))
        if self.lengths is not None:
            # whole pairs move, by the length of their longer member
            rng = np.random.default_rng([self.seed, self.epoch, 1])
            pairs = pairs[length_grouped_order(self.lengths[pairs].max(axis=1), per_batch, rng)]
        for b in range(self.rank, n_batches, self.num_replicas):
            chunk = pairs[b * per_batch : (b + 1) * per_batch]
            yield from chunk[:, 0].tolist()
            yield from chunk[:, 1].tolist()


def dataset_column(dataset, name: str) -> list:
    """One column of a training dataset: an HF ``datasets.Dataset`` or any sequence of dict rows."""
    if hasattr(dataset, "column_names"):
        if name not in dataset.column_names:
            raise KeyError(f"training dataset has no column {name!r}; columns: {dataset.column_names}")
        return list(dataset[name])
    try:
        return [dataset[i][name] for i in range(len(dataset))]
    except KeyError:
        raise KeyError(f"training dataset rows have no {name!r} value (join confidence.parquet by id)") from None


@register_objective("sftmix")
class SFTMix(Objective):
    columns = ("confident",)
    paper = "SFTMix"
    label = "SFTMix"
    pairs_examples = True

    @staticmethod
    def derived_columns(table):
        """``confident`` (1.0 / 0.0) from the confidence table's ``split`` (confidence.parquet)."""
        if "split" not in table.columns:
            return {}
        return {"confident": (table["split"] == "confident").astype(float)}

    def __init__(
        self,
        mu: float = 0.2,
        alpha: float = 0.5,
        mixup_detach: bool = False,
        pairing: str = "confidence",
        seed: int = 0,
    ) -> None:
        if pairing not in PAIRINGS:
            raise ValueError(f"objective 'sftmix': pairing must be one of {PAIRINGS}, got {pairing!r}")
        if not alpha > 0:
            raise ValueError(f"objective 'sftmix': alpha must be positive, got {alpha}")
        if mu < 0:
            raise ValueError(f"objective 'sftmix': mu must be non-negative, got {mu}")
        self.mu, self.alpha, self.mixup_detach, self.pairing, self.seed = mu, alpha, mixup_detach, pairing, seed
        if pairing == "random":
            # random×random pairs need no confidence table
            self.columns = ()

    def train_sampler(self, dataset, batch_size, seed, lengths=None):
        if self.pairing == "random":
            return PairSampler(None, batch_size, seed, n_examples=len(dataset), lengths=lengths)
        values = np.asarray(dataset_column(dataset, "confident"), dtype=float)
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError("the 'confident' column must hold 1.0 (confident) or 0.0 (unconfident)")
        return PairSampler(values == 1.0, batch_size, seed, lengths=lengths)

    def counts(self, batch):
        return {"nll": example_counts(batch), "mixup": (len(batch["n_tokens"]) // 2,
                                                        int(mixed_positions(batch["n_tokens"]).sum()))}

    def terms(self, model, batch):
        rows = len(batch["n_tokens"])
        if rows % 2:
            raise ValueError(f"SFTMix needs an even batch (pairs), got {rows} rows; use the objective's train_sampler")
        half = rows // 2
        if self.pairing == "confidence":
            flags = batch["confident"]
            if not (bool((flags[:half] == 1).all()) and bool((flags[half:] == 0).all())):
                raise ValueError(
                    "SFTMix batch is not laid out as confident rows then unconfident rows; "
                    "use the objective's train_sampler (PairSampler)"
                )
        logits, hidden = forward_with_final_hidden(model, batch)
        nll = nll_term(logits, batch)
        lam = pair_lambdas(self.alpha, self.seed, batch)
        states = hidden.detach() if self.mixup_detach else hidden
        # pairs are rows: a packed batch's hidden states are laid out per example first
        mix = mixup_term(unpack(states, batch), unpack(batch["labels"], batch, fill=-100), output_embeddings(model), lam)
        mix.weight = self.mu
        n_positions = int(mix.counts.sum())
        metrics = {"ntp_loss": float(nll.sums.detach().sum() / nll.counts.sum().clamp(min=1)),
                   "mixup_loss": float(mix.sums.detach().sum()) / max(n_positions, 1),
                   "mixup_positions": float(n_positions)}
        return {"nll": nll, "mixup": mix}, metrics
