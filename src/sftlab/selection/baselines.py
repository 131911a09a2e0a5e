"""The targeted-selection baselines of the LESS table and RDS+: ``bm25``, ``dsir``, ``rds``, ``rds_plus`` (registered
in the LESS table's order, which the selection report's rows follow).

Each reads a score table the workflow computes against the selection's validation set (``lexical`` for BM25 and
DSIR, on the CPU; ``representations`` for RDS and RDS+, a forward pass of a model on the GPU):
``id, score, score_{subtask}...`` (bm25, dsir: ``score`` is the log importance weight, rds) or
``id, sim_0..sim_{M-1}`` (rds_plus: the cosine with each validation item, in validation order).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .base import register_selector
from .influence import ValidationScoreSelector, aggregate_subtasks
from .lexical import gumbel_top_k_order
from .representations import ordered_columns, round_robin_order


def score_table(ids: Sequence[str], scores: np.ndarray, subtasks: Sequence[str]) -> pd.DataFrame:
    """``id, score, score_{subtask}...`` of an (N, M) score matrix: LESS's aggregation (mean within each subtask,
    max over subtasks); rows whose scores are all NaN stay NaN."""
    from sftlab.lazy import torch

    total, per_subtask = aggregate_subtasks(torch.as_tensor(np.asarray(scores, dtype=np.float64)), list(subtasks))
    frame = pd.DataFrame({"id": [str(i) for i in ids], "score": total.numpy()})
    for name, values in per_subtask.items():
        frame[f"score_{name}"] = values.numpy()
    return frame


class LexicalSelector(ValidationScoreSelector):
    """Ranks by scores of the pool's text against the validation text, computed on CPUs (rule lexical_scores)."""

    features = "lexical"
    cost_stages = {"lexical_scores": "selection"}


class HiddenStateSelector(ValidationScoreSelector):
    """Ranks by a model's hidden states: of the pool (shared by every validation set) and of the validation items,
    forward passes on a GPU (rules pool_hidden_states, representation_scores)."""

    features = "representations"
    model_features = True
    cost_stages = {"pool_hidden_states": "hidden-state features", "representation_scores": "hidden-state features"}


@register_selector("bm25")
class Bm25(LexicalSelector):
    """BM25 of each example against the validation items' text (LESS's baseline): top mean score."""

    tables = ("bm25",)
    label = "BM25"


@register_selector("dsir")
class Dsir(LexicalSelector):
    """DSIR: importance resampling (Gumbel top-k, seeded) by hashed n-gram weights toward the validation text."""

    tables = ("dsir",)
    label = "DSIR"
    id_formats = {"validation": "{value}", "shots": "{value}shot", "seed": "s{value}", "min_words": "min{value}"}
    id_omitted = {"min_words": 0}

    def __init__(self, validation: str | None = None, shots: int | None = None, seed: int = 0,
                 min_words: int = 0) -> None:
        super().__init__(validation, shots)
        self.seed, self.min_words = seed, min_words

    def rank(self, ids, tables):
        score = self.scores(ids, tables)
        return [ids[i] for i in gumbel_top_k_order([score[i] for i in ids], self.seed)]


@register_selector("rds")
class Rds(HiddenStateSelector):
    """RDS (LESS's baseline): top mean cosine of last-token final-layer hidden states to the validation items."""

    pooling = "last"
    tables = ("rds",)
    label = "RDS"


@register_selector("rds_plus")
class RdsPlus(HiddenStateSelector):
    """RDS+ (Ivison et al. 2025): round robin over the validation items by cosine of weighted-mean hidden states."""

    pooling = "weighted_mean"
    tables = ("rds_plus",)
    label = "RDS+"

    def rank(self, ids, tables):
        (table_name,) = self.tables
        if table_name not in tables:
            raise KeyError(f"selector {self.name!r} needs table {table_name!r}; got {sorted(tables)}")
        table = tables[table_name].astype({"id": str}).set_index("id")
        columns = ordered_columns(table.columns)
        if not columns:
            raise KeyError(f"table {table_name!r} has no sim_<j> columns (has {list(table.columns)})")
        missing = [i for i in ids if i not in table.index]
        if missing:
            raise KeyError(f"table {table_name!r} has no similarities for {len(missing)} pool ids, e.g. {missing[:3]}")
        order = round_robin_order(table.loc[list(ids), columns].to_numpy(dtype=np.float64))
        return [ids[i] for i in order]
