"""Planning at paper scale: `snakemake -n --profile profiles/slurm --configfile configs/paper/<each>.yaml` plans every
job offline, with the job counts worked out from each config by hand, and the Slurm profile's settings reach
Snakemake (the workflow profile must not override them)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest
import yaml

from _plan import FIXTURE, PAPER_CONFIGS, ROOT, dry_run_jobs, job_counts, job_resources, offline_env, planned
from sftlab.config import resources

# Job counts per rule, worked out from each config. tests/fixtures/paper_plan.yaml: 2 models × 2 datasets;
# main: 7 recipes on all 4 pairs (28 runs × 3 benchmarks), grid: 2 β × 3 lr = 6 runs on llama × alpaca (× 1);
# selections per pair: full, random-s0/0.5, confident/0.5; every pair has a confidence user (sftmix, confident),
# one evaluate job per run scores its exams (exam_results copies each exam's Scores file out of it);
# so one reference run, confidence table and t-SNE figure each (the reference run is the NTP recipe's run: the same
# training, tests/test_shared_runs.py); ref_logprobs once per pair.
EXPECTED = {
    "paper_plan.yaml": {
        "materialise_model": 2, "prepare_data": 2, "ref_logprobs": 4, "select_data": 3 * 4,
        "train_reference": 4, "confidence": 4, "tsne": 4, "train": 28 + 6 - 4, "evaluate": 28 + 6,
        "exam_results": 28 * 3 + 6,
        "build_report": 1, "report_sftmix": 1, "report_minorsft": 1, "cost_report": 1, "all": 1,
    },
    # minorsft: 1 model × 2 datasets; sweeps 4 (SFT lr) + 12 (DPO-SFT β × lr) + 12 (MinorSFT β × lr) = 28 runs per
    # dataset, × 2 benchmarks; one full selection and one ref_logprobs per dataset
    "minorsft.yaml": {
        "materialise_model": 1, "prepare_data": 2, "ref_logprobs": 2, "select_data": 2, "train": 56,
        "evaluate": 56, "exam_results": 112, "build_report": 1, "report_minorsft": 1, "cost_report": 1, "all": 1,
    },
    # sftmix: 2 models × 2 datasets × {NTP, SFTMix} = 8 runs, + 8 ablation runs on llama × alpaca (μ 2, α 2, detach,
    # random pairing, confident, unconfident); 16 runs × 2 judged benchmarks, and IFEval and Arena-Hard (judged) on
    # the 8 main runs; a reference run per pair (every pair has an SFTMix run); selections: full per pair + confident
    # and unconfident on llama × alpaca; on Alpaca-52K the reference run is ntp_3ep's run (train_reference)
    "sftmix.yaml": {
        "benchmark_data": 4, "materialise_model": 2, "prepare_data": 2, "ref_logprobs": 4, "select_data": 6,
        "reference_run": 2, "train_reference": 2, "train": 14, "confidence": 4, "generate": 40, "judge": 40, "evaluate": 8, "exam_results": 8, "tsne": 4,
        "build_report": 1,
        "judges_table": 1, "mtbench_categories": 1, "report_sftmix": 1, "cost_report": 1, "all": 1,
        "calibration_data": 1, "judge_calibration": 1,
    },
    # dtm: 1 pair; sft (1 train) + 13 merged runs: soup (4 seeds), dtm (K 4; shared with adapter space, the 5
    # merge methods and task arithmetic at λ = 1), kmeans (K 4), K 2, K 8, different init (K 4) → 4 + 4 + 4 + 2 + 8 +
    # 4 = 26 members, 13 merges, 5 disperse jobs; 14 runs × 5 benchmarks
    "dtm.yaml": {
        "materialise_model": 1, "prepare_data": 1, "ref_logprobs": 1, "select_data": 1, "disperse": 5, "train": 1,
        "train_member": 26, "evaluate": 14, "exam_results": 70, "merge": 13, "build_report": 1, "dtm_report": 1, "cost_report": 1, "all": 1,
    },
    # less and rose: counts read off the dry run (shards × checkpoints of gradient features, validation features per
    # validation set × shots × checkpoint) and checked against their structure, not derived line by line; the
    # warmup's random 5% (seed 0) is a selection of its own beside the random baseline's (seed 1), one per warmup.
    # LESS-T adds Llama-2-13B and Mistral-7B (2 models, 2 ref_logprobs), each a random 5% of its own (2 selections)
    # and 2 × (random + 3 LESS-T) = 8 runs scored on 11 benchmarks each (44); Llama-2-7B's LESS selections serve them,
    # so no warmup, gradient or influence job more. The LESS table's baselines at 5% on Llama-2-7B: BM25, DSIR, RDS × 3
    # validation sets = 9 runs (9 selections, 33 lm-eval scores); BM25 and DSIR score the pool on the CPU (6
    # lexical_scores), RDS from one pass of last-token hidden states (1 pool_hidden_states, 3 representation_scores)
    "less.yaml": {
        "materialise_model": 3, "prepare_data": 4, "ref_logprobs": 3, "select_data": 29, "validation_set": 3,
        "train": 34, "warmup": 1, "evaluate": 34, "exam_results": 176, "grad_features": 32, "validation_grad_features": 12,
        "lexical_scores": 6, "pool_hidden_states": 1, "representation_scores": 3,
        "gather_grad_features": 4, "influence": 3, "build_report": 1, "selection_report": 1, "cost_report": 1, "all": 1,
    },
    # rose: as above, plus the three test-pair datasets and six preference benchmarks (3 judged: generate + judge,
    # 3 implicit-reward) on each of the 60 runs
    "rose.yaml": {
        "materialise_model": 2, "prepare_data": 7, "ref_logprobs": 2, "select_data": 62, "validation_set": 3,
        "train": 60, "warmup": 2, "evaluate": 60, "exam_results": 60, "grad_features": 64, "validation_grad_features": 56,
        "gather_grad_features": 8, "influence": 14, "benchmark_data": 6, "generate": 180, "judge": 180,
        "implicit_reward": 180, "build_report": 1, "judges_table": 1, "selection_report": 1, "cost_report": 1, "all": 1,
    },
    # all: the union of the five above with what they share planned once, plus the three combined recipes
    # (rose_sftmix on llama31 × less_pool, dtm_minorsft on llama2 × tulu2, sftmix_ambiguous on llama31 × alpaca52k).
    # models 2 + 1 + 2 + 1 + 1 − 1 shared (Llama-2-7B in the Tulu format: LESS, ROSE) = 6 (Llama-3.1-8B in ROSE's and
    # SFTMix's formats, Llama-2-7B in the Tulu and DTM's Alpaca format); datasets 2 + 2 + 7 + 4 + 1 − 1
    # (the LESS pool) = 15; ref_logprobs: the 9 model × dataset pairs with runs; reference runs: sftmix's 4 + llama31 ×
    # less_pool (rose_sftmix), of which sftmix's 2 on Alpaca-52K are ntp_3ep's runs (train_reference); selections: sftmix 6 + ambiguous + minorsft 2 + llama2 × less_pool 44 (ROSE's 32 and
    # LESS's 18 share full and random at 4 fractions; the warmup's random 5% is its own, seed 0 against the baseline's
    # seed 1) + llama31 30 + dtm 1 = 84; train: 16 + 1 + 56 + 43 + 29 + 1 + 1 = 147, 2 of them train_reference; members 26 + 4, merges 13 + 1, disperse 5 + 1; evaluate (lm-eval):
    # minorsft 112 + mmlu on ROSE's 60 runs and rose_sftmix + LESS's 99 minus the 5 mmlu scores ROSE's llama2 full /
    # random runs share + dtm 70 + 5 = 342, + sftmix's 8 IFEval = 350 exam_results, scored by 152 evaluate jobs (one
    # per run with exams); judged: sftmix 32 + 2 (ambiguous) + 61 ROSE-benchmarked runs × 3 = 217
    # generate and judge, 61 × 3 = 183 implicit-reward; warmup and gradient jobs as in less.yaml ∪ rose.yaml
    # (llama2's shared): 2 warmups, 64 + 8 feature jobs, 56 + 12 validation features, 14 + 3 influence tables.
    # LESS-T: as in less.yaml, + 2 models, 2 ref_logprobs, 2 selections, 8 runs, 44 lm-eval scores, no selection job;
    # the baselines as in less.yaml (9 runs, 33 scores)
    "all.yaml": {
        "materialise_model": 8, "prepare_data": 15, "ref_logprobs": 11, "select_data": 95, "validation_set": 6,
        "reference_run": 3, "train_reference": 2, "confidence": 5, "tsne": 5, "train": 162, "train_member": 30, "merge": 14,
        "disperse": 6, "warmup": 2, "grad_features": 64, "gather_grad_features": 8, "validation_grad_features": 68,
        "influence": 17, "evaluate": 169, "exam_results": 427, "benchmark_data": 10, "generate": 225, "judge": 225,
        "implicit_reward": 183, "lexical_scores": 6, "pool_hidden_states": 1, "representation_scores": 3,
        "build_report": 1, "judges_table": 1, "mtbench_categories": 1, "report_sftmix": 1, "report_minorsft": 1,
        "selection_report": 1, "dtm_report": 1, "cost_report": 1, "all": 1, "calibration_data": 1,
        "judge_calibration": 1,
    },
}

# rules that never ask for a GPU, whatever the config's resources.default says
CPU_RULES = {"materialise_model", "prepare_data", "select_data", "build_report", "cost_report", "all"}


@pytest.fixture(scope="module", params=[*PAPER_CONFIGS, FIXTURE], ids=lambda p: p.name)
def paper_plan(request):
    proc = planned(request.param)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return request.param, proc.stdout + proc.stderr


def test_job_counts(paper_plan):
    configfile, output = paper_plan
    counts = job_counts(output)
    assert configfile.name in EXPECTED, (
        f"no expected job counts for {configfile.name}; the dry run planned {counts}: check them against the config "
        f"and add them to EXPECTED in {__file__}")
    assert counts == EXPECTED[configfile.name]


def test_gpu_requests_follow_the_config(paper_plan):
    configfile, output = paper_plan
    cfg = yaml.safe_load(configfile.read_text())
    jobs = job_resources(output)
    assert jobs
    for rule, res in jobs:
        if rule in CPU_RULES:
            assert "gpu" not in res, (rule, res)
        elif "gpu" in res:  # a GPU job says how much of the node it needs besides the GPUs
            assert {"cpus_per_gpu", "mem_mb", "runtime"} <= res.keys(), (rule, res)
    train_gpus = resources(cfg, "train")["gpus"]
    for rule, res in jobs:
        if rule == "train":
            assert int(res.get("gpu", 0)) == train_gpus, res


def test_the_cost_report_runs_after_every_other_report(paper_plan):
    """The cost report reads the benchmark files of the whole DAG, rebuilt in its job: it must depend on every other
    report the run makes (so every measured job has finished), and rebuild the DAG from this run's config."""
    configfile, output = paper_plan
    jobs = {job["rule"]: job for job in dry_run_jobs(output) if job["rule"] in ("all", "cost_report")}
    reports = [p for p in jobs["cost_report"]["input"]
               if not p.endswith("scripts/cost_report.py") and not p.startswith("results/.code/")]
    assert set(reports) == set(jobs["all"]["input"]) - set(jobs["cost_report"]["output"])
    # rebuilt from the snapshot of the config that ran (written at the run's start), not from the config files
    command = shlex.split(jobs["cost_report"]["shell"])
    assert command[command.index("--run-config") + 1] == "results/run_config.json" and "--workflow" not in command


def test_multi_gpu_training_is_launched_with_accelerate(paper_plan):
    """Training runs (the train stage's jobs) start one process per GPU; the LESS/ROSE warmup is a stage of its own."""
    configfile, output = paper_plan
    cfg = yaml.safe_load(configfile.read_text())
    commands = [job["shell"] for job in dry_run_jobs(output) if job["rule"] in ("train", "train_member")]
    assert commands and all("scripts/train.py" in c and "--model-dir" in c for c in commands)
    if resources(cfg, "train")["gpus"] > 1:
        assert all("-m accelerate.commands.launch" in c and f"--num_processes {resources(cfg, 'train')['gpus']}" in c
                   for c in commands)


def test_slurm_profile_settings_reach_snakemake(monkeypatch):
    """profiles/default is loaded after --profile and wins: it must not cap cores or shorten the latency wait."""
    from snakemake.cli import parse_args

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SFTLAB_SLURM_NO_ACCOUNT", "1")
    monkeypatch.setenv("SFTLAB_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("SFTLAB_CLUSTER", "none")  # the profile sets it only where it is unset
    _, args = parse_args(["-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles" / "slurm"), "-n"])
    assert args.executor == "slurm" and args.jobs == 100 and args.cores is None
    assert args.latency_wait == 120 and args.retries == 2 and args.slurm_requeue is True
    assert args.slurm_no_account is True
    assert args.default_resources["slurm_partition"].raw == "'gpu-a100'"
    monkeypatch.delenv("SFTLAB_SLURM_NO_ACCOUNT")
    monkeypatch.delenv("SFTLAB_SLURM_PARTITION")
    _, args = parse_args(["-s", str(ROOT / "Snakefile"), "--profile", str(ROOT / "profiles" / "slurm"), "-n"])
    assert args.slurm_no_account is not True and "slurm_partition" not in args.default_resources


def test_the_planning_runs_are_really_offline():
    proc = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('huggingface.co', 443))"],
                          capture_output=True, text=True, env=offline_env(), timeout=60)
    assert proc.returncode != 0 and "network access to 'huggingface.co'" in proc.stderr
