"""sftlab.plan.benchmarks: what the exam, generation, judge and calibration jobs read, write and ask for, on the tiny
config and the SFTMix paper config, against paths and settings worked out from the config files by hand."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod, ExecMode

from sftlab.benchmarks import BENCHMARK_TYPES
from sftlab.config import load
from sftlab.evaluation.exams import run_benchmarks
from sftlab.plan import Plan

ROOT = Path(__file__).resolve().parents[1]
CONDA_ENV = str(ROOT / "envs" / "sftlab.yaml")
VLLM_ENV = str(ROOT / "envs" / "vllm.yaml")


def plan_of(path, workflow=None):
    cfg = load(ROOT / path)
    return Plan(cfg, root=ROOT, workflow=workflow)


@pytest.fixture(scope="module")
def tiny():
    return plan_of("configs/tiny.yaml")


@pytest.fixture(scope="module")
def paper():
    return plan_of("configs/paper/sftmix.yaml")


def wc(model="tiny", dataset="demo", recipe="sft", benchmark=None):
    return SimpleNamespace(model=model, dataset=dataset, recipe=recipe, benchmark=benchmark)


def test_each_scoring_rule_claims_its_types(tiny, paper):
    assert tiny.benchmarks_scored_by("evaluate") == ["heldout_em", "mc_demo"]
    assert tiny.benchmarks_scored_by("log_likelihood") == ["heldout_nll", "exam_nll"]
    assert tiny.benchmarks_scored_by("judge") == ["mt_tiny", "ae_tiny", "pref_tiny"]
    assert tiny.benchmarks_scored_by("implicit_reward") == ["ir_tiny"]
    assert tiny.benchmarks_gathered() == ["mt_tiny", "ae_tiny", "pref_tiny", "ir_tiny"]
    assert paper.benchmarks_scored_by("judge") == ["mtbench", "alpacaeval2", "arena_hard"]
    assert paper.benchmarks_scored_by("evaluate") == ["ifeval"]
    assert paper.benchmarks_gathered() == ["mtbench", "alpacaeval2", "ifeval", "arena_hard"]
    # MT-Bench and the preference set answer in JSONL, AlpacaEval in JSON (its model_outputs file)
    assert sorted(tiny.answer_formats().split("|")) == ["json", "jsonl"]


def test_exam_inputs_and_the_evaluate_job(tiny, paper):
    assert tiny.exam_inputs("demo", "heldout_em") == {"heldout": "results/data/demo/heldout.jsonl",
                                                      "train": "results/data/demo/train.jsonl"}
    assert tiny.exam_inputs("demo", "mt_tiny") == {"data": "results/benchmarks/mt_tiny"}
    # sft is in every tiny experiment: its exams are the two scored in-process; less_25 only in `selection`
    assert tiny.run_exam_names(wc()) == ["heldout_em", "mc_demo"]
    assert tiny.run_exam_names(wc(recipe="less_25")) == ["heldout_em"]
    assert tiny.exams_pool_files(wc()) == ["results/data/demo/heldout.jsonl", "results/data/demo/train.jsonl"]
    assert tiny.exams_gathered_files(wc()) == []
    assert tiny.exams_local_files(wc()) == ["workflow/benchmarks/mc_demo/dev.jsonl",
                                            "workflow/benchmarks/mc_demo/test.jsonl"]
    assert tiny.exams_local_files(wc(recipe="less_25")) == []
    assert tiny.exam_modules(wc()) == ("sftlab.benchmarks.exact_match", "sftlab.benchmarks.lm_eval")
    assert tiny.exam_cache_dir(wc()) == "results/tiny/demo/runs/sft/exam_cache"
    # IFEval gathers its prompts (rule benchmark_data) and reads no pool file
    run = wc("llama31_8b", "alpaca52k", "ntp_3ep")
    assert paper.run_exam_names(run) == ["ifeval"]
    assert paper.exams_gathered_files(run) == ["results/benchmarks/ifeval"]
    assert paper.exams_pool_files(run) == []
    # an ablation run is scored on MT-Bench and AlpacaEval alone: no exam
    assert paper.run_exam_names(wc("llama31_8b", "alpaca52k", "sftmix_mu0.1")) == []


def test_exams_arg_names_each_exam_file_in_the_job_output(tiny):
    exams = json.loads(tiny.exams_arg(wc(recipe="sftmix")))
    out = "results/tiny/demo/runs/sftmix/exams"
    assert sorted(exams) == ["heldout_em", "mc_demo"]
    assert exams["heldout_em"] == {
        "config": {"type": "exact_match", "max_new_tokens": 8, "batch_size": 16},
        "inputs": {"heldout": "results/data/demo/heldout.jsonl", "train": "results/data/demo/train.jsonl"},
        "scores": f"{out}/heldout_em.json", "answers": f"{out}/heldout_em.jsonl"}
    assert exams["mc_demo"]["config"]["data_dir"] == "workflow/benchmarks/mc_demo"
    assert exams["mc_demo"]["scores"] == f"{out}/mc_demo.json"


def test_exam_results_come_from_the_run_that_scores_them(tiny):
    assert tiny.run_exams_dir(wc(recipe="less_25", benchmark="heldout_em")) == "results/tiny/demo/runs/less_25/exams"
    with pytest.raises(WorkflowError, match="mc_demo scores of run tiny × demo × less_25"):
        tiny.run_exams_dir(wc(recipe="less_25", benchmark="mc_demo"))
    job = wc(benchmark="mc_demo")
    assert tiny.exam_file("scores")(job, ["results/tiny/demo/runs/sft/exams"]) == \
        "results/tiny/demo/runs/sft/exams/mc_demo.json"
    assert tiny.exam_file("answers")(job, ["X/exams"]) == "X/exams/mc_demo.jsonl"


def test_implicit_reward_and_log_likelihood_jobs(tiny):
    exam = json.loads(tiny.implicit_reward_exam(wc(recipe="dpo_sft", benchmark="ir_tiny")))
    assert exam == {"ir_tiny": {
        "config": {"type": "implicit_reward", "dataset": "demo", "max_length": 64, "n_resamples": 200, "beta": 0.1,
                   "batch_size": 8, "seed": 0},
        "inputs": {"reference": "resources/models/tiny", "data": "results/benchmarks/ir_tiny"},
        "scores": "results/tiny/demo/runs/dpo_sft/scores/ir_tiny.json"}}
    # held-out items come from the run's dataset, an exam's items from its data_dir's test split
    assert tiny.scored_items(wc(benchmark="heldout_nll")) == "results/data/demo/heldout.jsonl"
    assert tiny.scored_items(wc(benchmark="exam_nll")) == "workflow/benchmarks/mc_demo/test.jsonl"
    exam = json.loads(tiny.log_likelihood_exam_arg(wc(recipe="minorsft", benchmark="exam_nll")))["exam_nll"]
    assert exam["inputs"] == {"base": "results/tiny/demo/base_logprobs/exam_nll.parquet",
                              "items": "workflow/benchmarks/mc_demo/test.jsonl"}
    assert exam["scores"] == "results/tiny/demo/runs/minorsft/scores/exam_nll.json"
    assert exam["answers"] == "results/tiny/demo/runs/minorsft/answers/exam_nll.jsonl"
    # the base model's log-probs depend on the items and their length, not on the bootstrap (n_resamples, seed)
    assert json.loads(tiny.base_scoring_settings(wc(benchmark="heldout_nll"))) == {
        "items": "heldout", "max_length": 64, "batch_size": 8}


def test_benchmark_data_reads_fixtures_or_pairs(tiny):
    assert tiny.benchmark_sources(wc(benchmark="pref_tiny")) == {"pairs": "results/data/demo/pairs.jsonl"}
    assert tiny.benchmark_pairs_arg(wc(benchmark="pref_tiny")) == ["--pairs", "results/data/demo/pairs.jsonl"]
    assert tiny.benchmark_pairs_arg(wc(benchmark="ae_tiny")) == []
    # the gathered files do not depend on the judge nor on generation settings
    assert json.loads(tiny.benchmark_data_settings(wc(benchmark="mt_tiny"))) == {
        "type": "mtbench", "data_dir": "workflow/benchmarks/mt_bench_demo", "limit": 4}


def test_generation(tiny, paper):
    assert tiny.answers_path(wc(benchmark="mt_tiny")) == "results/tiny/demo/runs/sft/answers/mt_tiny.jsonl"
    assert tiny.answers_path(wc(benchmark="ae_tiny")) == "results/tiny/demo/runs/sft/answers/ae_tiny.json"
    assert tiny.generation_options(wc(benchmark="ae_tiny")) == [
        "--backend", "transformers", "--batch-size", "8", "--max-new-tokens", "8", "--seed", "0",
        "--temperature", "0.0"]
    assert tiny.generation_env(wc(benchmark="mt_tiny")) == CONDA_ENV
    assert paper.generation_env(wc("llama31_8b", "alpaca52k", "ntp_3ep", "arena_hard")) == CONDA_ENV


@pytest.mark.parametrize("methods, env", [({DeploymentMethod.CONDA}, VLLM_ENV), (set(), None)])
def test_vllm_generates_only_under_conda_deployment(methods, env):
    workflow = SimpleNamespace(deployment_settings=SimpleNamespace(deployment_method=methods),
                               executor_plugin=object(), exec_mode=ExecMode.DEFAULT)
    plan = plan_of("configs/paper/sftmix.yaml", workflow=workflow)
    job = wc("mistral_7b", "ultrachat200k", "ntp_1ep", "mtbench")
    if env:
        assert plan.generation_env(job) == env
    else:
        with pytest.raises(WorkflowError, match=r"config key benchmarks\.mtbench\.backend: vllm generates .*--sdm conda"):
            plan.generation_env(job)


def test_judge_of_a_config_model_runs_from_its_materialised_directory(tiny):
    model = {"source": "random", "hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
             "seed": 0, "vocab_size": 512}
    assert tiny.cfg["models"]["tiny"] == model
    assert tiny.judge_backend_config("tiny_judge") == {
        "backend": "hf", "model": "resources/models/tiny", "batch_size": 16, "max_tokens": 4, "demo_quality": True,
        "dtype": "auto", "fingerprint": hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:12]}
    job = wc(benchmark="mt_tiny")
    assert tiny.judge_name(job) == "tiny_judge"
    assert tiny.judge_model_input(job) == ["resources/models/tiny"]
    assert tiny.local_judge_files(job) == []
    assert tiny.judge_cache(job) == "results/judge_cache/tiny_judge.jsonl"
    assert json.loads(tiny.judge_config(job)) == tiny.judge_backend_config("tiny_judge")
    # MT-Bench has no annotator; AlpacaEval's annotator and the bootstrap's settings are the judgment's options
    assert tiny.judge_options(job) == ["--n-resamples", "200", "--seed", "0"]
    assert tiny.judge_options(wc(benchmark="ae_tiny")) == [
        "--annotator", "weighted_alpaca_eval_gpt4_turbo", "--n-resamples", "200", "--seed", "0"]


def test_api_judge_settings_name_the_key_variable_never_its_value(paper, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    job = wc("llama31_8b", "alpaca52k", "ntp_3ep", "mtbench")
    settings = paper.judge_settings(job)
    assert settings == {"seed": 0, "n_resamples": 2000, "paper_judge": "gpt-4-0613", "judge": {
        "backend": "openai", "model": "gpt-4.1-2025-04-14", "api_key_env": "OPENAI_API_KEY", "demo_quality": False,
        "base_url": "https://api.openai.com/v1", "max_concurrency": 8, "max_retries": 6, "timeout_s": 120}}
    assert "sk-secret" not in paper.judge_config(job)
    assert paper.judge_model_input(job) == [] and paper.local_judge_files(job) == []
    assert paper.judge_options(job) == ["--n-resamples", "2000", "--paper-judge", "gpt-4-0613", "--seed", "0"]


def test_a_local_hf_judge_directory_is_read_as_files(tmp_path):
    cfg = load(ROOT / "configs/tiny.yaml")
    cfg["judges"]["tiny_judge"]["model"] = "workflow/benchmarks/mc_demo"  # a directory, not a config model
    plan = Plan(cfg, root=ROOT)
    job = wc(benchmark="mt_tiny")
    assert plan.judge_model_input(job) == []
    assert plan.local_judge_files(job) == ["workflow/benchmarks/mc_demo/dev.jsonl",
                                           "workflow/benchmarks/mc_demo/test.jsonl"]
    assert "fingerprint" not in plan.judge_backend_config("tiny_judge")


def test_check_judge_keys_before_the_first_judge_call(paper, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def job(rule, benchmark="mtbench"):
        return SimpleNamespace(rule=SimpleNamespace(name=rule),
                               wildcards=wc("llama31_8b", "alpaca52k", "ntp_3ep", benchmark))

    paper.check_judge_keys([job("generate"), job("evaluate", "ifeval")])  # no judge call planned: no key needed
    for rule in ("judge", "judge_calibration"):
        with pytest.raises(WorkflowError, match=r"config key judges\.gpt41\.api_key_env: .*benchmark mtbench") as exc:
            paper.check_judge_keys([job("generate"), job(rule)])
        assert "OPENAI_API_KEY" not in str(exc.value)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    paper.check_judge_keys([job("judge")])


def test_check_judge_keys_lets_a_keyless_server_or_a_local_judge_pass(tiny, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = load(ROOT / "configs/paper/sftmix.yaml")
    cfg["benchmarks"]["mtbench"]["judge"] = "qwen72b"  # api_key_env: null
    plan = Plan(cfg, root=ROOT)
    judge = SimpleNamespace(rule=SimpleNamespace(name="judge"),
                            wildcards=wc("llama31_8b", "alpaca52k", "ntp_3ep", "mtbench"))
    plan.check_judge_keys([judge])
    tiny.check_judge_keys([SimpleNamespace(rule=SimpleNamespace(name="judge"), wildcards=wc(benchmark="mt_tiny"))])


def test_calibrations(tiny, paper):
    assert tiny.benchmarks_calibrated() == ["mt_tiny", "ae_tiny"]
    assert tiny.calibration_summaries() == ["results/calibration/mt_tiny/summary.json",
                                            "results/calibration/ae_tiny/summary.json"]
    assert tiny.calibration_local_files(wc(benchmark="mt_tiny")) == [
        "workflow/benchmarks/calibration_demo/mt_bench/gpt-4_single.jsonl"]
    assert tiny.calibration_local_files(wc(benchmark="ae_tiny")) == [
        f"workflow/benchmarks/calibration_demo/alpaca_eval/{m}/weighted_alpaca_eval_gpt4_turbo/annotations.json"
        for m in ("gpt4_1106_preview", "vicuna-7b", "falcon-7b-instruct")]
    assert json.loads(tiny.calibration_config(wc(benchmark="mt_tiny")))["items"] == 2
    assert tiny.calibration_judge_options(wc(benchmark="ae_tiny")) == [
        "--annotator", "weighted_alpaca_eval_gpt4_turbo", "--seed", "0"]
    assert tiny.calibration_judge_options(wc(benchmark="mt_tiny")) == ["--seed", "0"]
    # SFTMix's config calibrates AlpacaEval 2 only (MT-Bench's calibration is commented out), downloaded: no local file
    assert paper.benchmarks_calibrated() == ["alpacaeval2"]
    assert paper.calibration_local_files(wc(benchmark="alpacaeval2")) == []
    paper.check_calibrations()


def test_a_calibration_without_a_pinned_download_is_refused_at_plan_time():
    cfg = load(ROOT / "configs/paper/sftmix.yaml")
    cfg["benchmarks"]["mtbench"]["calibration"] = {"items": 10, "seed": 0}
    with pytest.raises(WorkflowError, match=r"config key benchmarks\.mtbench\.calibration\.sha256"):
        Plan(cfg, root=ROOT).check_calibrations()


def test_a_calibration_serves_only_a_benchmark_an_experiment_scores():
    cfg = load(ROOT / "configs/tiny.yaml")
    cfg["experiments"]["judged"]["benchmarks"] = ["mt_tiny", "pref_tiny"]
    assert Plan(cfg, root=ROOT).benchmarks_calibrated() == ["mt_tiny"]


def test_judged_reports(tiny, paper):
    run = "results/tiny/demo/runs/sft/scores"
    assert tiny.judged_scores() == [f"{run}/ae_tiny.json", f"{run}/mt_tiny.json", f"{run}/pref_tiny.json"]
    assert tiny.mtbench_category_scores() == [f"{run}/mt_tiny.json"]
    tables = [f"reports/tables/{t}.{ext}" for t in ("judges", "judged_comparisons", "judge_calibration")
              for ext in ("md", "csv", "tex")]
    figure = ["reports/figures/mtbench_categories.png", "reports/figures/mtbench_categories.pdf"]
    assert tiny.judged_report_files() == tables + figure
    # SFTMix: 2 models x 2 recipes on each of 2 datasets judged on 3 benchmarks; 8 ablations (the grids of mu and
    # alpha give 2 recipes each) on MT-Bench and AlpacaEval 2 alone; MT-Bench scores every run, 16
    assert len(paper.judged_scores()) == 8 * 3 + 8 * 2
    assert len(paper.mtbench_category_scores()) == 16
    ablation = "results/llama31_8b/alpaca52k/runs/sftmix_mu0.1/scores"
    assert f"{ablation}/alpacaeval2.json" in paper.judged_scores()
    assert f"{ablation}/arena_hard.json" not in paper.judged_scores()
    assert paper.judged_report_files() == tables + figure


def test_judged_reports_follow_what_is_judged():
    cfg = load(ROOT / "configs/tiny.yaml")
    del cfg["experiments"]["judged"]
    plan = Plan(cfg, root=ROOT)
    # nothing judged, no calibration served: no judges table, no figure
    assert plan.judged_scores() == [] and plan.benchmarks_calibrated() == []
    assert plan.judged_report_files() == []
    # AlpacaEval alone: the judges tables, no MT-Bench figure
    cfg["experiments"]["main"]["benchmarks"] = ["heldout_em", "ae_tiny"]
    assert plan.judged_report_files() == [f"reports/tables/{t}.{ext}"
                                          for t in ("judges", "judged_comparisons", "judge_calibration")
                                          for ext in ("md", "csv", "tex")]
