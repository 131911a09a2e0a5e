"""Member runs of composed recipes: names, shared owners, seeds, and the merged run's training log."""

import copy
import math

import pandas as pd
import pytest

from sftlab.compose.members import mean_train_log, member_names, member_owner, member_training

TRAINING = {"learning_rate": 1e-3, "seed": 0, "finetuning": "lora"}
MERGE = {"method": "average", "merge_space": "delta", "seed": 0}


def recipe(composition, **changes):
    out = {"selection": {"name": "full", "fraction": 1.0}, "objective": {"name": "ntp"},
           "composition": composition, "training": dict(TRAINING)}
    out.update(changes)
    return out


def dtm(k=4, **merge):
    return recipe({"name": "disperse_merge", "k": k, "split": "random", "seed": 0, "merge": {**MERGE, **merge}})


def test_member_names():
    assert member_names(dtm(3)["composition"]) == ["shards/shard-0", "shards/shard-1", "shards/shard-2"]
    assert member_names({"name": "seed_soup", "seeds": [7, 2]}) == ["seeds/seed-7", "seeds/seed-2"]
    with pytest.raises(ValueError, match="no member runs"):
        member_names({"name": "single"})


def test_recipes_differing_only_in_the_merge_share_their_members():
    recipes = {
        "dtm": dtm(),
        "dtm_ties": dtm(method="ties", density=0.3),
        "a_adapter": {**dtm(merge_space="adapter"), "description": "the authors' merge"},
        "dtm_k2": dtm(2),
        "dtm_lr": {**dtm(), "training": {**TRAINING, "learning_rate": 2e-3}},
        "sft": recipe({"name": "single"}),
    }
    # the first name in order owns the shared sub-models, whichever recipe asks
    for name in ("dtm", "dtm_ties", "a_adapter"):
        assert member_owner(recipes, name) == "a_adapter"
    assert member_owner(recipes, "dtm_k2") == "dtm_k2"
    assert member_owner(recipes, "dtm_lr") == "dtm_lr"


def test_seed_soups_with_other_seeds_do_not_share():
    soup = lambda seeds, **merge: recipe({"name": "seed_soup", "seeds": seeds, "merge": {**MERGE, **merge}})  # noqa: E731
    recipes = {"s1": soup([1, 2]), "s2": soup([1, 2], method="ties"), "s3": soup([1, 3])}
    assert [member_owner(recipes, r) for r in recipes] == ["s1", "s1", "s3"]


def test_member_training():
    soup = recipe({"name": "seed_soup", "seeds": [4, 9], "merge": MERGE})
    original = copy.deepcopy(soup)
    assert member_training(soup, "seeds/seed-9") == {**TRAINING, "seed": 9}
    assert soup == original
    assert member_training(dtm(2), "shards/shard-1") == TRAINING
    with pytest.raises(ValueError, match="not a member"):
        member_training(dtm(2), "shards/shard-2")
    with pytest.raises(ValueError, match="not a member"):
        member_training(soup, "seeds/seed-5")


def test_mean_train_log_averages_each_step_over_the_members_that_logged_it():
    a = pd.DataFrame({"step": [0, 1, 2, 3], "loss": [None, 4.0, 3.0, 2.0], "eval_loss": [5.0, None, 3.5, None]})
    b = pd.DataFrame({"step": [0, 1, 2], "loss": [None, 6.0, 2.0], "eval_loss": [5.0, None, 2.5]})
    got = mean_train_log([a, b])
    assert list(got.columns) == ["step", "members", "loss", "eval_loss"]
    assert got["step"].tolist() == [0, 1, 2, 3]
    assert got["members"].tolist() == [2, 2, 2, 1]
    # by hand: step 1 (4+6)/2, step 2 (3+2)/2, step 3 only a's 2.0; held-out (5+5)/2 and (3.5+2.5)/2
    assert got["loss"].tolist()[1:] == [5.0, 2.5, 2.0] and math.isnan(got["loss"][0])
    assert got["eval_loss"][0] == 5.0 and got["eval_loss"][2] == 3.0 and math.isnan(got["eval_loss"][3])


def test_mean_train_log_refuses_nothing_or_no_steps():
    with pytest.raises(ValueError, match="no member"):
        mean_train_log([])
    with pytest.raises(ValueError, match="'step'"):
        mean_train_log([pd.DataFrame({"loss": [1.0]})])


def test_compositions_are_a_registry():
    """The composed compositions and the sharded one come from the registry, not from lists of names."""
    from sftlab.compose.members import COMPOSED, COMPOSITIONS, composition_type

    assert set(COMPOSITIONS) == {"single", "disperse_merge", "seed_soup", "seed_shards"}
    assert COMPOSED == ("disperse_merge", "seed_soup", "seed_shards")
    assert [n for n, c in COMPOSITIONS.items() if c.shards] == ["disperse_merge", "seed_shards"]
    training = {"seed": 3, "learning_rate": 1e-4}
    assert composition_type("seed_soup").member_training(dict(training), {"seeds": [9]}, "seeds/seed-9")["seed"] == 9
    assert "init_seed" not in composition_type("disperse_merge").member_training(dict(training), {"k": 2},
                                                                                "shards/shard-1")
    with pytest.raises(ValueError, match="unknown composition 'soup'"):
        composition_type("soup")
