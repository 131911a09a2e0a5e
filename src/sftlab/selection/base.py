"""The selection axis: which training examples a recipe uses, registered under config names.

A selector gets the pool's ids (in file order) and the per-example tables it declares in ``tables``
(read from Parquet by the selection rule, keyed by id), and returns ids ordered by selection score,
best first. The selection rule keeps the first ``fraction`` of them and writes ``{fraction}.ids``.
"""

from __future__ import annotations

import abc

import math
import random
from typing import Any, ClassVar

import pandas as pd

from sftlab.registry import lookup, registrar

SELECTORS: dict[str, type["Selector"]] = {}


register_selector = registrar(SELECTORS, "selector")


def build_selector(name: str, params: dict[str, Any] | None = None) -> "Selector":
    return lookup(SELECTORS, "selector", name)(**(params or {}))


def take_fraction(ranked: list[str], fraction: float) -> list[str]:
    """The first ceil(fraction · n) ids (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return ranked[: max(1, math.ceil(fraction * len(ranked)))]


class Selector(abc.ABC):
    name: ClassVar[str]
    #: names of per-example tables (Parquet keyed by id) the selector reads, e.g. ("confidence",)
    tables: ClassVar[tuple[str, ...]] = ()

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

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def rank(self, ids, tables):
        order = list(ids)
        random.Random(self.seed).shuffle(order)
        return order
