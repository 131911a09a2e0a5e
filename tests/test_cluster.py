"""What the cluster will honour, refused at plan time naming the key (sftlab.cluster, PLAN.res in sftlab.plan.core): a rule
that runs a model without a GPU in a config that gives GPUs, vLLM generation without conda, a request over one node
of its partition, a predicted runtime over its time limit; retries grow only up to the partition's limits; a GPU
job asks Slurm for one node."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from _plan import offline_env, plan
from sftlab.cluster import (ClusterError, Partition, Request, check_fits, check_model_gpu, check_runtime,
                            checkpoint_seconds, grown, load_cluster, slurm_minutes)

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "configs" / "paper"
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())

GPU_NODE = Partition("gpu", time_limit=2880, mem_mb=1_000_000, gpus=4, cpus=64)


# -- the description and the checks, as functions -------------------------------------------------------------------

@pytest.mark.parametrize("text, minutes", [
    ("2-00:00:00", 2880), ("1-12", 2160), ("1-12:30", 2190), ("0-00:01:30", 1.5), ("48:00:00", 2880),
    ("90", 90), ("30:30", 30.5), (120, 120), ("UNLIMITED", math.inf)])
def test_slurm_time_limits(text, minutes):
    assert slurm_minutes(text) == minutes


def test_a_time_limit_slurm_would_not_write_is_refused():
    with pytest.raises(ValueError, match="not a Slurm time limit"):
        slurm_minutes("2 days")


def test_cluster_description(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("default_partition: cpu\npartitions:\n"
                    "  cpu: {time_limit: '3-00:00:00', mem_mb: 256000, gpus: 0, cpus: 64}\n"
                    "  gpu: {time_limit: '2-00:00:00', mem_mb: 1000000, gpus: 4, cpus: 64}\n")
    cluster = load_cluster(path)
    assert cluster.partition(None, "SFTLAB_SLURM_PARTITION") == Partition("cpu", 4320, 256000, 0, 64)
    assert cluster.partition("gpu", "SFTLAB_SLURM_GPU_PARTITION") == GPU_NODE
    with pytest.raises(ClusterError, match=r"SFTLAB_SLURM_GPU_PARTITION=a100: no partition 'a100' in the cluster "
                                           r"description .*cluster\.yaml \(it has cpu, gpu\)"):
        cluster.partition("a100", "SFTLAB_SLURM_GPU_PARTITION")


@pytest.mark.parametrize("text, message", [
    ("partitions:\n  gpu: {time_limit: 60, mem_mb: 1000, gpus: 1}\n", r"partitions\.gpu: give exactly cpus, gpus"),
    ("partitions:\n  gpu: {time_limit: 2 days, mem_mb: 1000, gpus: 1, cpus: 2}\n", r"partitions\.gpu\.time_limit"),
    ("partitions:\n  gpu: {time_limit: 60, mem_mb: 1.5, gpus: 1, cpus: 2}\n", r"partitions\.gpu\.mem_mb: a count"),
    ("default_partition: cpu\npartitions:\n  gpu: {time_limit: 60, mem_mb: 1000, gpus: 1, cpus: 2}\n",
     r"default_partition 'cpu' is not among the partitions"),
    ("partition:\n  gpu: {}\n", r"expected a mapping `partitions:`"),
])
def test_a_malformed_description_is_refused_naming_the_key(tmp_path, text, message):
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ClusterError, match=message):
        load_cluster(path)


@pytest.mark.parametrize("change, message", [
    ({"gpus": 8, "cpus": 64}, r"config key resources\.train\.gpus: 8 GPUs on one node; a node of partition gpu .* has 4"),
    ({"cpus": 96}, r"config key resources\.train\.cpus: 96 CPUs on one node; a node of partition gpu .* has 64"),
    ({"mem_mb": 1_500_000}, r"config key resources\.train\.mem_mb: 1500000 MB on one node; .* has 1000000 MB"),
    ({"runtime": 4320}, r"config key resources\.train\.runtime: 4320 min is over the time limit of partition gpu "
                        r"\(cluster\.yaml\), 2880 min"),
])
def test_a_request_over_one_node_of_its_partition_is_refused(change, message):
    request = {"stage": "train", "gpus": 4, "cpus": 32, "mem_mb": 512_000, "runtime": 2880}
    check_fits(Request(**request), GPU_NODE, "cluster.yaml")  # a whole node, for the whole limit, fits
    with pytest.raises(ClusterError, match=message):
        check_fits(Request(**{**request, **change}), GPU_NODE, "cluster.yaml")


def test_retries_grow_up_to_the_partitions_limits():
    # a timed-out 8-GPU training asking 512 GB and 48 h: attempts 2 and 3 would ask 1 TB / 1.5 TB and 96 / 144 h
    assert [grown(512_000, a, GPU_NODE.mem_mb) for a in (1, 2, 3)] == [512_000, 1_000_000, 1_000_000]
    assert [grown(1440, a, GPU_NODE.time_limit) for a in (1, 2, 3)] == [1440, 2880, 2880]
    assert [grown(45, a) for a in (1, 2, 3)] == [45, 90, 135]  # no description: no cap


class FlatCost:
    """A cost model with round numbers: a job takes ``job`` GPU-seconds; training 0.1 s an example on one GPU."""

    a = {"startup_minutes": 5}

    def __init__(self, job: float) -> None:
        self.job, self.trained = job, []

    def job_seconds(self, rule, wildcards, gpus):
        if rule == "unpriced":
            raise KeyError("gpu_cost.yaml models: no entry")
        return self.job

    def training_seconds(self, model, dataset, training, examples, gpus, objective="ntp"):
        self.trained.append((training["epochs"], examples, gpus, objective))
        return 0.1 * examples


WILDCARDS = {"model": "m", "dataset": "d"}


def test_a_job_that_cannot_resume_must_fit_its_time_limit():
    cost = FlatCost(job=4 * 3.5 * 3600)  # 3.5 h on each of 4 GPUs
    request = Request("score", gpus=4, cpus=32, mem_mb=64000, runtime=240)
    check_runtime(request, "ref_logprobs", WILDCARDS, cost)
    with pytest.raises(ClusterError, match=r"config key resources\.score\.runtime: 180 min, but rule ref_logprobs "
                                           r"\(model=m, dataset=d\) is predicted to take 3\.5 h on 4 GPU\(s\) .* "
                                           r"cannot resume"):
        check_runtime(Request("score", 4, 32, 64000, 180), "ref_logprobs", WILDCARDS, cost)
    # what the cost model cannot price, and CPU jobs, are not checked
    check_runtime(Request("score", 4, 32, 64000, 1), "unpriced", WILDCARDS, cost)
    check_runtime(Request("data", 0, 4, 64000, 1), "ref_logprobs", WILDCARDS, cost)


def test_a_training_job_must_fit_the_stretch_between_two_checkpoints():
    training = {"epochs": 3, "batch_size": 4, "gradient_accumulation": 2, "save_steps": 100}
    cost = FlatCost(job=2 * 40 * 3600)  # 40 h on 2 GPUs: longer than any limit, but it resumes
    # 100 steps × a global batch of 4 × 2 × 2 processes = 1,600 examples, 0.1 s each on one GPU → 80 s on two, plus
    # 5 min of start-up: 380 s
    assert checkpoint_seconds(cost, "m", "d", training, 2, "sftmix") == 80 + 300
    assert cost.trained == [(1, 1600, 2, "sftmix")]
    check_runtime(Request("train", 2, 16, 64000, 7), "train", WILDCARDS, cost, (training, "ntp"))
    with pytest.raises(ClusterError, match=r"config key resources\.train\.runtime: 6 min, but rule train .* between "
                                           r"two checkpoints \(save_steps\)"):
        check_runtime(Request("train", 2, 16, 64000, 6), "train", WILDCARDS, cost, (training, "ntp"))


def test_a_rule_that_runs_a_model_gets_a_gpu_where_the_config_gives_gpus():
    score = Request("score", gpus=0, cpus=4, mem_mb=32000, runtime=120)
    config = {"resources": {"default": {"cpus": 4}, "train": {"gpus": 1}, "evaluate": {"gpus": 1}}}
    with pytest.raises(ClusterError, match=r"config key resources\.score\.gpus: rule ref_logprobs runs a model, but "
                                           r"stage score asks for no GPU while evaluate, train do"):
        check_model_gpu(score, "ref_logprobs", config)
    check_model_gpu(score, "ref_logprobs", {"resources": {"default": {"cpus": 4}}})  # a CPU-only run


# -- the workflow's planning --------------------------------------------------------------------------------------

def derived(tmp_path: Path, source: Path | dict, change) -> Path:
    cfg = copy.deepcopy(source if isinstance(source, dict) else yaml.safe_load(source.read_text()))
    change(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def refusal(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    return " ".join(out.split())


def test_a_paper_config_whose_model_running_rule_has_no_gpu_is_refused(tmp_path):
    """less.yaml as it was: ref_logprobs (stage score) fell to resources.default, a CPU node."""
    config = derived(tmp_path, PAPER / "less.yaml", lambda c: c["resources"].pop("score"))
    out = refusal(plan(config, tmp_path / "work"))
    assert ("config key resources.score.gpus: rule ref_logprobs runs a model, but stage score asks for no GPU "
            "while evaluate, grads, train, warmup do; set resources.score.gpus") in out


def test_a_predicted_runtime_over_the_time_limit_is_refused(tmp_path):
    """sftmix.yaml's confidence table as it was: three passes over UltraChat in 8 h, which the cost model puts
    over 8 h; the table cannot resume."""
    config = derived(tmp_path, PAPER / "sftmix.yaml", lambda c: c["resources"]["score"].update(runtime=480))
    out = refusal(plan(config, tmp_path / "work"))
    assert "config key resources.score.runtime: 480 min, but rule confidence" in out and "cannot resume" in out


def snakemake(workdir: Path, configfile: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(configfile), *extra], capture_output=True, text=True,
                          env=env or offline_env(), timeout=600)


def test_vllm_generation_planned_without_conda_is_refused(tmp_path):
    config = derived(tmp_path, TINY, lambda c: c["benchmarks"]["mt_tiny"].update(backend="vllm"))
    out = refusal(snakemake(tmp_path / "work", config, "-n"))
    assert ("config key benchmarks.mt_tiny.backend: vllm generates in the conda environment envs/vllm.yaml, but "
            "conda is not the deployment method: add `--software-deployment-method conda` (`--sdm conda`)") in out
    # with conda deployment (a stub conda where there is none: a dry run creates no environment) it plans
    proc = snakemake(tmp_path / "work", config, "-n", "--sdm", "conda")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


# a one-rule workflow on the project's common.smk: a CPU job, then a GPU job that fails on its first attempt
PROBE = '''
import sys
from pathlib import Path

ROOT = Path({root!r})
sys.path.insert(0, str(ROOT / "src"))

configfile: "config.yaml"

include: str(ROOT / "workflow" / "rules" / "common.smk")

onstart:
    PLAN.check_planned_jobs(workflow.dag.needrun_jobs())

rule probe:
    input: "cpu.txt"
    output: "probe.txt"
    resources: **PLAN.res("train", model=True)
    shell: "echo {{resources.mem_mb}} {{resources.runtime}} >> attempts.txt; "
           "test -e failed_once || {{{{ touch failed_once; exit 1; }}}}; cp attempts.txt {{output}}"

rule cpu:
    output: "cpu.txt"
    resources: **PLAN.res("data")
    shell: "touch {{output}}"
'''

DESCRIPTION = "partitions:\n  debug: {time_limit: '1:00:00', mem_mb: 5000, gpus: 2, cpus: 4}\ndefault_partition: debug\n"


def probe(tmp_path: Path, train: dict) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({**TINY, "resources": {"train": train}}))
    (tmp_path / "Snakefile").write_text(PROBE.format(root=str(ROOT)))
    (tmp_path / "cluster.yaml").write_text(DESCRIPTION)
    env = {**offline_env(), "SFTLAB_CLUSTER": str(tmp_path / "cluster.yaml")}
    env.pop("SFTLAB_SLURM_PARTITION", None), env.pop("SFTLAB_SLURM_GPU_PARTITION", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "--directory",
                           str(tmp_path), "--cores", "1", "--retries", "2", "probe.txt"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_retries_are_capped_at_the_partitions_limits(tmp_path):
    proc = probe(tmp_path, {"cpus": 4, "gpus": 2, "mem_mb": 3000, "runtime": 45})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # attempt 1 as asked; attempt 2 would ask 6000 MB and 90 min, over the partition's 5000 MB and 1 h
    assert [line.split() for line in (tmp_path / "probe.txt").read_text().splitlines()] == [
        ["3000", "45"], ["5000", "60"]]


def test_a_request_over_a_node_is_refused_before_any_job_starts(tmp_path):
    """A real run (not a dry run), where Snakemake evaluates a job's resources only once the job is ready: the
    GPU job's request is refused before the CPU job it waits for has run."""
    proc = probe(tmp_path, {"cpus": 4, "gpus": 2, "mem_mb": 6000, "runtime": 45})
    out = refusal(proc)
    assert "config key resources.train.mem_mb: 6000 MB on one node; a node of partition debug" in out
    assert not (tmp_path / "cpu.txt").exists()


def test_a_multi_gpu_job_asks_slurm_for_one_node(tmp_path, monkeypatch):
    """The sbatch call the Slurm executor builds from a planned training job's resources (the executor's own
    functions): 4 GPUs, on one node."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    config = derived(tmp_path, TINY, lambda c: c["resources"].update(train={"cpus": 16, "gpus": 4, "mem_mb": 4000}))
    here = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL}, enable_file_logging=False)) as api:
            workflow_api = api.workflow(resource_settings=ResourceSettings(),
                                        config_settings=ConfigSettings(configfiles=[config]),
                                        snakefile=ROOT / "Snakefile", workdir=tmp_path)
            workflow_api.dag(DAGSettings())
            workflow = workflow_api._workflow
            workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True, nolock=True)
            workflow._build_dag()
            train = next(job for job in workflow.dag.jobs if job.rule.name == "train")
            params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "rule_train", "account": "",
                      "partition": "", "workdir": str(tmp_path)}
            call = get_submit_command(train, params) + set_gres_string(train)
    finally:
        os.chdir(here)
    args = call.split()
    assert "--nodes=1" in args and "--gpus=4" in args and "--cpus-per-gpu=4" in args, call
