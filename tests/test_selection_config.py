"""LESS / ROSE configuration: selector ids, checks against the validation sets, paper defaults; validation sets."""

import copy
import random

import pytest

from sftlab.config import ConfigError, fraction_id, prepare, selector_id
from sftlab.selection.gradients import take_shots
from sftlab.selection.validation import validation_items

BASE = {
    "models": {"m": {"source": "random"}},
    "datasets": {"d": {"source": "demo", "heldout": 3}},  # the heldout validation set takes 3 a family
    "validation": {"shp": {"dataset": "d"}, "heldout": {"dataset": "d", "split": "heldout", "shots": 3}},
    "recipes": {
        "rose5": {"selection": {"name": "rose", "validation": "shp", "fraction": 0.05}},
        "rose5_50": {"selection": {"name": "rose", "validation": "shp", "fraction": 0.5}},
        "rose2": {"selection": {"name": "rose", "validation": "shp", "shots": 2, "fraction": 0.05}},
        "rose_beta": {"selection": {"name": "rose", "validation": "shp", "beta": 0.2}},
        "less": {"selection": {"name": "less", "validation": "heldout", "fraction": 0.1}},
        "rnd": {"selection": {"name": "random", "seed": 3, "fraction": 0.5}},
    },
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["rose5"]}},
}


def config_with(change):
    raw = copy.deepcopy(BASE)
    change(raw)
    return raw


def test_confident_halves_default_to_the_whole_half():
    raw = copy.deepcopy(BASE)
    raw["recipes"]["conf"] = {"selection": {"name": "unconfident"}}
    assert prepare(raw)["recipes"]["conf"]["selection"]["fraction"] == 0.5


def test_selector_ids_name_the_settings_that_change_the_influence_table():
    cfg = prepare(copy.deepcopy(BASE))
    ids = {name: selector_id(r["selection"]) for name, r in cfg["recipes"].items()}
    assert ids == {"rose5": "rose-shp-5shot", "rose5_50": "rose-shp-5shot", "rose2": "rose-shp-2shot",
                   "rose_beta": "rose-shp-5shot-beta0.2", "less": "less-heldout-3shot", "rnd": "random-s3"}
    assert cfg["recipes"]["rose5"]["selection"] == {"name": "rose", "validation": "shp", "fraction": 0.05,
                                                    "beta": 0.1, "shots": 5}
    assert fraction_id(cfg["recipes"]["rose5_50"]["selection"]["fraction"]) == "0.5"


def test_warmup_and_gradient_defaults_are_the_papers():
    cfg = prepare(copy.deepcopy(BASE))
    warmup = cfg["warmup"]
    assert (warmup["fraction"], warmup["seed"]) == (0.05, 0)
    assert {k: warmup["training"][k] for k in ("epochs", "learning_rate", "scheduler", "warmup_ratio", "finetuning")} == {
        "epochs": 4, "learning_rate": 2e-5, "scheduler": "linear", "warmup_ratio": 0.03, "finetuning": "lora"}
    assert warmup["training"]["lora"] == {"r": 128, "alpha": 512, "dropout": 0.1,
                                         "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    assert cfg["gradients"] == {"dim": 8192, "seed": 0, "shards": 1, "projection": "sjlt", "max_tokens": 4096,
                                "dtype": "float32", "cache_mb": 1024}
    assert cfg["validation"]["shp"] == {"dataset": "d", "split": "pairs", "shots": 5, "seed": 0}


@pytest.mark.parametrize("change, message", [
    (lambda c: c["recipes"]["rose5"]["selection"].update(validation="nope"),
     "recipes.rose5.selection.validation: no validation set named 'nope'"),
    (lambda c: c["recipes"]["rose5"]["selection"].update(validation="heldout"),
     "recipes.rose5.selection.validation: rose needs preference pairs"),
    (lambda c: c["recipes"]["less"]["selection"].update(beta=0.1), "recipes.less.selection.beta: the less selector"),
    (lambda c: c["recipes"]["rnd"]["selection"].update(shots=2), "recipes.rnd.selection.shots: only the selectors that score against a validation set"),
    (lambda c: c["recipes"]["rose5"]["selection"].pop("validation"), "recipes.rose5.selection"),
    (lambda c: c["validation"]["shp"].update(dataset="other"), "validation.shp.dataset: no dataset named 'other'"),
    (lambda c: c["validation"].update({"a-b": {"dataset": "d"}}), "validation"),
    (lambda c: c.update(warmup={"training": {"finetuning": "full"}}), "warmup.training.finetuning"),
    (lambda c: c.update(warmup={"training": {"epochs": 1.5}}), "warmup.training.epochs"),
    (lambda c: c["recipes"]["rnd"]["selection"].update(seed=0),
     "recipes.rnd.selection.seed: 0 is the LESS/ROSE warmup's seed"),
    (lambda c: c["recipes"].update(conf={"selection": {"name": "confident", "fraction": 0.6}}),
     "recipes.conf.selection.fraction: 0.6 of the pool, but selector 'confident' delivers at most 0.5"),
    (lambda c: c.update(sweeps={"u": {"recipe": "rnd", "grid": {"selection.name": ["unconfident"],
                                                                "selection.fraction": [0.25, 0.75]}}}),
     "sweeps.u.grid: generated recipe .* selector 'unconfident' delivers at most 0.5"),
])
def test_bad_influence_settings_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare(config_with(change))


# ----------------------------------------------------------------------------- validation sets


def rows():
    return ([{"id": f"a{k}", "subtask": "a"} for k in range(4)] + [{"id": f"b{k}", "source": "b"} for k in range(3)]
            + [{"id": f"c{k}", "subtask": "c"} for k in range(2)])


def test_validation_items_group_by_subtask_in_a_seeded_order_per_subtask():
    items = validation_items(rows(), seed=7)
    assert [i["subtask"] for i in items] == ["a"] * 4 + ["b"] * 3 + ["c"] * 2
    # each subtask shuffled by its own generator keyed by (seed, subtask), computed here directly
    for name, n in (("a", 4), ("b", 3), ("c", 2)):
        expected = [f"{name}{k}" for k in range(n)]
        random.Random(f"7/{name}").shuffle(expected)
        assert [i["id"] for i in items if i["subtask"] == name] == expected
    # dropping a subtask does not change what the others contribute; shots are nested
    only_c = validation_items(rows(), subtasks=["c"], seed=7)
    assert only_c == [i for i in items if i["subtask"] == "c"]
    one, two = take_shots(items, 1), take_shots(items, 2)
    assert {i["id"] for i in one} < {i["id"] for i in two} and len(two) == 6
    assert validation_items(rows(), seed=8) != items
    with pytest.raises(ValueError, match=r"subtasks \['z'\] not in the data"):
        validation_items(rows(), subtasks=["z"])


def test_the_shipped_configs_validate_with_their_influence_selections():
    from pathlib import Path

    from sftlab.config import load

    root = Path(__file__).resolve().parents[1]
    rose = load(root / "configs" / "paper" / "rose.yaml")
    assert selector_id(rose["recipes"]["rose_shp_shots1"]["selection"]) == "rose-shp-1shot"
    assert selector_id(rose["recipes"]["rose_hh_frac0.2"]["selection"]) == "rose-hh-1shot"
    assert rose["recipes"]["rose_se_frac0.5"]["selection"]["fraction"] == 0.5
    less = load(root / "configs" / "paper" / "less.yaml")
    assert {selector_id(r["selection"]) for r in less["recipes"].values() if r["selection"]["name"] == "less"} == {
        "less-mmlu-5shot", "less-tydiqa-1shot", "less-bbh-3shot"}
    assert less["warmup"]["training"]["lora"]["r"] == 128
    for name in ("config.yaml", "configs/tiny.yaml"):
        cfg = load(root / name)
        assert {r["selection"]["name"] for r in cfg["recipes"].values()} >= {"less", "rose"}


def test_a_new_selector_with_a_parameter_gets_it_in_its_path():
    """The selection id comes from the selector's declared parameters: a new selector needs no edit elsewhere."""
    from sftlab.selection import SELECTORS, Selector, register_selector

    @register_selector("by_length_test")
    class ByLength(Selector):
        def __init__(self, longest_first: bool = True, min_tokens: int = 0) -> None:
            self.longest_first, self.min_tokens = longest_first, min_tokens

        def rank(self, ids, tables):
            return list(ids)

    try:
        ids = {selector_id({"name": "by_length_test", "fraction": 0.5, **kw})
               for kw in ({}, {"min_tokens": 8}, {"longest_first": False}, {"longest_first": True, "min_tokens": 0})}
        assert ids == {"by_length_test-longest_firsttrue-min_tokens0", "by_length_test-longest_firsttrue-min_tokens8",
                       "by_length_test-longest_firstfalse-min_tokens0"}
    finally:
        del SELECTORS["by_length_test"]
    # the paths the earlier hand-written ids gave are unchanged
    assert selector_id({"name": "random", "fraction": 0.5}) == "random-s0"
    assert selector_id({"name": "rose", "validation": "shp", "shots": 2, "beta": 0.1}) == "rose-shp-2shot"
    assert selector_id({"name": "rose", "validation": "shp", "shots": 2, "beta": 0.5}) == "rose-shp-2shot-beta0.5"
    assert selector_id({"name": "less", "validation": "mmlu", "shots": 5}) == "less-mmlu-5shot"
    assert selector_id({"name": "confident", "fraction": 0.5}) == "confident"
