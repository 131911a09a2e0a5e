"""CompositionPlan (sftlab.plan.compose): what the disperse, train_member, merge and dtm_report jobs read, write and are
told, for configs/tiny.yaml and configs/paper/dtm.yaml, against the values those configs give by hand."""

import json
import re
from types import SimpleNamespace

import pytest
from snakemake.io import is_flagged

from _plan import config_plan

TINY_RUNS = "results/tiny/demo/runs"
DTM_RUNS = "results/llama2-7b/tulu2/runs"


@pytest.fixture(scope="module")
def tiny():
    return config_plan("tiny.yaml")


@pytest.fixture(scope="module")
def dtm():
    return config_plan("paper/dtm.yaml")


def tiny_job(recipe, member=None):
    return SimpleNamespace(model="tiny", dataset="demo", recipe=recipe, member=member)


def dtm_job(recipe, member=None):
    return SimpleNamespace(model="llama2-7b", dataset="tulu2", recipe=recipe, member=member)


@pytest.mark.parametrize("name, matches", [("shards/shard-0", True), ("shards/shard-12", True), ("seeds/seed-3", True),
                                           ("shards/shard-1/seeds/seed-2", True), ("shards/ids", False),
                                           ("model", False), ("seeds/seed-x", False)])
def test_member_pattern_takes_the_member_directories_only(tiny, name, matches):
    assert bool(re.fullmatch(tiny.member_pattern, name)) is matches


def test_a_shard_member_trains_on_its_shard_a_seed_member_on_the_whole_selection(tiny):
    assert tiny.member_ids(tiny_job("dtm", "shards/shard-1")) == f"{TINY_RUNS}/dtm/shards/ids"
    assert tiny.member_ids_file(tiny_job("dtm", "shards/shard-1")) == f"{TINY_RUNS}/dtm/shards/ids/shard-1.ids"
    # seed_soup selects `full` (the default): the full selection's ids, at fraction 1
    full = "results/tiny/demo/selection/full/1.ids"
    assert tiny.member_ids(tiny_job("seed_soup", "seeds/seed-2")) == full
    assert tiny.member_ids_file(tiny_job("seed_soup", "seeds/seed-2")) == full
    assert tiny.member_checkpoints(tiny_job("dtm", "shards/shard-0")) == f"{TINY_RUNS}/dtm/shards/shard-0/checkpoints"


def test_member_training_settings_carry_the_member_seed_and_init_seed(tiny):
    soup = json.loads(tiny.member_training_settings(tiny_job("seed_soup", "seeds/seed-2")))
    assert soup["seed"] == 2 and soup["learning_rate"] == 1.0e-3 and soup["max_length"] == 64
    # init: different: member k draws its LoRA initialisation with training.seed (0) + 1 + k
    different = json.loads(tiny.member_training_settings(tiny_job("dtm_init_different", "shards/shard-1")))
    assert different["init_seed"] == 2 and different["seed"] == 0
    assert "init_seed" not in json.loads(tiny.member_training_settings(tiny_job("dtm", "shards/shard-1")))
    assert tiny.member_run.training(tiny_job("seed_soup", "seeds/seed-1"))["seed"] == 1
    assert tiny.member_run.objective(tiny_job("dtm_minorsft", "shards/shard-0")) == "minorsft"


def test_recipes_differing_in_their_merge_only_merge_the_first_ones_members(tiny):
    # dtm, dtm_fisher and dtm_task_arithmetic have the same member runs: they live under dtm (first by name)
    members = [f"{TINY_RUNS}/dtm/shards/shard-{k}" for k in (0, 1)]
    assert tiny.member_models(tiny_job("dtm_task_arithmetic")) == [f"{m}/model" for m in members]
    assert tiny.member_logs(tiny_job("dtm_fisher")) == [f"{m}/train_log.csv" for m in members]
    # a different initialisation or objective trains its own members
    assert tiny.member_dirs(tiny_job("dtm_init_different")) == [
        f"{TINY_RUNS}/dtm_init_different/shards/shard-{k}" for k in (0, 1)]
    assert tiny.member_dirs(tiny_job("seed_soup")) == [f"{TINY_RUNS}/seed_soup/seeds/seed-{s}" for s in (1, 2)]


def test_fisher_merging_reads_the_pool_and_each_members_shard(tiny):
    ids = [f"{TINY_RUNS}/dtm/shards/ids/shard-{k}.ids" for k in (0, 1)]
    assert tiny.fisher_ids(tiny_job("dtm_fisher")) == ids
    assert tiny.fisher_inputs(tiny_job("dtm_fisher")) == ["results/data/demo/train.jsonl",
                                                          f"{TINY_RUNS}/dtm/shards/ids"]
    assert tiny.fisher_inputs(tiny_job("dtm")) == []
    assert tiny.merge_runs_model(tiny_job("dtm_fisher")) and not tiny.merge_runs_model(tiny_job("dtm"))


def test_merge_args(tiny):
    inputs = [f"{TINY_RUNS}/dtm/shards/shard-{k}/model" for k in (0, 1)]
    assert tiny.merge_args(tiny_job("dtm_task_arithmetic")) == [
        "--inputs", *inputs, "--method", "task_arithmetic", "--merge-space", "delta", "--seed", "0",
        "--params", '{"lambda": 0.3}']
    assert tiny.merge_args(tiny_job("dtm_fisher")) == [
        "--inputs", *inputs, "--method", "fisher", "--merge-space", "delta", "--seed", "0",
        "--params", '{"fisher_samples": 8}', "--fisher-examples", "results/data/demo/train.jsonl",
        "--fisher-ids", *[f"{TINY_RUNS}/dtm/shards/ids/shard-{k}.ids" for k in (0, 1)], "--max-length", "64"]


def test_merge_args_in_adapter_space_read_the_adapters(dtm):
    assert dtm.merge_args(dtm_job("dtm_adapter")) == [
        "--inputs", *[f"{DTM_RUNS}/dtm/shards/shard-{k}/model/adapter" for k in range(4)], "--method", "average",
        "--merge-space", "adapter", "--seed", "0", "--params", "{}"]


def test_a_random_split_runs_no_model(tiny):
    assert tiny.disperse_args(tiny_job("dtm")) == ["--k", "2", "--method", "random", "--seed", "0"]
    assert tiny.disperse_embedder(tiny_job("dtm")) == [] and not tiny.disperse_runs_model(tiny_job("dtm"))


def test_kmeans_with_the_default_embedder_embeds_with_the_base_model(dtm):
    assert dtm.disperse_args(dtm_job("dtm_kmeans")) == [
        "--k", "4", "--method", "kmeans", "--seed", "0", "--base-model", "resources/models/llama2-7b"]
    assert dtm.disperse_embedder(dtm_job("dtm_kmeans")) == ["resources/models/llama2-7b"]
    assert dtm.disperse_runs_model(dtm_job("dtm_kmeans"))


def test_dtm_runs_are_the_composed_runs_and_their_single_baselines(tiny):
    # sft and minorsft: same selection, objective and training as dtm/seed_soup and dtm_minorsft; sft_full is not
    assert [r["recipe"] for r in tiny.dtm_runs] == ["sft", "minorsft", "dtm", "dtm_task_arithmetic", "dtm_fisher",
                                                    "dtm_init_different", "seed_soup", "dtm_minorsft"]
    # the benchmarks of those runs, in report order (sft has them all), each under its lm-eval task where it has one
    assert tiny.dtm_benchmarks() == {b: b for b in ["heldout_em", "mc_demo", "mt_tiny", "ae_tiny", "pref_tiny",
                                                    "ir_tiny", "heldout_nll", "exam_nll"]}


DTM_RECIPES = ["sft", "seed_soup", "dtm", "dtm_k2", "dtm_k8", "dtm_fisher", "dtm_ties", "dtm_dare_ties",
               "dtm_dare_linear", "dtm_task_arithmetic", "dtm_task_arithmetic_lambda1", "dtm_adapter", "dtm_kmeans",
               "dtm_init_different"]


def test_dtm_paper_config_score_files_and_benchmarks(dtm):
    assert [r["recipe"] for r in dtm.dtm_runs] == DTM_RECIPES
    benchmarks = ["arc_challenge", "bbh", "gsm8k", "mmlu", "truthfulqa"]  # sorted per run
    assert dtm.dtm_score_files() == [f"{DTM_RUNS}/{r}/scores/{b}.json" for r in DTM_RECIPES for b in benchmarks]
    assert dtm.dtm_benchmarks() == {"mmlu": "mmlu", "arc_challenge": "arc_challenge", "gsm8k": "gsm8k",
                                    "bbh": "bbh_cot_fewshot", "truthfulqa": "truthfulqa_mc2"}


DTM_TABLES = [f"reports/tables/dtm_{t}.{ext}" for t in ("main", "merge_methods") for ext in ("md", "csv", "tex")]


def test_no_k_figure_with_one_value_of_k(tiny):
    assert tiny.dtm_report_files() == DTM_TABLES  # every tiny DTM recipe has K = 2
    assert tiny.dtm_figure_outputs() == {} and tiny.dtm_figure_args(tiny_job("dtm")) == []


def test_the_k_figure_with_two_values_of_k_or_more(dtm):
    assert dtm.dtm_report_files() == DTM_TABLES + ["reports/figures/dtm_k_ablation.png",
                                                   "reports/figures/dtm_k_ablation.pdf"]
    assert dtm.dtm_figure_args(None) == ["--k-figure", "reports/figures/dtm_k_ablation"]
    outputs = dtm.dtm_figure_outputs()
    assert outputs == {"figure_png": "reports/figures/dtm_k_ablation.png",
                       "figure_pdf": "reports/figures/dtm_k_ablation.pdf"}
    assert outputs["figure_png"].flags["report"].category == "Disperse-Then-Merge"
    assert not is_flagged(outputs["figure_pdf"], "report")


def test_no_dtm_report_without_a_dtm_recipe():
    sftmix = config_plan("paper/sftmix.yaml")
    assert sftmix.dtm_runs == [] and sftmix.dtm_report_files() == []
