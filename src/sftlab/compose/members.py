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
from typing import Mapping, Sequence

import pandas as pd

COMPOSED = ("disperse_merge", "seed_soup")


def member_names(composition: Mapping) -> list[str]:
    """The member runs' names, which are also their directories under ``runs/{recipe}/``."""
    if composition["name"] == "disperse_merge":
        return [f"shards/shard-{k}" for k in range(composition["k"])]
    if composition["name"] == "seed_soup":
        return [f"seeds/seed-{s}" for s in composition["seeds"]]
    raise ValueError(f"composition {composition['name']!r} has no member runs")


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
    """The training settings of one member run: the recipe's, with a seed-soup member's own seed."""
    if member not in member_names(recipe["composition"]):
        raise ValueError(f"{member!r} is not a member run of composition {recipe['composition']}")
    training = copy.deepcopy(dict(recipe["training"]))
    if member.startswith("seeds/seed-"):
        training["seed"] = int(member.removeprefix("seeds/seed-"))
    if member.startswith("shards/shard-") and recipe["composition"].get("init", "same") == "different":
        training["init_seed"] = training["seed"] + 1 + int(member.removeprefix("shards/shard-"))
    return training


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
