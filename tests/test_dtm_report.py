"""The Disperse-Then-Merge report: which runs it shows, its two tables and the K ablation's data, on hand-made scores."""

import json

import pandas as pd
import pytest

from sftlab.config import prepare
from sftlab.report.dtm import (build_k_figure, build_report, draws_k_figure, dtm_runs, k_ablation_points, main_table,
                               merge_method_table)
from sftlab.report.papers import paper_numbers
from sftlab.report.tables import load_scores

SOURCE = "Disperse-Then-Merge (arXiv 2405.13432), secondary"


def dtm(k=4, **merge):
    return {"composition": {"name": "disperse_merge", "k": k, "merge": merge}}


RECIPES = {
    "sft": {},
    "sft_full": {"training": {"finetuning": "full"}},
    "sft_seed7": {"training": {"seed": 7}},
    "soup": {"composition": {"name": "seed_soup", "seeds": [1, 2]}},
    "dtm": dtm(),
    "dtm_k2": dtm(2),
    "dtm_ties": dtm(method="ties"),
    "dtm_ta": dtm(method="task_arithmetic"),
    "dtm_init": {"composition": {"name": "disperse_merge", "k": 4, "init": "different"}},
    "dtm_adapter": dtm(merge_space="adapter"),
}
# (value, ci_low, ci_high) per recipe and benchmark; dtm_k2 has no mmlu result
SCORES = {
    ("sft", "mmlu"): (40.0, 38.0, 42.0), ("sft", "em"): (10.0, 5.0, 15.0),
    ("sft_full", "mmlu"): (1.0, 0.0, 2.0), ("sft_seed7", "mmlu"): (41.0, 39.0, 43.0),
    ("soup", "mmlu"): (42.5, 40.0, 45.0), ("soup", "em"): (12.0, 6.0, 18.0),
    ("dtm", "mmlu"): (45.0, 43.0, 47.0), ("dtm", "em"): (20.0, 12.0, 28.0),
    ("dtm_k2", "em"): (15.0, 9.0, 21.0),
    ("dtm_ties", "mmlu"): (44.0, 42.0, 46.0), ("dtm_init", "mmlu"): (46.0, 44.0, 48.0), ("dtm_adapter", "mmlu"): (43.0, 41.0, 45.0),
}


@pytest.fixture(scope="module")
def config():
    return prepare({
        "models": {"m": {"source": "random"}},
        "datasets": {"d": {"source": "demo", "heldout": 4}},
        "recipes": RECIPES,
        "benchmarks": {"em": {"type": "exact_match"}, "mmlu_local": {"type": "lm_eval", "task": "mmlu"}},
        "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": list(RECIPES),
                              "benchmarks": ["mmlu_local", "em"]}},
    })


@pytest.fixture(scope="module")
def runs(config):
    return dtm_runs(config["recipes"], [("m", "d", r) for r in config["experiments"]["e"]["recipes"]])


@pytest.fixture(scope="module")
def scores(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    paths = []
    for (recipe, bench), (value, low, high) in SCORES.items():
        name = "mmlu_local" if bench == "mmlu" else bench
        path = root / "results/m/d/runs" / recipe / "scores" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": name, "metric": "acc", "value": value, "ci_low": low,
                                    "ci_high": high, "n": 100}))
        paths.append(path)
    return load_scores(paths)


BENCHMARKS = {"mmlu_local": "mmlu", "em": "em"}  # our benchmark → the paper's key (its lm-eval task)


def test_runs_shown_and_their_roles(runs):
    # sft_full (full fine-tuning) is another recipe; sft_seed7 differs only by its seed, as soup members do
    assert [(r["recipe"], r["role"]) for r in runs] == [
        ("sft", "sft"), ("sft_seed7", "sft"), ("soup", "seed_soup"), ("dtm", "dtm"), ("dtm_k2", "dtm"),
        ("dtm_ties", "dtm"), ("dtm_ta", "dtm"), ("dtm_init", "dtm"), ("dtm_adapter", "dtm")]
    labels = {r["recipe"]: r["label"] for r in runs}
    assert labels["soup"] == "seed soup (2 seeds, average)"
    assert labels["dtm_k2"] == "DTM (K=2, random, average)"
    assert labels["dtm_adapter"] == "DTM (K=4, random, average, adapter space)"
    assert labels["dtm_ta"] == "DTM (K=4, random, task_arithmetic (λ=0.3))"  # its default λ, shown
    assert labels["dtm_init"] == "DTM (K=4, random, average, different init)"


def test_no_dtm_recipe_no_report(config):
    assert dtm_runs(config["recipes"], [("m", "d", "sft"), ("m", "d", "soup")]) == []


def test_main_table(scores, runs):
    table = main_table(scores, runs, BENCHMARKS, paper_numbers("dtm"))
    # ours: SFT rows, the soup, DTM averaged in delta space by split and K; paper benchmarks we lack get columns
    assert list(table.columns) == ["model", "dataset", "method", "recipe", "mmlu_local", "em", "gsm8k", "bbh",
                                   "arc_challenge", "source"]
    ours = table[table["source"] == "this work"]
    assert ours["recipe"].tolist() == ["sft", "sft_seed7", "soup", "dtm_k2", "dtm"]
    cells = ours.set_index("recipe")
    assert cells.loc["dtm", "mmlu_local"] == "45.00 [43.0, 47.0]"
    assert cells.loc["soup", "em"] == "12.00 [6.0, 18.0]"
    assert cells.loc["dtm_k2", "mmlu_local"] == "n/a"
    assert (ours[["gsm8k", "bbh", "arc_challenge"]] == "n/a").all().all()
    paper = table[table["source"] == SOURCE].set_index("method")
    assert paper.index.tolist() == ["SFT", "DTM"]
    # the paper's MMLU goes into our column whose lm-eval task is mmlu
    assert paper.loc["DTM", "mmlu_local"] == "50.43" and paper.loc["SFT", "mmlu_local"] == "49.74"
    assert paper.loc["DTM", "gsm8k"] == "20.62" and paper.loc["SFT", "arc_challenge"] == "46.93"
    assert paper.loc["DTM", "em"] == "n/a" and paper.loc["DTM", "recipe"] == "n/a"


def test_merge_method_table(scores, runs):
    table = merge_method_table(scores, runs, BENCHMARKS, paper_numbers("dtm"))
    assert list(table.columns) == ["model", "dataset", "recipe", "K", "split", "merge method", "merge space",
                                   "member init", "mmlu_local", "em", "source"]
    ours = table[table["source"] == "this work"]
    assert ours[["recipe", "K", "merge method", "merge space", "member init"]].values.tolist() == [
        ["dtm_k2", "2", "average", "delta", "same"], ["dtm", "4", "average", "delta", "same"],
        ["dtm_init", "4", "average", "delta", "different"], ["dtm_adapter", "4", "average", "adapter", "same"],
        ["dtm_ta", "4", "task_arithmetic (λ=0.3)", "delta", "same"], ["dtm_ties", "4", "ties", "delta", "same"]]
    assert ours.set_index("recipe").loc["dtm_init", "mmlu_local"] == "46.00 [44.0, 48.0]"
    assert ours.set_index("recipe").loc["dtm_ties", "mmlu_local"] == "44.00 [42.0, 46.0]"
    assert ours.set_index("recipe").loc["dtm_ties", "em"] == "n/a"
    paper = table[table["source"] == SOURCE]
    assert dict(zip(paper["merge method"], paper["mmlu_local"])) == {
        "average": "50.43", "Fisher": "50.41", "task vector": "49.85", "DARE": "49.89", "TIES": "49.32"}


def test_k_ablation_points(scores, runs):
    points = k_ablation_points(scores, runs, ["mmlu_local", "em"])
    em = points[points["benchmark"] == "em"]
    line = em[em["series"] == "m/d DTM random, average"]
    assert line[["k", "value"]].values.tolist() == [[2, 15.0], [4, 20.0]]
    baselines = em[em["role"] != "dtm"]
    assert dict(zip(baselines["series"], baselines["value"])) == {"m/d SFT: sft": 10.0, "m/d seed soup (2 seeds, average): soup": 12.0}
    mmlu = points[points["benchmark"] == "mmlu_local"]
    assert mmlu[mmlu["role"] == "dtm"].groupby("series")["k"].apply(list).to_dict() == {
        "m/d DTM random, average": [4], "m/d DTM random, average, adapter space": [4], "m/d DTM random, ties": [4],
        "m/d DTM random, average, different init": [4]}
    assert "m/d DTM random, task_arithmetic (λ=0.3)" not in set(points["series"])  # no score, no point
    assert len(points) == sum(1 for (r, _) in SCORES if r != "sft_full")


def test_build_report_writes_every_file(scores, runs, tmp_path):
    out = build_report(scores, runs, BENCHMARKS, tmp_path / "t/dtm_main", tmp_path / "t/dtm_merge")
    out += build_k_figure(scores, runs, BENCHMARKS, tmp_path / "f/dtm_k")
    assert sorted(p.name for p in out) == sorted(
        [f"dtm_main.{e}" for e in ("md", "csv", "tex")] + [f"dtm_merge.{e}" for e in ("md", "csv", "tex")]
        + ["dtm_k.png", "dtm_k.pdf"])
    assert all(p.stat().st_size > 0 for p in out)
    assert pd.read_csv(tmp_path / "t/dtm_main.csv")["source"].iloc[-1] == SOURCE
    assert "No K ablation figure" not in (tmp_path / "t/dtm_merge.md").read_text()


def test_a_k_axis_of_one_value_is_no_figure_and_the_table_says_so(scores, runs, tmp_path):
    # without dtm_k2 every DTM run has K = 4: one point on the axis
    k4 = [r for r in runs if r["recipe"] != "dtm_k2"]
    assert draws_k_figure(runs) and not draws_k_figure(k4)
    with pytest.raises(ValueError, match="two values of K"):
        build_k_figure(scores, k4, BENCHMARKS, tmp_path / "f/dtm_k")
    assert not (tmp_path / "f").exists()
    build_report(scores, k4, BENCHMARKS, tmp_path / "t/dtm_main", tmp_path / "t/dtm_merge")
    assert "No K ablation figure: the DTM runs have one K (4)" in (tmp_path / "t/dtm_merge.md").read_text()


def test_report_with_no_scores_yet(runs, tmp_path):
    empty = load_scores([])
    table = main_table(empty, runs, BENCHMARKS, paper_numbers("dtm"))
    assert (table.loc[table["source"] == "this work", ["mmlu_local", "em"]] == "n/a").all().all()
    build_report(empty, runs, BENCHMARKS, tmp_path / "a", tmp_path / "b")
    build_k_figure(empty, runs, BENCHMARKS, tmp_path / "c")


def test_a_fisher_merge_names_its_fisher():
    from sftlab.report.dtm import describe_run

    def run(**merge):
        recipe = {"objective": {"name": "ntp"}, "composition": {
            "name": "disperse_merge", "k": 4, "split": "random", "merge": {"method": "fisher", "merge_space": "delta",
                                                                           **merge}}}
        return describe_run("m", "d", "r", recipe)

    # the default is Matena & Raffel's Fisher
    assert run()["label"] == "DTM (K=4, random, fisher (model Fisher, L2-normalised))"
    assert run(fisher_type="empirical")["method_label"] == "fisher (empirical Fisher)"
