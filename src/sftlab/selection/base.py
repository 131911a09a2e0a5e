"""The selection axis: which training examples a recipe uses, registered under config names.

A selector gets the pool's ids (in file order) and the per-example tables it declares in ``tables``
(read from Parquet by the selection rule, keyed by id), and returns ids ordered by selection score,
best first. The selection rule keeps the first ``fraction`` of them and writes ``{fraction}.ids``.

``fraction`` is a share of the *pool* for every selector: 0.05 keeps 5% of the pool's examples whether the
selector ranks the whole pool (random, less, rose) or only part of it (confident / unconfident rank their half,
so their largest fraction, ``max_fraction``, is 0.5: the whole half).
"""

from __future__ import annotations

import abc
import math
import random
from typing import Any, ClassVar

import pandas as pd

from sftlab.registry import constructor_parameters, lookup, registrar

SELECTORS: dict[str, type["Selector"]] = {}


register_selector = registrar(SELECTORS, "selector")


def selectors_prepared_by(rule: str) -> tuple[str, ...]:
    """The selectors whose ranking the workflow rule ``rule`` prepares (their ``cost_stages``), in registration
    order: ``lexical_scores`` → bm25, dsir."""
    return tuple(name for name, cls in SELECTORS.items() if rule in cls.cost_stages)


def build_selector(name: str, params: dict[str, Any] | None = None) -> "Selector":
    return lookup(SELECTORS, "selector", name)(**(params or {}))


def take_fraction(ranked: list[str], fraction: float, pool_size: int, max_fraction: float = 1.0) -> list[str]:
    """The first ceil(fraction · pool_size) ids of ``ranked`` (at least one).

    A selector that ranks only part of the pool declares the largest share it can deliver (``max_fraction``);
    the count is capped at what it ranked (the unconfident half of an odd pool is one short of ceil(n/2)).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction > max_fraction:
        raise ValueError(f"fraction {fraction} is more than the selector delivers ({max_fraction} of the pool)")
    return ranked[: min(len(ranked), max(1, math.ceil(fraction * pool_size)))]


class Selector(abc.ABC):
    name: ClassVar[str]
    #: names of per-example tables (Parquet keyed by id) the selector reads, e.g. ("confidence",)
    tables: ClassVar[tuple[str, ...]] = ()
    #: the largest share of the pool the selector ranks (the config's fraction may not exceed it)
    max_fraction: ClassVar[float] = 1.0
    #: whether it ranks by an influence table that the LESS / ROSE rules compute (influence.smk)
    influence: ClassVar[bool] = False
    #: whether its ranking comes from a model's features (gradients, hidden states, the reference run's perplexities):
    #: such a selection is computed with ``selection.model`` (default: the trained model), under that model's results
    model_features: ClassVar[bool] = False
    #: whether it scores the pool against a validation set (takes the config's ``validation`` and ``shots``)
    targeted: ClassVar[bool] = False
    #: the loss whose validation gradients an influence selector scores against: "ntp" (SFT examples) or "dpo"
    #: (preference pairs: two sequences an item, the temperature ``beta``); None for the others
    validation_loss: ClassVar[str | None] = None
    #: the paper whose method it serves (its cost row, its mechanism table's report category); None: none of them
    paper: ClassVar[str | None] = None
    #: what a baseline's score table is computed from, which names its score rule (baselines.smk): "lexical" (the
    #: texts' words, on the CPU) or "representations" (a model's hidden states); None for the others
    features: ClassVar[str | None] = None
    #: how a representations baseline pools the hidden states (sftlab.selection.representations.POOLINGS)
    pooling: ClassVar[str | None] = None
    #: how reports name it (the paper's name, e.g. "LESS"); None: its config name
    label: ClassVar[str | None] = None
    #: the rules that prepare its ranking, each with the stage of the selection cost table (the LESS paper's) its jobs
    #: count under: a warmup, the features a model computes ("gradient features", "hidden-state features") or the
    #: scores themselves ("selection")
    cost_stages: ClassVar[dict[str, str]] = {}
    #: how a constructor parameter reads in the selection's path id (default ``<key><value>``)
    id_formats: ClassVar[dict[str, str]] = {}
    #: parameter values left out of the path id (so that paths written before the parameter existed stay valid)
    id_omitted: ClassVar[dict[str, Any]] = {}

    @classmethod
    def parameters(cls) -> dict[str, Any]:
        """The constructor's parameters with their defaults: every setting that can change the selection."""
        return dict(constructor_parameters(cls.__init__))

    def __init__(self, **params: Any) -> None:
        if params:
            raise ValueError(f"selector {self.name!r} takes no parameters, got {sorted(params)}")

    @abc.abstractmethod
    def rank(self, ids: list[str], tables: dict[str, pd.DataFrame]) -> list[str]:
        """The pool's ids ordered by selection score, best first."""


@register_selector("full")
class Full(Selector):
    """Every example, in pool order."""

    def rank(self, ids, tables):
        return list(ids)


@register_selector("random")
class Random(Selector):
    """A seeded random order of the pool (the fraction keeps a random subset)."""

    id_formats = {"seed": "s{value}"}

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, ids, tables):
        order = list(ids)
        random.Random(self.seed).shuffle(order)
        return order
