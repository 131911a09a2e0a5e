"""The cost report's jobs come from Snakemake's own DAG (sftlab.report.dag): for configs/tiny.yaml they are exactly
the jobs `snakemake -n` lists (rule, wildcards, benchmark file, outputs, GPUs, and dependencies read off the input
and output paths), every benchmarked rule declares its cost phase, and a job's papers are those of the recipes whose
runs depend on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from _plan import dry_run_jobs
from sftlab.report.cost import cost_jobs, job_papers
from sftlab.report.dag import PHASES, DagJob, benchmark_phases, workflow_jobs
from sftlab.report.selection import selection_cost_groups

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"
# a second config file giving training one GPU: the GPU requests then differ between rules, so the comparison can
# tell them apart (and the config files are merged as the command line merges them)
GPU_TRAINING = "resources:\n  train: {cpus: 2, gpus: 1, mem_mb: 4000, runtime: 20}\n"


def job(rule, deps=(), bench=True, phase="setup", **wildcards):
    return DagJob(rule=rule, wildcards=wildcards, benchmark=f"benchmarks/{rule}.tsv" if bench else None,
                  phase=phase if bench else None, outputs=(), temp_outputs=(), gpus=0, dependencies=tuple(deps))


def test_papers_follow_the_runs_that_depend_on_a_job():
    jobs = [
        job("materialise_model", model="m"),                                                    # 0
        job("prepare_data", dataset="d"),                                                       # 1
        job("confidence", [0, 1], phase="method preparation", model="m", dataset="d"),          # 2
        job("train", [0, 1], phase="training", model="m", dataset="d", recipe="sft"),           # 3
        job("train", [0, 1, 2], phase="training", model="m", dataset="d", recipe="sftmix"),     # 4
        job("train", [0, 1, 2], phase="training", model="m", dataset="d", recipe="combo"),      # 5
        # a figure no run depends on, drawing the sft and sftmix runs: it serves what confidence serves
        job("tsne", [1, 2, 3, 4], phase="figures", model="m", dataset="d"),                     # 6
        job("build_report", [3, 4, 5, 6], bench=False),                                         # 7
    ]
    papers = {"sft": ["SFT"], "sftmix": ["SFTMix"], "combo": ["SFTMix", "LESS / ROSE"]}
    assert job_papers(jobs, papers)[:7] == [{"SFT", "SFTMix", "LESS / ROSE"}, {"SFT", "SFTMix", "LESS / ROSE"},
                                           {"SFTMix", "LESS / ROSE"}, {"SFT"}, {"SFTMix"},
                                           {"SFTMix", "LESS / ROSE"}, {"SFTMix", "LESS / ROSE"}]
    rows = cost_jobs(jobs, papers)
    assert [r["rule"] for r in rows] == ["materialise_model", "prepare_data", "confidence", "train", "train", "train",
                                         "tsne"]  # the report has no benchmark file
    assert (rows[0]["model"], rows[0]["dataset"], rows[1]["model"]) == ("m", "—", "—")


def test_a_benchmarked_rule_without_a_phase_or_a_paper_fails_loudly():
    with pytest.raises(ValueError, match="rule train has a benchmark file but no cost phase"):
        cost_jobs([job("train", phase=None, recipe="sft")], {"sft": ["SFT"]})
    with pytest.raises(ValueError, match="serves no recipe"):
        cost_jobs([job("orphan", model="m")], {"sft": ["SFT"]})


def test_every_benchmarked_rule_declares_its_phase():
    phases = benchmark_phases(ROOT / "Snakefile", [str(TINY)])
    assert len(phases) >= 20
    assert {rule for rule, phase in phases.items() if phase not in PHASES} == set()


@pytest.fixture(scope="module")
def tiny_dry_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny-plan")
    configfiles = [str(TINY), str(workdir / "gpu.yaml")]
    (workdir / "gpu.yaml").write_text(GPU_TRAINING)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "-p",
                           "--directory", str(workdir), "--configfile", *configfiles],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return workdir, configfiles, dry_run_jobs(proc.stdout + proc.stderr)


def _key(rule, wildcards):
    return rule, tuple(sorted(wildcards.items()))


def test_the_dag_jobs_are_what_the_dry_run_plans(tiny_dry_run):
    """A second, naive reading of the same DAG: the job blocks of `snakemake -n -p`, with the dependencies worked out
    from which job's output each input path is."""
    workdir, configfiles, planned = tiny_dry_run
    jobs = workflow_jobs(ROOT / "Snakefile", configfiles, {}, workdir)

    # a benchmark file is an output too: the selection report reads some
    producer = {out: _key(p["rule"], p["wildcards"]) for p in planned for out in [*p["output"], p["benchmark"]] if out}
    expected = {_key(p["rule"], p["wildcards"]): {
        "benchmark": p.get("benchmark"), "outputs": set(p["output"]), "gpus": int(p["resources"].get("gpu", 0)),
        "dependencies": {producer[f] for f in p["input"] if f in producer}} for p in planned}
    assert len(expected) == len(planned)  # no job listed twice
    keys = [_key(j.rule, j.wildcards) for j in jobs]
    got = {k: {"benchmark": j.benchmark, "outputs": set(j.outputs) | set(j.temp_outputs), "gpus": j.gpus,
               "dependencies": {keys[d] for d in j.dependencies}} for k, j in zip(keys, jobs, strict=True)}
    assert got == expected
    assert {j.gpus for j in jobs if j.rule == "train"} == {1} and {j.gpus for j in jobs if j.rule == "evaluate"} == {0}
    # the temporary gradient shards are flagged: their bytes are not kept
    assert all(j.temp_outputs and not j.outputs for j in jobs if j.rule == "grad_features")


def test_selection_cost_groups_are_the_jobs_the_curve_runs_depend_on():
    def j(i, rule, deps, outputs, wildcards):
        return DagJob(rule=rule, wildcards={"model": "m", "dataset": "d", **wildcards}, benchmark=f"b/{rule}/{i}",
                      phase="setup", outputs=tuple(outputs), temp_outputs=(), gpus=1, dependencies=tuple(deps))

    specs = [
        ("warmup", [1], ["ckpt"], {}),                                             # 0
        ("select_data", [], ["w.ids"], {"selector": "random-s0", "fraction": "0.25"}),  # 1: the warmup's own
        ("grad_features", [0], [], {"c": "1", "shard": "0"}),                      # 2
        ("gather_grad_features", [2], ["g.pt"], {"c": "1"}),                       # 3
        ("validation_grad_features", [0], ["v.pt"], {"selector": "less-x", "c": "1"}),  # 4
        ("influence", [3, 4], ["i.parquet"], {"selector": "less-x"}),              # 5
        ("select_data", [5], ["50.ids"], {"selector": "less-x", "fraction": "0.5"}),    # 6
        ("select_data", [5], ["25.ids"], {"selector": "less-x", "fraction": "0.25"}),   # 7: no curve run uses it
        ("train", [6], ["less"], {"recipe": "less_50"}),                           # 8
        ("train", [], ["sft"], {"recipe": "sft"}),                                 # 9
        ("merge", [], ["dtm"], {"recipe": "dtm"}),                                 # 10: composed, no final training
    ]
    jobs = [j(i, *spec) for i, spec in enumerate(specs)]
    groups = selection_cost_groups(jobs, [["m", "d", "less_50"], ["m", "d", "sft"], ["m", "d", "dtm"]])
    assert [(g["stage"], g["item"], [b["path"] for b in g["benchmarks"]], g["outputs"]) for g in groups] == [
        ("warmup", "pool", ["b/warmup/0"], ["ckpt"]),
        ("gradient features", "pool", ["b/grad_features/2", "b/gather_grad_features/3"], ["g.pt"]),
        ("gradient features", "less-x", ["b/validation_grad_features/4"], ["v.pt"]),
        ("selection", "less-x", ["b/influence/5", "b/select_data/6"], ["i.parquet", "50.ids"]),
        ("final training", "less_50", ["b/train/8"], ["less"]),
        ("final training", "sft", ["b/train/9"], ["sft"]),
    ]
    assert all(b["gpus"] == 1 for g in groups for b in g["benchmarks"])
