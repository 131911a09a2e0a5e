"""Each axis class declares what other code asks of it by name: the registries answer as the name lists they
replace did (objectives needing πref, a paper's objectives, a selector's validation loss, the member directories),
and a class added with its declarations is picked up without editing those places."""

import re

import pytest

from sftlab.compose.members import COMPOSITIONS, Composition, member_pattern
from sftlab.config import influence_selectors, preference_selectors
from sftlab.objectives import (BASELINE_OBJECTIVE, OBJECTIVES, REFERENCE_COLUMN, Objective, objective_label,
                               paper_objectives, reference_objectives)
from sftlab.report.dtm import describe_run, dtm_runs
from sftlab.report.methods import MINORSFT_METHODS
from sftlab.selection import SELECTORS

#: the hand-kept lists these declarations replace (as they stood before)
OLD_REFERENCE_USERS = ("minorsft", "dpo_sft")
OLD_METHOD_REPORT_OBJECTIVES = {"SFTMix": {"sftmix"}, "MinorSFT": {"minorsft", "dpo_sft"}}
OLD_MINORSFT_METHODS = {"ntp": "SFT", "dpo_sft": "DPO-SFT", "minorsft": "MinorSFT"}
OLD_MEMBER_REGEX = r"shards/shard-[0-9]+|seeds/seed-[0-9]+"


def test_objectives_needing_the_reference_are_minorsft_and_dpo_sft():
    assert set(reference_objectives()) == set(OLD_REFERENCE_USERS)
    assert not OBJECTIVES["ntp"].needs_reference() and not OBJECTIVES["sftmix"].needs_reference()


def test_each_paper_has_the_objectives_of_its_report():
    for paper, names in OLD_METHOD_REPORT_OBJECTIVES.items():
        assert set(paper_objectives(paper)) == names
    assert OBJECTIVES[BASELINE_OBJECTIVE].paper is None and objective_label(BASELINE_OBJECTIVE) == "SFT"


def test_minorsft_table_methods_keep_their_labels_and_order():
    assert list(MINORSFT_METHODS.items()) == list(OLD_MINORSFT_METHODS.items())


def test_a_new_objective_declaring_the_reference_column_needs_the_reference(monkeypatch):
    class Anchored(Objective):
        columns = (REFERENCE_COLUMN,)
        paper = "MinorSFT"
        label = "Anchored"

    monkeypatch.setitem(OBJECTIVES, "anchored", Anchored)
    assert set(reference_objectives()) == {*OLD_REFERENCE_USERS, "anchored"}
    assert paper_objectives("MinorSFT") == ("anchored", "dpo_sft", "minorsft")


def test_selectors_declare_their_validation_loss():
    assert {name: SELECTORS[name].validation_loss for name in influence_selectors()} == {"less": "ntp", "rose": "dpo"}
    assert preference_selectors() == ("rose",)
    assert all(SELECTORS[n].validation_loss is None for n in SELECTORS if n not in influence_selectors())


@pytest.mark.parametrize("name", ["shards/shard-0", "shards/shard-12", "seeds/seed-3", "seeds/seed-1234",
                                  "shards/ids", "seeds/seed-x", "shards/shard-1/model", "model", "seed-1"])
def test_member_pattern_matches_as_the_old_regex(name):
    assert bool(re.fullmatch(member_pattern(), name)) == bool(re.fullmatch(OLD_MEMBER_REGEX, name))


def test_member_names_of_every_composition_match_the_member_pattern():
    examples = {"disperse_merge": {"name": "disperse_merge", "k": 3}, "seed_soup": {"name": "seed_soup", "seeds": [1, 7]}}
    for name, comp in examples.items():
        members = COMPOSITIONS[name]().members(comp)
        assert members and all(re.fullmatch(member_pattern(), m) for m in members)


def _recipe(composition, objective="ntp"):
    return {"composition": composition, "objective": {"name": objective}, "selection": {"name": "full"},
            "training": {"seed": 0}}


MERGE = {"method": "average", "merge_space": "delta"}


def test_described_runs_keep_their_labels():
    dtm = describe_run("m", "d", "r", _recipe({"name": "disperse_merge", "k": 4, "split": "random", "merge": MERGE},
                                              "minorsft"))
    assert (dtm["role"], dtm["k"], dtm["init"], dtm["seeds"]) == ("dtm", 4, "same", None)
    assert dtm["label"] == "DTM (K=4, random, average, minorsft members)"
    soup = describe_run("m", "d", "r", _recipe({"name": "seed_soup", "seeds": [1, 2, 3], "merge": MERGE}))
    assert (soup["role"], soup["seeds"], soup["k"]) == ("seed_soup", 3, None)
    assert soup["label"] == "seed soup (3 seeds, average)"
    single = describe_run("m", "d", "r", _recipe({"name": "single"}, "sftmix"))
    assert (single["role"], single["label"], single["method"]) == ("sft", "single run (sftmix)", None)


def test_a_new_composition_beside_a_dtm_recipe_is_described_by_its_own_class(monkeypatch):
    """The old DTM branch read ``k`` of every composition but single and seed soup (KeyError: 'k')."""

    class TwinSoup(Composition):
        member_pattern = r"twins/twin-[ab]"
        role = "seed_soup"

        def members(self, composition):
            return ["twins/twin-a", "twins/twin-b"]

        def describe(self, recipe, merge_label):
            return {"seeds": 2, "label": f"twin soup ({merge_label})"}

    monkeypatch.setitem(COMPOSITIONS, "twin_soup", TwinSoup)
    recipes = {"dtm": _recipe({"name": "disperse_merge", "k": 2, "split": "random", "merge": MERGE}),
               "twins": _recipe({"name": "twin_soup", "merge": MERGE})}
    runs = dtm_runs(recipes, [("m", "d", "dtm"), ("m", "d", "twins")])
    assert [r["label"] for r in runs] == ["DTM (K=2, random, average)", "twin soup (average)"]
    assert re.fullmatch(member_pattern(), "twins/twin-b")


def test_members_declare_the_shard_they_train_on():
    """As the old path test did: a ``shards/shard-k`` member trains on shard-k's ids, any other on the selection."""
    from sftlab.compose.members import member_shard

    assert member_shard({"name": "disperse_merge", "k": 3}, "shards/shard-2") == "shard-2"
    assert member_shard({"name": "seed_soup", "seeds": [4]}, "seeds/seed-4") is None


def test_merge_groups_must_be_the_members_in_order(monkeypatch):
    from sftlab.compose.members import merge_group_sizes

    assert merge_group_sizes({"name": "seed_soup", "seeds": [1, 2]}) is None

    class Pairs(Composition):
        def members(self, composition):
            return ["pairs/a", "pairs/b", "pairs/c"]

        def merge_groups(self, composition):
            return composition["groups"]

    monkeypatch.setitem(COMPOSITIONS, "pairs", Pairs)
    assert merge_group_sizes({"name": "pairs", "groups": [["pairs/a"], ["pairs/b", "pairs/c"]]}) == [1, 2]
    with pytest.raises(ValueError, match="not its members in order"):
        merge_group_sizes({"name": "pairs", "groups": [["pairs/b"], ["pairs/a", "pairs/c"]]})
