"""A slice of configs/tiny.yaml through `snakemake --profile slurm`, typed at the repository root as users type it,
on a real Slurm cluster.

Needs a running cluster with a `gpu` GRES (CI starts one with .ci/slurm-up.sh); skipped otherwise. Checks, from
Slurm's own job records (`scontrol show job`, kept for an hour by MinJobAge), that the GPU rules were submitted with
a GPU request and the CPU rules without, and that the outputs equal a local run of the same config.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def slurm_up() -> bool:
    return shutil.which("sbatch") is not None and subprocess.run(
        [str(ROOT / ".ci" / "slurm-up.sh"), "--check"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not slurm_up(), reason="no Slurm cluster with a gpu GRES is reachable "
                                                "(start one as root with .ci/slurm-up.sh, as .ci/run does)"),
]

# GPU stages of the slice: training asks for a GPU although it runs on the CPU (the GRES devices are fake); scoring
# with the untrained model (ref_logprobs) and evaluation too. Data, selection, model and report stay on CPU.
GPU_RULES = {"train", "ref_logprobs", "evaluate"}
CPU_RULES = {"materialise_model", "prepare_data", "select_data", "build_report", "report_minorsft", "cost_report"}


def slice_config() -> dict:
    """sft and minorsft (which reads the reference log-probs) on one benchmark: 11 cluster jobs."""
    cfg = copy.deepcopy(TINY)
    # the main experiment only: the judged and selection experiments would add a dozen jobs
    cfg["experiments"] = {"main": {**cfg["experiments"]["main"], "recipes": ["sft", "minorsft"],
                                   "benchmarks": ["heldout_em"]}}
    cfg["resources"] = {
        "default": {"cpus": 1, "mem_mb": 1000, "runtime": 10},
        "train": {"cpus": 2, "gpus": 1, "mem_mb": 2000, "runtime": 10},
        "score": {"cpus": 1, "gpus": 1, "mem_mb": 1500, "runtime": 10},
        "evaluate": {"cpus": 1, "gpus": 1, "mem_mb": 1500, "runtime": 10},
        "report": {"cpus": 1, "gpus": 0, "mem_mb": 1000, "runtime": 10},
    }
    return cfg


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONPATH": str(ROOT / "src")}
    # from the repository root, where Snakemake finds the profile named `slurm` (and the workflow profile)
    return subprocess.Popen([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(workdir / "slice.yaml"),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """Slurm's records of the jobs submitted from ``workdir``: one dict of scontrol's Key=Value fields per job."""
    out = subprocess.run(["scontrol", "show", "job", "-d", "-o"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(m.groups() for m in re.finditer(r"(\S+?)=(\S*)", line))
        if fields.get("WorkDir") == str(workdir):
            jobs.append(fields)
    return jobs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cfg = yaml.safe_dump(slice_config())
    cluster, local = tmp_path_factory.mktemp("cluster"), tmp_path_factory.mktemp("local")
    for workdir in (cluster, local):
        (workdir / "slice.yaml").write_text(cfg)
    # the profile as a researcher uses it, with test overrides: sooner status checks (the plugin waits 40 s before
    # the first), no account, no retries; the local run goes on meanwhile (the cluster run mostly waits)
    on_cluster = start_snakemake(cluster, "--profile", "slurm", "--slurm-no-account",
                                 "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "10",
                                 "--latency-wait", "10", "--retries", "0", "--jobs", "4")
    on_host = start_snakemake(local, "--cores", "1")
    for proc in (on_host, on_cluster):
        out, _ = proc.communicate(timeout=1500)
        assert proc.returncode == 0, out[-6000:]
        if proc is on_cluster:
            assert "Using profiles slurm and workflow specific profile profiles/default" in out
    return cluster, local


def test_gpu_rules_ask_slurm_for_gpus_and_cpu_rules_do_not(runs):
    cluster, _ = runs
    jobs = slurm_jobs(cluster)
    by_rule: dict[str, list[dict]] = {}
    for job in jobs:
        rule = re.match(r"rule_(\w+?)(?:_wildcards_|$)", job["Comment"]).group(1)
        by_rule.setdefault(rule, []).append(job)
    # every job of the slice went through Slurm (rule `all` is local), each once
    assert {r: len(j) for r, j in by_rule.items()} == {
        "materialise_model": 1, "prepare_data": 1, "select_data": 1, "ref_logprobs": 1, "train": 2, "evaluate": 2,
        "build_report": 1, "report_minorsft": 1, "cost_report": 1}
    for rule, rule_jobs in by_rule.items():
        for job in rule_jobs:
            assert job["JobState"] == "COMPLETED", (rule, job["JobState"])
            if rule in GPU_RULES:
                assert job.get("TresPerJob") == "gres:gpu:1", (rule, job.get("TresPerJob"))
                assert job.get("JOB_GRES") == "gpu:1", (rule, job.get("JOB_GRES"))  # and Slurm granted one
            else:
                assert rule in CPU_RULES
                assert "gpu" not in job.get("TresPerJob", "") and job.get("JOB_GRES") in (None, "(null)"), rule
    # the requests come from the config's resources block: training's 2 CPUs per GPU and 2000 MB
    train = by_rule["train"][0]
    assert train["NumCPUs"] == "2" and train["TimeLimit"] == "00:10:00"
    assert re.search(r"mem=2000M", train["TRES"]), train["TRES"]


def test_training_ran_on_the_cpu_under_a_gpu_allocation(runs):
    cluster, _ = runs
    log = (cluster / "logs/train/tiny/demo/sft.log").read_text()
    assert "1 process(es)" in log and "device cpu" in log, log[-2000:]


def test_cluster_outputs_equal_a_local_run(runs):
    cluster, local = runs
    for path in ["results/data/demo/train.jsonl", "results/tiny/demo/selection/full/1.ids"]:
        assert (cluster / path).read_text() == (local / path).read_text(), path
    pd.testing.assert_frame_equal(pd.read_parquet(cluster / "results/tiny/demo/ref_logprobs.parquet"),
                                  pd.read_parquet(local / "results/tiny/demo/ref_logprobs.parquet"))
    for recipe in ("sft", "minorsft"):
        run = f"results/tiny/demo/runs/{recipe}"
        pd.testing.assert_frame_equal(pd.read_csv(cluster / run / "train_log.csv"), pd.read_csv(local / run / "train_log.csv"),
                                      rtol=1e-6)
        a, b = (json.loads((d / run / "scores/heldout_em.json").read_text()) for d in (cluster, local))
        assert a == b
    assert (cluster / "reports/tables/main.csv").read_text() == (local / "reports/tables/main.csv").read_text()
    # one Slurm log per submitted job (every job but `all`), kept after success (slurm-keep-successful-logs)
    assert len(list((cluster / ".snakemake/slurm_logs").rglob("*.log"))) == 11
