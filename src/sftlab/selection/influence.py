"""LESS/ROSE influence of training examples on a validation set, and the ``less`` and ``rose`` selectors.

Inf(z, v) = Σ_i w_i · cos(Γ(z, θ_i), ∇ℓ_val(v, θ_i)) over warmup checkpoints i (w_i = the epoch's mean lr,
normalised to sum 1); then the mean over the validation items v of each subtask, and the max over subtasks.

The influence table (Parquet) has columns ``id``, ``influence`` and one ``influence_{subtask}`` per
subtask, one row per pool example in pool order; examples that had no gradient (no response token left
after truncation) have NaN scores. The selection rule passes it to ``less`` as table ``influence_less``
and to ``rose`` as ``influence_rose``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Sequence

import pandas as pd
from sftlab.lazy import torch

from .base import Selector, register_selector


def influence_matrix(train: Sequence[torch.Tensor], val: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """(N, M) Σ_i w_i · T_i V_iᵀ; the rows of T_i and V_i are unit vectors, so each product is a cosine."""
    if not len(train) == len(val) == len(weights) or not train:
        raise ValueError(f"need one train and one validation matrix per checkpoint weight, got "
                         f"{len(train)}, {len(val)}, {len(weights)}")
    total = torch.zeros(train[0].shape[0], val[0].shape[0])
    for t, v, w in zip(train, val, weights):
        total += w * (t.float() @ v.float().T)
    return total


def aggregate_subtasks(scores: torch.Tensor, subtasks: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(max over subtasks of the per-subtask mean, {subtask: per-subtask mean}) of an (N, M) score matrix."""
    if scores.shape[1] != len(subtasks):
        raise ValueError(f"{scores.shape[1]} validation columns but {len(subtasks)} subtask labels")
    names = sorted(set(subtasks))
    per_subtask = {}
    for name in names:
        columns = torch.tensor([s == name for s in subtasks])
        per_subtask[name] = scores[:, columns].mean(dim=1)
    return torch.stack([per_subtask[n] for n in names], dim=1).max(dim=1).values, per_subtask


def influence_table(train_paths: Sequence[str | Path], val_paths: Sequence[str | Path],
                    checkpoints: Sequence[str | Path]) -> pd.DataFrame:
    """The influence table from per-checkpoint feature files (gathered training, validation) and warmup checkpoints.

    The three lists are aligned by checkpoint. Training files must list the same ids in the same order,
    validation files the same items; all must share one projection (name, dim, seed) and adapter size.
    """
    # imported here, not with the module: the workflow imports the selector registry to plan, and these two pull in
    # transformers (seconds of every `snakemake -n`)
    from .gradients import check_comparable, load_features
    from .warmup import checkpoint_weights

    weights = checkpoint_weights(list(checkpoints))
    train = [load_features(p) for p in train_paths]
    val = [load_features(p) for p in val_paths]
    for records, paths, kinds in ((train, train_paths, ("train",)), (val, val_paths, ("ntp", "dpo"))):
        for record, path in zip(records, paths):
            if record["kind"] not in kinds:
                raise ValueError(f"{path}: features of kind {record['kind']!r}, expected one of {kinds}")
            for key in ("ids", "skipped") if kinds == ("train",) else ("ids", "subtasks"):
                if record[key] != records[0][key]:
                    raise ValueError(f"{path}: {key} differ from {paths[0]}")
    check_comparable(train + val, [*train_paths, *val_paths])
    total, per_subtask = aggregate_subtasks(
        influence_matrix([r["features"] for r in train], [r["features"] for r in val], weights), val[0]["subtasks"]
    )
    frame = pd.DataFrame({"id": train[0]["ids"], "influence": total.double().numpy()})
    for name, values in per_subtask.items():
        frame[f"influence_{name}"] = values.double().numpy()
    if train[0]["skipped"]:
        frame = pd.concat([frame, pd.DataFrame({"id": train[0]["skipped"]})], ignore_index=True)
    return frame


class ValidationScoreSelector(Selector):
    """Rank by a score column of the selector's table, highest first; NaN last; ties in pool order.

    The settings (validation set, shots, ...) define which table the workflow computes and hands over; the
    ranking itself reads only the table, so they are kept for the record — and name its path.
    """

    #: it scores the pool against a validation set (the config's ``validation`` and ``shots``)
    targeted = True
    #: LESS / ROSE and the baselines of their tables
    paper = "LESS / ROSE"
    #: the table's column ranked by
    column: ClassVar[str] = "score"
    id_formats = {"validation": "{value}", "shots": "{value}shot"}

    def __init__(self, validation: str | None = None, shots: int | None = None) -> None:
        self.validation, self.shots = validation, shots

    def scores(self, ids: list[str], tables: dict[str, pd.DataFrame]) -> dict[str, float]:
        """id → the score column of the selector's table, for every pool id."""
        (table_name,) = self.tables
        if table_name not in tables:
            raise KeyError(f"selector {self.name!r} needs table {table_name!r}; got {sorted(tables)}")
        table = tables[table_name]
        if "id" not in table or self.column not in table:
            raise KeyError(f"table {table_name!r} lacks column 'id' or {self.column!r} (has {list(table.columns)})")
        score = dict(zip(table["id"].astype(str), table[self.column].astype(float)))
        missing = [i for i in ids if i not in score]
        if missing:
            raise KeyError(f"table {table_name!r} has no {self.column} for {len(missing)} pool ids, e.g. {missing[:3]}")
        return score

    def rank(self, ids, tables):
        score = self.scores(ids, tables)
        position = {i: k for k, i in enumerate(ids)}
        return sorted(ids, key=lambda i: (math.isnan(score[i]), -score[i] if not math.isnan(score[i]) else 0.0,
                                          position[i]))


class InfluenceSelector(ValidationScoreSelector):
    """Rank by the ``influence`` column of the LESS / ROSE influence table (``influence_table``)."""

    influence = True
    model_features = True
    validation_loss = "ntp"
    column = "influence"
    cost_stages = {"warmup": "warmup", "grad_features": "gradient features",
                   "gather_grad_features": "gradient features", "validation_grad_features": "gradient features",
                   "influence": "selection"}
    id_formats = {"validation": "{value}", "shots": "{value}shot", "beta": "beta{value}"}
    id_omitted = {"beta": 0.1}  # ROSE's default β: its paths predate the setting

    def __init__(self, validation: str | None = None, shots: int | None = None, beta: float | None = None) -> None:
        super().__init__(validation, shots)
        self.beta = beta


@register_selector("less")
class Less(InfluenceSelector):
    """LESS: influence on validation SFT examples (NTP loss gradients)."""

    tables = ("influence_less",)
    label = "LESS"


@register_selector("rose")
class Rose(InfluenceSelector):
    """ROSE: influence on validation preference pairs (DPO loss gradients)."""

    tables = ("influence_rose",)
    validation_loss = "dpo"
    label = "ROSE"
