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


#: the selection report's hand-kept lists (as they stood before the selector classes declared them)
OLD_LABELS = {"less": "LESS", "rose": "ROSE", "bm25": "BM25", "dsir": "DSIR", "rds": "RDS", "rds_plus": "RDS+"}
OLD_METHOD_ORDER = ("full", "random", "bm25", "dsir", "rds", "rds_plus", "less", "rose")
OLD_SELECTION_STAGES = {"warmup": "warmup", "grad_features": "gradient features",
                        "gather_grad_features": "gradient features", "validation_grad_features": "gradient features",
                        "pool_hidden_states": "hidden-state features", "representation_scores": "hidden-state features",
                        "lexical_scores": "selection", "influence": "selection", "select_data": "selection",
                        "train": "final training", "train_reference": "final training"}


def test_selection_report_lists_come_from_the_selectors():
    from sftlab.report.selection import method_order, selection_stages, selector_label

    assert {name: selector_label(name) for name in OLD_LABELS} == OLD_LABELS
    assert selector_label("confident") == "confident"  # no label: its config name
    assert method_order() == OLD_METHOD_ORDER
    assert selection_stages() == OLD_SELECTION_STAGES


def test_a_new_selector_shows_in_the_selection_tables_and_cost_with_its_declarations(monkeypatch):
    import pandas as pd

    from sftlab.report.dag import DagJob
    from sftlab.report.selection import selection_cost_groups, selection_main_table, shots_table
    from sftlab.selection.influence import ValidationScoreSelector

    class Embedding(ValidationScoreSelector):
        name = "embed"
        tables = ("embed",)
        label = "EMB"
        cost_stages = {"embed_pool": "hidden-state features", "embed_scores": "selection"}

    monkeypatch.setitem(SELECTORS, "embed", Embedding)
    frame = pd.DataFrame([
        {"model": "m", "dataset": "d", "recipe": r, "benchmark": "em", "value": v, "ci_low": None, "ci_high": None,
         "metric": "em", "objective": "ntp", "name": name, "fraction": 0.05, "shots": 5, "validation": "v",
         "group": "g", "selection_model": None}
        for r, v, name in [("embed_5", 0.4, "embed"), ("less_5", 0.5, "less"), ("random_5", 0.3, "random")]])
    table = selection_main_table(frame, {"em": "em"}, pd.DataFrame())
    # a targeted baseline: after random, before the influence selectors, under its label
    assert list(table.method) == ["random 5%", "EMB 5%", "LESS 5%"]
    assert set(shots_table(frame, ["em"]).method) == {"embed", "less"}

    def j(i, rule, deps, wildcards, gpus=0):
        return DagJob(rule=rule, wildcards={"model": "m", "dataset": "d", **wildcards}, benchmark=f"b/{rule}/{i}",
                      phase="method preparation", outputs=(), temp_outputs=(), gpus=gpus, dependencies=tuple(deps))

    jobs = [j(0, "embed_pool", [], {}, 1), j(1, "embed_scores", [0], {"selector": "embed-v"}),
            j(2, "select_data", [1], {"selector": "embed-v", "fraction": "0.05"}),
            j(3, "train", [2], {"recipe": "embed_5"})]
    groups = selection_cost_groups(jobs, [["m", "d", "embed_5"]])
    assert [(g["stage"], g["item"], [b["path"] for b in g["benchmarks"]]) for g in groups] == [
        ("hidden-state features", "pool", ["b/embed_pool/0"]),
        ("selection", "embed-v", ["b/embed_scores/1", "b/select_data/2"]),
        ("final training", "embed_5", ["b/train/3"])]


#: the objective names these declarations replace (as they stood before)
OLD_SFTMIX_DEFAULTS = {"mu": 0.2, "alpha": 0.5, "mixup_detach": False, "pairing": "confidence"}


def test_objectives_declare_pair_batches_and_sftmix_its_settings():
    from sftlab.report.methods import SFTMIX_DEFAULTS, SFTMIX_OBJECTIVE

    assert {name for name, cls in OBJECTIVES.items() if cls.pairs_examples} == {"sftmix"}
    assert SFTMIX_OBJECTIVE == "sftmix" and SFTMIX_DEFAULTS == OLD_SFTMIX_DEFAULTS


def test_a_new_pairing_objective_is_batch_checked_priced_and_reported_as_sftmix(monkeypatch):
    import pandas as pd

    from sftlab.config import ConfigError, check_pair_batches
    from sftlab.report.gpu_cost import CostModel
    from sftlab.report.methods import sftmix_ablation_table

    class PairSwap(Objective):
        name = "pair_swap"
        paper = "SFTMix"
        label = "PairSwap"
        pairs_examples = True

    monkeypatch.setitem(OBJECTIVES, "pair_swap", PairSwap)
    recipe = {"objective": {"name": "pair_swap"}, "training": {"batch_size": 3}}
    with pytest.raises(ConfigError, match=r"recipes\.r\.training\.batch_size: the pair_swap objective pairs"):
        check_pair_batches("recipes.r", recipe)
    check_pair_batches("recipes.r", {**recipe, "objective": {"name": "ntp"}})  # NTP takes any batch
    # its batches are the pair sampler's: priced at the pair layout's real-token share
    eff = {"pairs": 0.5, "packed": 1.0, "length_grouped": 0.9}
    model = CostModel({}, {"batch_efficiency": eff})
    assert model.efficiency({"batching": "packed"}, "pair_swap") == 0.5
    assert model.efficiency({"batching": "packed"}, "ntp") == 1.0
    # an SFTMix-paper objective: its runs and the baseline's are rows of the ablation table
    runs = [{"model": "m", "dataset": "d", "recipe": r, "objective": {"name": o}, "selection": {"name": "full"}}
            for r, o in [("ntp", "ntp"), ("swap", "pair_swap"), ("minor", "minorsft")]]
    table = sftmix_ablation_table(runs, pd.DataFrame(columns=["model", "dataset", "recipe", "benchmark"]), [])
    assert list(table.recipe) == ["ntp", "swap"]


def test_an_objective_derives_the_columns_it_reads_from_its_tables(tmp_path):
    import importlib.util
    from pathlib import Path

    import pandas as pd

    path = tmp_path / "confidence.parquet"
    pd.DataFrame({"id": [1, 2], "split": ["confident", "unconfident"], "confidence": [0.9, 0.1]}).to_parquet(path)
    spec = importlib.util.spec_from_file_location("train_script", Path(__file__).resolve().parents[1] / "scripts" /
                                                  "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # SFTMix's confident flag, from the confidence table's split; NTP reads the table as it is
    assert script.load_tables([str(path)], "sftmix")["confident"] == {"1": 1.0, "2": 0.0}
    assert "confident" not in script.load_tables([str(path)], "ntp")
    assert script.load_tables([str(path)])["confidence"] == {"1": 0.9, "2": 0.1}


def test_the_baselines_score_rules_are_for_the_selectors_they_prepare():
    """baseline_scores.py's methods per kind of table: once hand-kept, now the selectors' declared rules."""
    import importlib.util
    from pathlib import Path

    from sftlab.selection import selectors_prepared_by

    assert selectors_prepared_by("lexical_scores") == ("bm25", "dsir")
    assert selectors_prepared_by("representation_scores") == ("rds", "rds_plus")
    assert set(selectors_prepared_by("influence")) == set(influence_selectors())
    spec = importlib.util.spec_from_file_location("baseline_scores", Path(__file__).resolve().parents[1] / "scripts" /
                                                  "baseline_scores.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    # the two declarations agree: a baseline's features name the rule that prepares its ranking
    from sftlab.selection import SELECTORS

    for kind, rule in (("lexical", "lexical_scores"), ("representations", "representation_scores")):
        assert tuple(n for n, cls in SELECTORS.items() if cls.features == kind) == selectors_prepared_by(rule)
    with pytest.raises(SystemExit, match=r"lexical scores are for \('bm25', 'dsir'\), not 'rds'"):
        script.main(["lexical", "--method", "rds", "--train", "t", "--validation", "v", "--shots", "1", "--out", "o"])
