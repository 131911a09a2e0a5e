"""Hidden-state representations of a model, and the RDS / RDS+ selections over them.

RDS as in LESS (princeton-nlp/LESS, ``collect_reps``): an example's representation is the final layer's hidden
state at its last token; scores are cosines with the validation items, aggregated as LESS's influence is
(``matching.py``: the mean over each subtask's items, the max over subtasks).

RDS+ as in Ivison et al. 2025 (hamishivi/automated-instruction-selection, ``compute_influence_cosinesim.py``
with ``--pooling weighted_mean``, the default, and neither ``--prompt_only`` nor ``--label_only``): the final
layer's hidden states of the whole sequence (prompt and answer) are averaged with position weights
(t + 1) / Σ (t + 1), t = 0..T−1 (SGPT's weighted mean: later tokens, which have seen more, weigh more); scores
are cosines with each validation item; selection (``get_top_influences.py --selection_method max``) goes round
robin over the validation items, each taking its most similar example not yet taken — when its next one was
already taken, that item's turn passes — until k are taken.

Both run the model the rule passes in (by default the trained model's base weights), in the sequence format the
training uses (chat template, truncated to max_length).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sftlab.lazy import torch

POOLINGS = ("last", "weighted_mean")


def pool_hidden_states(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, D) pooled final-layer states of right-padded (B, T, D) ``hidden``: the last real token's (``last``) or
    the mean with weights ∝ position + 1 over the real tokens (``weighted_mean``)."""
    mask = attention_mask.to(hidden.dtype)
    if pooling == "last":
        last = attention_mask.sum(dim=1).long() - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "weighted_mean":
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype)
        weights = positions.unsqueeze(0) * mask
        weights = weights / weights.sum(dim=1, keepdim=True)
        return (hidden * weights.unsqueeze(-1)).sum(dim=1)
    raise ValueError(f"unknown pooling {pooling!r}; known: {POOLINGS}")


def cosine_matrix(train: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """(N, M) cosines between the rows of ``train`` and ``val`` (float32: a 7B model's pool features are
    270k × 4096)."""
    t = torch.nn.functional.normalize(train.float(), dim=1)
    v = torch.nn.functional.normalize(val.float(), dim=1)
    return t @ v.T


def hidden_state_features(model, items: list[dict], pooling: str, pad_token_id: int, max_tokens: int) -> torch.Tensor:
    """(len(items), D) pooled final-layer hidden states (float32, on the CPU) of encoded one-sequence items
    (``gradients.encode_rows``), batched by ``max_tokens`` padded tokens."""
    from .gradients import batch_inputs, token_batches

    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(items)
    for batch in token_batches(items, max_tokens):
        inputs = batch_inputs([items[i] for i in batch], pad_token_id, device)
        ids, mask = inputs["input_ids"][:, 0], inputs["attention_mask"][:, 0]
        with torch.no_grad():  # not a decorator: that would import torch with the module (planning imports it)
            hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        pooled = pool_hidden_states(hidden.float(), mask, pooling).cpu()
        for row, i in enumerate(batch):
            out[i] = pooled[row]
    return torch.stack(out) if items else torch.zeros(0, 0)


def round_robin_order(similarity: np.ndarray) -> np.ndarray:
    """Pool indices in RDS+'s round-robin order over the (N, M) similarity matrix's columns.

    Round r visits the validation items (columns) in order; each offers its r-th most similar example (ties by
    pool index), taken unless an earlier turn took it. Every prefix of k is the reference's selection of k.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    n, m = sim.shape
    if m == 0:
        raise ValueError("round robin needs at least one validation item")
    # per column, pool indices by similarity (highest first; stable, so ties by index); NaN (no features) last
    ranked = np.argsort(-np.nan_to_num(sim, nan=-np.inf), axis=0, kind="stable").astype(np.int64)
    taken = np.zeros(n, dtype=bool)
    order = []
    for r in range(n):
        offers = ranked[r]
        fresh = offers[~taken[offers]]
        if fresh.size:
            _, first = np.unique(fresh, return_index=True)
            chosen = fresh[np.sort(first)]
            taken[chosen] = True
            order.append(chosen)
        if taken.all():
            break
    return np.concatenate(order) if order else np.zeros(0, dtype=np.int64)


def similarity_columns(m: int) -> list[str]:
    """Column names of the per-validation-item similarities in an RDS+ table (validation order)."""
    return [f"sim_{j}" for j in range(m)]


def ordered_columns(columns: Sequence[str]) -> list[str]:
    """The ``sim_{j}`` columns of a table, by j."""
    sims = [c for c in columns if c.startswith("sim_") and c[4:].isdigit()]
    return sorted(sims, key=lambda c: int(c[4:]))
