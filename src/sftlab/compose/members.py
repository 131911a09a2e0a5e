"""The member runs of a composed recipe: their names, which recipe's directory holds them, their training
settings, and the training log the merged run shows.

``disperse_merge`` has K members ``shards/shard-{k}``, each trained on shard k of the recipe's selection with
the recipe's own training settings (seed included: the shards differ by their data only, and LoRA members start
from one shared adapter initialisation). With ``init: different`` member k draws its LoRA initialisation with its
own seed, ``init_seed`` = training.seed + 1 + k (data order and dropout keep training.seed). ``seed_soup`` has
one member ``seeds/seed-{s}`` per seed, each trained on the whole selection with ``training.seed = s`` (the
members differ by their seed only).

Recipes that differ only in how the members are merged (a merge-method ablation) share their member runs:
the members live under the directory of the first such recipe by name, so an ablation over five merge methods
trains the K sub-models once, as the paper does.
"""

from __future__ import annotations

import copy
import json
from typing import ClassVar, Mapping, Sequence

import pandas as pd

from sftlab.registry import lookup, registrar

COMPOSITIONS: dict[str, type["Composition"]] = {}

register_composition = registrar(COMPOSITIONS, "composition")


class Composition:
    """How a recipe's final weights come about, registered under its config name (``composition.name``)."""

    name: ClassVar[str]
    #: whether its members train on shards of the recipe's selection (written by rule disperse)
    shards: ClassVar[bool] = False

    def members(self, composition: Mapping) -> list[str]:
        """The member runs' names, which are also their directories under ``runs/{recipe}/``."""
        raise ValueError(f"composition {composition['name']!r} has no member runs")

    def member_training(self, training: dict, composition: Mapping, member: str) -> dict:
        """A member run's training settings, from the recipe's (a copy the method may change)."""
        return training


@register_composition("single")
class Single(Composition):
    """One run: the trained model is the recipe's model."""


@register_composition("disperse_merge")
class DisperseMerge(Composition):
    shards = True

    def members(self, composition):
        return [f"shards/shard-{k}" for k in range(composition["k"])]

    def member_training(self, training, composition, member):
        if composition.get("init", "same") == "different":
            training["init_seed"] = training["seed"] + 1 + int(member.removeprefix("shards/shard-"))
        return training


@register_composition("seed_soup")
class SeedSoup(Composition):
    def members(self, composition):
        return [f"seeds/seed-{s}" for s in composition["seeds"]]

    def member_training(self, training, composition, member):
        training["seed"] = int(member.removeprefix("seeds/seed-"))
        return training


def composition_type(name: str) -> Composition:
    return lookup(COMPOSITIONS, "composition", name)()


#: the compositions that merge member runs (every one but ``single``)
COMPOSED = tuple(name for name, cls in COMPOSITIONS.items() if cls.members is not Composition.members)


def member_names(composition: Mapping) -> list[str]:
    """The member runs' names, which are also their directories under ``runs/{recipe}/``."""
    return composition_type(composition["name"]).members(composition)


def _member_key(recipe: Mapping) -> str:
    """Everything that decides a recipe's member runs: all of it but the merge settings and the description."""
    composition = {k: v for k, v in recipe["composition"].items() if k != "merge"}
    kept = {k: v for k, v in recipe.items() if k not in ("composition", "description")}
    return json.dumps({**kept, "composition": composition}, sort_keys=True)


def member_owner(recipes: Mapping[str, Mapping], name: str) -> str:
    """The recipe whose directory holds ``name``'s member runs: the first by name with the same member runs."""
    key = _member_key(recipes[name])
    return min(r for r, recipe in recipes.items()
               if recipe["composition"]["name"] in COMPOSED and _member_key(recipe) == key)


def member_training(recipe: Mapping, member: str) -> dict:
    """The training settings of one member run: the recipe's, as its composition sets them for this member."""
    composition = recipe["composition"]
    if member not in member_names(composition):
        raise ValueError(f"{member!r} is not a member run of composition {composition}")
    return composition_type(composition["name"]).member_training(copy.deepcopy(dict(recipe["training"])),
                                                                composition, member)


def mean_train_log(logs: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The merged run's training log: each step's mean over the members that logged it, column by column.

    The merged model has no training of its own; the report's loss figure draws one line per run, so a
    composed run shows its members' mean curve. ``members`` counts the member logs that have the step
    (K shards of unequal size end at different steps). The members' own logs stay beside their models.
    """
    if not logs:
        raise ValueError("no member training logs to combine")
    for i, log in enumerate(logs):
        if "step" not in log.columns:
            raise ValueError(f"member training log {i} has no 'step' column")
    stacked = pd.concat(logs, ignore_index=True)
    grouped = stacked.groupby("step", sort=True)
    mean = grouped.mean(numeric_only=True)
    mean.insert(0, "members", grouped.size())
    return mean.reset_index()
