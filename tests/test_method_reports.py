"""SFTMix and MinorSFT reports: best-setting choice, the accuracy table, the paper rows, ablations, figures."""

import math

import pandas as pd
import pytest

from sftlab.benchmarks import BENCHMARK_TYPES, BenchmarkType
from sftlab.report.methods import (
    DELTA,
    best_settings,
    deviation_curves,
    minorsft_accuracy_table,
    minorsft_grid,
    minorsft_heatmap,
    sftmix_ablation_table,
    sftmix_main_table,
)
from sftlab.report.papers import paper_numbers
from sftlab.report.tables import MISSING, load_scores
from test_report import write_score


def run(recipe, objective, lr=1e-5, dataset="fiq", selection=None):
    return {"model": "qwen", "dataset": dataset, "recipe": recipe, "objective": objective,
            "selection": selection or {"name": "full", "fraction": 1.0}, "learning_rate": lr}


GRID_RUNS = [
    run("sft_lr1e-05", {"name": "ntp"}, 1e-5), run("sft_lr2e-05", {"name": "ntp"}, 2e-5),
    run("minor_b0.1_lr1e-05", {"name": "minorsft", "beta": 0.1}, 1e-5),
    run("minor_b0.2_lr1e-05", {"name": "minorsft", "beta": 0.2}, 1e-5),
    run("minor_b0.1_lr2e-05", {"name": "minorsft", "beta": 0.1}, 2e-5),
    run("dpo_b0.1_lr1e-05", {"name": "dpo_sft", "beta": 0.1}, 1e-5),
    # the same settings on a second dataset
    run("minor_b0.1_lr1e-05", {"name": "minorsft", "beta": 0.1}, 1e-5, dataset="fe"),
    run("minor_b0.2_lr1e-05", {"name": "minorsft", "beta": 0.2}, 1e-5, dataset="fe"),
    # not a MinorSFT-paper run: another selection
    run("sft_half", {"name": "ntp"}, 1e-5, selection={"name": "random", "fraction": 0.5, "seed": 0}),
]
# (dataset, recipe) → exam accuracy; minorsft β=0.2: mean (60 + 40) / 2 = 50 beats β=0.1: (55 + 44) / 2 = 49.5
ACC = {("fiq", "sft_lr1e-05"): 50.0, ("fiq", "sft_lr2e-05"): 52.0, ("fiq", "minor_b0.1_lr1e-05"): 55.0,
       ("fiq", "minor_b0.2_lr1e-05"): 60.0, ("fiq", "minor_b0.1_lr2e-05"): 30.0, ("fe", "minor_b0.1_lr1e-05"): 44.0,
       ("fe", "minor_b0.2_lr1e-05"): 40.0, ("fiq", "sft_half"): 99.0}


@pytest.fixture
def grid(tmp_path):
    paths = [write_score(tmp_path, "qwen", d, r, "exam", metric="acc", value=v, ci_low=v - 5, ci_high=v + 5, n=100)
             for (d, r), v in ACC.items()]
    return minorsft_grid(GRID_RUNS, load_scores(paths), ["exam"])


def test_grid_keeps_full_pool_runs_of_the_three_methods(grid):
    assert "sft_half" not in set(grid["recipe"])
    assert len(grid) == 8
    dpo = grid[grid["recipe"] == "dpo_b0.1_lr1e-05"].iloc[0]
    assert dpo["method"] == "DPO-SFT" and math.isnan(dpo["exam"]) and dpo["exam cell"] == MISSING


def test_best_setting_is_the_highest_mean_over_datasets(grid):
    best = best_settings(grid, ["exam"]).set_index("method")
    assert (best.loc["MinorSFT", "beta"], best.loc["MinorSFT", "learning_rate"]) == (0.2, 1e-5)
    assert best.loc["MinorSFT", "mean"] == pytest.approx(50.0)
    assert best.loc["SFT", "learning_rate"] == 2e-5
    # DPO-SFT has no score at all: its only setting stands, with n/a cells
    assert best.loc["DPO-SFT", "beta"] == 0.1 and math.isnan(best.loc["DPO-SFT", "mean"])


def test_accuracy_table_rows_are_methods_at_their_best_setting(grid):
    table = minorsft_accuracy_table(grid, ["exam"]).set_index("method")
    assert list(table.index) == ["SFT", "DPO-SFT", "MinorSFT"]
    assert table.loc["MinorSFT", "fiq / exam"] == "60.00 [55.0, 65.0]"
    assert table.loc["MinorSFT", "fe / exam"] == "40.00 [35.0, 45.0]"
    assert table.loc["SFT", "beta"] == "—" and table.loc["SFT", "fiq / exam"] == "52.00 [47.0, 57.0]"
    assert table.loc["SFT", "fe / exam"] == MISSING and table.loc["DPO-SFT", "fiq / exam"] == MISSING


def test_minorsft_figures_are_written(grid, tmp_path):
    files = minorsft_heatmap(grid, "exam", tmp_path / "grid")
    log = pd.DataFrame({"step": [0, 1, 2, 4], "loss": [None, 2.0, 1.5, None], "deviation": [0.0, None, None, 0.3]})
    files += deviation_curves({("qwen", "fiq", "sft_lr2e-05"): log}, {("qwen", "fiq", "sft_lr2e-05"): "SFT"},
                              tmp_path / "dev")
    assert all(f.stat().st_size > 1000 for f in files) and len(files) == 4


SFTMIX_RUNS = [
    {"model": "llama", "dataset": "alpaca", "recipe": "ntp", "objective": {"name": "ntp"},
     "selection": {"name": "full", "fraction": 1.0}, "learning_rate": 2e-6},
    {"model": "llama", "dataset": "alpaca", "recipe": "sftmix",
     "objective": {"name": "sftmix", "mu": 0.2, "alpha": 0.5, "mixup_detach": False, "pairing": "confidence"},
     "selection": {"name": "full", "fraction": 1.0}, "learning_rate": 2e-6},
    {"model": "llama", "dataset": "alpaca", "recipe": "sftmix_mu0.5",
     "objective": {"name": "sftmix", "mu": 0.5, "alpha": 0.5, "mixup_detach": False, "pairing": "confidence"},
     "selection": {"name": "full", "fraction": 1.0}, "learning_rate": 2e-6},
    {"model": "llama", "dataset": "alpaca", "recipe": "ntp_confident", "objective": {"name": "ntp"},
     "selection": {"name": "confident", "fraction": 0.5}, "learning_rate": 2e-6},
]


def test_sftmix_main_table_puts_paper_numbers_beside_ours(tmp_path):
    paths = [write_score(tmp_path, "llama", "alpaca", "sftmix", "mt", metric="score", value=4.7, ci_low=4.5,
                         ci_high=4.9, n=160),
             write_score(tmp_path, "llama", "alpaca", "sftmix", "ae", metric="win_rate", value=5.5, ci_low=4.0,
                         ci_high=7.0, n=805, length_controlled={"value": 11.25})]
    table = sftmix_main_table(SFTMIX_RUNS, load_scores(paths), ["mt", "ae"], {"mt": "mtbench", "ae": "alpacaeval"},
                              paper_numbers("sftmix"))
    ours = table[(table["source"] == "ours") & (table["method"] != DELTA)].set_index("recipe")
    assert list(ours.index) == ["ntp", "sftmix"]  # ablation variants stay out of the main table
    assert ours.loc["sftmix", "method"] == "SFTMix" and ours.loc["sftmix", "ae LC"] == "11.25"
    assert ours.loc["ntp", "mt"] == MISSING
    paper = table[(table["source"] != "ours") & (table["method"] != DELTA)]
    assert len(paper) == 4 and set(paper["source"]) == {
        "SFTMix (arXiv 2410.05248), secondary; judged by gpt-4-0613 (mt_bench), "
        "gpt-4-1106-preview (alpacaeval2_wr, alpacaeval2_lc_wr)"}  # the paper's numbers name their judges
    row = paper[(paper["model"] == "Llama-3.1-8B") & (paper["method"] == "SFTMix")].iloc[0]
    assert (row["mt"], row["ae"], row["ae LC"]) == ("4.58", "4.90", "10.32")
    # the paper's differences beside ours: 4.5825 − 4.3625, 4.9031 − 4.0714, 10.3195 − 8.6528; ours n/a without NTP
    deltas = table[table["method"] == DELTA].set_index(["source", "model"])
    paper_delta = deltas.loc[(row["source"], "Llama-3.1-8B")]
    assert (paper_delta["mt"], paper_delta["ae"], paper_delta["ae LC"]) == ("0.22", "0.83", "1.67")
    assert deltas.loc[("ours", "llama"), "recipe"] == "sftmix − ntp" and deltas.loc[("ours", "llama"), "mt"] == MISSING


def test_sftmix_difference_of_ours_is_under_one_judge_only(tmp_path):
    judge = {"id": "openai:j", "model": "j", "prompt_version": "v1", "decoding": [{"temperature": 0.0}]}
    paths = [write_score(tmp_path, "llama", "alpaca", recipe, bench, metric="score", value=value, judge=j)
             for recipe, bench, value, j in [("ntp", "mt", 4.0, judge), ("sftmix", "mt", 4.5, judge),
                                             ("ntp", "ae", 5.0, judge), ("sftmix", "ae", 6.0, {**judge, "id": "x:k"})]]
    table = sftmix_main_table(SFTMIX_RUNS, load_scores(paths), ["mt", "ae"], {"mt": "mtbench", "ae": "alpacaeval"})
    delta = table[table["method"] == DELTA].iloc[0]
    assert (delta["mt"], delta["ae"]) == ("0.50", "n/a (judges differ)")
    # the column that mixes judges marks its cells
    assert table[table["recipe"] == "sftmix"].iloc[0]["ae"] == "6.00 (J2)"


def test_sftmix_ablation_table_lists_every_variant_with_its_settings():
    table = sftmix_ablation_table(SFTMIX_RUNS, load_scores([]), ["mt"]).set_index("recipe")
    assert list(table.index) == ["ntp", "sftmix", "sftmix_mu0.5", "ntp_confident"]
    assert table.loc["sftmix_mu0.5", "mu"] == "0.5" and table.loc["ntp", "mu"] == "—"
    assert table.loc["ntp_confident", "selection"] == "confident 0.5"
    assert (table["mt"] == MISSING).all()


def test_paper_columns_without_a_matching_benchmark_still_show_the_papers_numbers():
    table = sftmix_main_table(SFTMIX_RUNS, load_scores([]), ["exam"], {"exam": "lm_eval"}, paper_numbers("sftmix"))
    assert list(table.columns) == ["model", "dataset", "method", "recipe", "exam", "mt_bench", "alpacaeval2_wr",
                                   "alpacaeval2_lc_wr", "source"]
    ours, paper = table[table["source"] == "ours"], table[table["source"] != "ours"]
    assert (ours["mt_bench"] == MISSING).all() and (paper["exam"] == MISSING).all()
    assert list(paper["mt_bench"]) == ["4.36", "4.58", "4.62", "4.91", "0.22", "0.29"]  # then the paper's Δ


def test_a_new_benchmark_type_declares_its_paper_columns_in_its_own_module(monkeypatch):
    """A type registered elsewhere (here: in the test) carries the paper's numbers by its declared keys alone."""

    class ChatArena(BenchmarkType):
        scored_by = "judge"
        paper_key = "alpacaeval2_wr"
        paper_lc_key = "alpacaeval2_lc_wr"

    monkeypatch.setitem(BENCHMARK_TYPES, "chat_arena", ChatArena)
    table = sftmix_main_table(SFTMIX_RUNS, load_scores([]), ["arena"], {"arena": "chat_arena"},
                              paper_numbers("sftmix"))
    # the AlpacaEval keys sit in the new type's columns; MT-Bench's, with no benchmark of ours, gets its own
    assert list(table.columns) == ["model", "dataset", "method", "recipe", "arena", "arena LC", "mt_bench", "source"]
    paper = table[(table["source"] != "ours") & (table["method"] != DELTA)]
    assert list(paper["arena"]) == ["4.07", "4.90", "4.36", "4.54"]
    assert list(paper["arena LC"]) == ["8.65", "10.32", "9.18", "9.50"]
