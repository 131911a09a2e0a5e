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

from sftlab.objectives.base import BASELINE_OBJECTIVE
from sftlab.registry import lookup, registrar

COMPOSITIONS: dict[str, type["Composition"]] = {}

register_composition = registrar(COMPOSITIONS, "composition")


class Composition:
    """How a recipe's final weights come about, registered under its config name (``composition.name``)."""

    name: ClassVar[str]
    #: whether its members train on shards of the recipe's selection (written by rule disperse)
    shards: ClassVar[bool] = False
    #: the regular expression every member name matches (the member rule's wildcard constraint); None: no members
    member_pattern: ClassVar[str | None] = None
    #: its runs' role in the DTM report (``sftlab.report.dtm.ROLES``)
    role: ClassVar[str] = "sft"
    #: the paper whose method it is (its cost row, its mechanism table's report category); None: the SFT baseline
    paper: ClassVar[str | None] = None

    def members(self, composition: Mapping) -> list[str]:
        """The member runs' names, which are also their directories under ``runs/{recipe}/``."""
        raise ValueError(f"composition {composition['name']!r} has no member runs")

    def describe(self, recipe: Mapping, merge_label: str) -> dict:
        """A run composed this way as the DTM report shows it: its label and the settings the report's rows show
        (``k``, ``split``, ``seeds``, ``init``; those left out are None). ``merge_label``: its merge, readable."""
        objective = recipe["objective"]["name"]
        return {"label": "SFT" if objective == BASELINE_OBJECTIVE else f"single run ({objective})"}

    def member_training(self, training: dict, composition: Mapping, member: str) -> dict:
        """A member run's training settings, from the recipe's (a copy the method may change)."""
        return training

    def merge_groups(self, composition: Mapping) -> list[list[str]] | None:
        """Members averaged together before the merge, one group per input of the merge, in member order; None:
        the members are merged directly."""
        return None

    def member_shard(self, member: str) -> str | None:
        """The shard a member trains on (``shards/ids/{shard}.ids``, written by rule disperse); None: the whole
        selection."""
        return None


@register_composition("single")
class Single(Composition):
    """One run: the trained model is the recipe's model."""


@register_composition("disperse_merge")
class DisperseMerge(Composition):
    shards = True
    member_pattern = r"shards/shard-[0-9]+"
    paper = "Disperse-Then-Merge"
    role = "dtm"

    def members(self, composition):
        return [f"shards/shard-{k}" for k in range(composition["k"])]

    def member_training(self, training, composition, member):
        if composition.get("init", "same") == "different":
            training["init_seed"] = training["seed"] + 1 + int(member.removeprefix("shards/shard-"))
        return training

    def member_shard(self, member):
        return member.removeprefix("shards/")

    def describe(self, recipe, merge_label):
        comp, objective = recipe["composition"], recipe["objective"]["name"]
        members = "" if objective == BASELINE_OBJECTIVE else f", {objective} members"
        init = comp.get("init", "same")
        return {"k": comp["k"], "split": comp["split"], "init": init,
                "label": f"DTM (K={comp['k']}, {comp['split']}, {merge_label}{members}"
                         f"{', different init' if init == 'different' else ''})"}


@register_composition("seed_soup")
class SeedSoup(Composition):
    member_pattern = r"seeds/seed-[0-9]+"
    paper = "Disperse-Then-Merge"
    role = "seed_soup"

    def describe(self, recipe, merge_label):
        seeds = len(recipe["composition"]["seeds"])
        return {"seeds": seeds, "label": f"seed soup ({seeds} seeds, {merge_label})"}

    def members(self, composition):
        return [f"seeds/seed-{s}" for s in composition["seeds"]]

    def member_training(self, training, composition, member):
        training["seed"] = int(member.removeprefix("seeds/seed-"))
        return training


@register_composition("seed_shards")
class SeedShards(Composition):
    """K shards × several seeds: one member per shard and seed (``shards/shard-{k}/seeds/seed-{s}``, on shard k with
    ``training.seed = s``); each shard's seeds averaged, then the K shard averages merged."""

    shards = True
    member_pattern = r"shards/shard-[0-9]+/seeds/seed-[0-9]+"
    paper = "Disperse-Then-Merge"
    role = "dtm"

    def members(self, composition):
        return [f"shards/shard-{k}/seeds/seed-{s}" for k in range(composition["k"]) for s in composition["seeds"]]

    def merge_groups(self, composition):
        members, n = self.members(composition), len(composition["seeds"])
        return [members[i:i + n] for i in range(0, len(members), n)]

    def member_training(self, training, composition, member):
        training["seed"] = int(member.rsplit("/seed-", 1)[1])
        return training

    def member_shard(self, member):
        return member.split("/")[1]

    def describe(self, recipe, merge_label):
        comp, seeds = recipe["composition"], len(recipe["composition"]["seeds"])
        return {"k": comp["k"], "split": comp["split"], "init": "same", "seeds": seeds,
                "label": f"DTM (K={comp['k']}, {comp['split']}, {seeds} seeds a shard averaged, {merge_label})"}


def composition_type(name: str) -> Composition:
    return lookup(COMPOSITIONS, "composition", name)()


def is_composed(name: str) -> bool:
    """Whether the composition merges member runs (every one but ``single``)."""
    return lookup(COMPOSITIONS, "composition", name).members is not Composition.members


#: the compositions that merge member runs (every one but ``single``)
COMPOSED = tuple(name for name in COMPOSITIONS if is_composed(name))


def member_pattern() -> str:
    """The regular expression of every composition's member names (the member rules' wildcard constraint)."""
    return "|".join(f"(?:{cls.member_pattern})" for cls in COMPOSITIONS.values() if cls.member_pattern)


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


def merge_group_sizes(composition: Mapping) -> list[int] | None:
    """The sizes of the composition's merge groups (consecutive members averaged first); None: no groups."""
    groups = composition_type(composition["name"]).merge_groups(composition)
    if groups is None:
        return None
    if [m for g in groups for m in g] != member_names(composition):
        raise ValueError(f"composition {composition['name']!r}: its merge groups {groups} are not its members in order")
    return [len(g) for g in groups]


def member_shard(composition: Mapping, member: str) -> str | None:
    """The shard ``member`` trains on (its ids: ``shards/ids/{shard}.ids``); None: the recipe's whole selection."""
    return composition_type(composition["name"]).member_shard(member)


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
