"""ReportPlan (sftlab.plan.reports): the mechanism tables' specs, the methods' reports and the cost report's papers, for
configs/tiny.yaml and configs/paper/sftmix.yaml, against the values those configs give by hand."""

import json

import pytest
from snakemake.io import is_flagged

from _plan import config_plan

RUNS = "results/tiny/demo/runs"
#: the papers' names as the hand-kept lists held them (mechanisms.smk, methods_report.smk, cost.smk)
OLD_MECHANISM_PAPERS = {"sftmix": "SFTMix", "selection": "LESS / ROSE", "minorsft": "MinorSFT",
                        "dtm": "Disperse-Then-Merge", "nll": "Main"}
OLD_COST_PAPERS = ["SFT", "SFTMix", "MinorSFT", "LESS / ROSE", "Disperse-Then-Merge"]


@pytest.fixture(scope="module")
def tiny():
    return config_plan("tiny.yaml")


@pytest.fixture(scope="module")
def sftmix():
    return config_plan("paper/sftmix.yaml")


def answers(benchmark, recipes):
    return [{"model": "tiny", "dataset": "demo", "benchmark": benchmark, "recipe": r, "seed": None,
             "path": f"{RUNS}/{r}/answers/{benchmark}.jsonl"} for r in recipes]


def test_the_papers_come_from_the_classes_declarations(tiny):
    assert tiny.mechanism_papers == OLD_MECHANISM_PAPERS
    # the same papers as before; the objectives' papers in their registry's order (MinorSFT, then SFTMix)
    assert tiny.cost_papers == ["SFT", "MinorSFT", "SFTMix", "LESS / ROSE", "Disperse-Then-Merge"]
    assert sorted(tiny.cost_papers) == sorted(OLD_COST_PAPERS)


@pytest.mark.parametrize("recipe, papers", [
    ("sft", ["SFT"]), ("sft_random50", ["SFT"]), ("sft_full", ["SFT"]), ("sftmix", ["SFTMix"]),
    ("confident_only", ["SFTMix"]),  # the confidence split of SFTMix's reference run
    ("sftmix_ambiguous", ["SFTMix"]), ("dpo_sft", ["MinorSFT"]), ("bm25_25", ["LESS / ROSE"]),
    ("rose_sftmix", ["SFTMix", "LESS / ROSE"]), ("seed_soup", ["Disperse-Then-Merge"]),
    ("dtm_minorsft", ["MinorSFT", "Disperse-Then-Merge"])])
def test_recipe_papers(tiny, recipe, papers):
    assert tiny.recipe_papers(recipe) == papers


def test_cost_recipe_papers_name_every_recipe_the_experiments_run(tiny):
    papers = json.loads(tiny.cost_recipe_papers(None))
    assert len(papers) == 23 and papers["less_25"] == ["LESS / ROSE"]
    assert papers["dtm_fisher"] == ["Disperse-Then-Merge"]
    files = [f"reports/tables/{t}.{ext}" for t in ("cost", "cost_papers") for ext in ("md", "csv", "tex")]
    assert tiny.cost_report_files() == files
    before = tiny.reports_before_cost(None)
    assert "reports/tables/main.md" in before and not set(files) & set(before)


def test_sftmix_mechanism_reads_the_demo_pairs_confidence(tiny):
    assert tiny.sftmix_mechanism_spec() == {
        "n_resamples": 2000, "seed": 0, "pairs": [{"model": "tiny", "dataset": "demo",
                                                   "confidence": "results/tiny/demo/confidence.parquet",
                                                   "train": "results/data/demo/train.jsonl"}]}
    assert tiny.mechanism_inputs("sftmix") == ["results/data/demo/train.jsonl", "results/tiny/demo/confidence.parquet"]


def test_selection_mechanism_has_each_selection_once(tiny):
    (pair,) = tiny.selection_mechanism_spec()["pairs"]
    # rose_sftmix selects as rose_50 does: one selection; full-data runs have none
    assert sorted(s["name"] for s in pair["selections"]) == sorted(
        ["random", "confident", "ambiguous", "less", "less", "rose", "rose", "bm25", "dsir", "rds", "rds_plus"])
    less = [s for s in pair["selections"] if s["name"] == "less" and s["fraction"] == 0.25]
    # its id: the validation set, and the shots the validation set takes (2)
    assert less == [{"selector": "less-target-2shot", "name": "less", "fraction": 0.25, "validation": "target",
                     "ids": "results/tiny/demo/selection/less-target-2shot/0.25.ids"}]
    assert pair["validation"] == {"target": "results/data/demo/validation/target.jsonl"}


def test_minorsft_mechanism_groups_sft_minorsft_and_dpo_sft(tiny):
    spec = tiny.minorsft_mechanism_spec()
    runs = [{"recipe": r, "objective": o, "learning_rate": 1.0e-3, "seeds": 1}
            for r, o in [("sft", "ntp"), ("dpo_sft", "dpo_sft"), ("minorsft", "minorsft")]]
    assert spec["groups"] == [{"model": "tiny", "dataset": "demo", "benchmark": "heldout_nll", "baseline": "sft",
                               "runs": runs}]
    assert spec["answers"] == answers("heldout_nll", ["dpo_sft", "minorsft", "sft"])


def test_dtm_mechanism_pairs_each_composed_recipe_with_its_single_run(tiny):
    spec = tiny.dtm_mechanism_spec()
    pairs = [{"recipe": "dtm", "baseline": "sft", "composition": "disperse_merge", "seeds": 1},
             {"recipe": "dtm_minorsft", "baseline": "minorsft", "composition": "disperse_merge", "seeds": 1}]
    assert spec["groups"] == [{"model": "tiny", "dataset": "demo", "benchmark": "exam_nll",
                               "heldout_benchmark": "heldout_nll", "pairs": pairs}]
    recipes = ["dtm", "dtm_minorsft", "minorsft", "sft"]
    assert spec["answers"] == answers("exam_nll", recipes) + answers("heldout_nll", recipes)


def test_nll_mechanism_and_its_inputs(tiny):
    recipes = ["dpo_sft", "dtm", "dtm_minorsft", "minorsft", "sft"]
    assert tiny.nll_mechanism_spec()["groups"] == [
        {"model": "tiny", "dataset": "demo", "benchmark": b, "baseline": "sft", "recipes": recipes}
        for b in ("heldout_nll", "exam_nll")]
    assert tiny.mechanism_inputs("nll") == sorted(f"{RUNS}/{r}/answers/{b}.jsonl" for r in recipes
                                                  for b in ("heldout_nll", "exam_nll"))


def test_mechanism_outputs_are_shown_under_their_paper(tiny):
    outputs = tiny.mechanism_outputs("dtm")
    assert outputs == {"table": "reports/tables/mechanism_dtm.md", "table_csv": "reports/tables/mechanism_dtm.csv",
                       "table_tex": "reports/tables/mechanism_dtm.tex", "figure": "reports/figures/mechanism_dtm.png",
                       "figure_pdf": "reports/figures/mechanism_dtm.pdf"}
    assert outputs["table_csv"].flags["report"].category == "Disperse-Then-Merge"
    assert outputs["figure"].flags["report"].subcategory == "Figures"
    assert not is_flagged(outputs["table"], "report")
    assert len(tiny.mechanism_reports()) == 5 * 5  # every mechanism has something to show on the demo corpus


def test_method_reports_on_the_tiny_config(tiny):
    runs = tiny.method_report_runs("minorsft")
    # the single runs of tiny × demo (23 experiment recipes, 6 of them composed)
    assert len(runs) == 17 and {r["recipe"] for r in runs} >= {"sft", "minorsft", "dpo_sft", "rose_sftmix"}
    assert not {"dtm", "seed_soup"} & {r["recipe"] for r in runs}
    assert next(r for r in runs if r["recipe"] == "sft_full")["learning_rate"] == 1.0e-4
    assert len(tiny.method_report_inputs("minorsft")["logs"]) == 17
    outputs = tiny.method_report_outputs("minorsft")
    assert [str(f) for f in outputs] == tiny.method_report_files["minorsft"]
    assert {f.flags["report"].category for f in outputs if is_flagged(f, "report")} == {"MinorSFT"}
    assert len(tiny.method_reports()) == 6 + 7


def test_sftmix_paper_config_has_the_sftmix_report_only(sftmix):
    runs = sftmix.method_report_runs("sftmix")
    # alpaca and ultrachat: 2 models × 2 recipes each; the ablations: 8 runs of llama31_8b on alpaca52k
    assert len(runs) == 16
    inputs = sftmix.method_report_inputs("sftmix")
    assert len(inputs["scores"]) == 8 * 4 + 8 * 2 and len(inputs["logs"]) == 16
    assert "results/mistral_7b/ultrachat200k/runs/sftmix_1ep/scores/arena_hard.json" in inputs["scores"]
    assert sftmix.method_report_runs("minorsft") == []
    assert sftmix.method_reports() == sftmix.method_report_files["sftmix"]
    # hub datasets record no true quality, and the config scores no nll benchmark: no mechanism table
    assert sftmix.mechanism_reports() == []
    assert sftmix.recipe_papers("ntp_confident") == ["SFTMix"] and sftmix.recipe_papers("ntp_3ep") == ["SFT"]
