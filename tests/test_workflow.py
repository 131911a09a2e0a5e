"""The whole DAG for configs/tiny.yaml through the snakemake command line, then the rerun scope of one change."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2",
                           *args], capture_output=True, text=True, env=env, timeout=1500)


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", dry_run_output):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if not head:
            continue
        wc = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        wildcards = dict(kv.split("=", 1) for kv in wc.group(1).split(", ")) if wc else {}
        jobs.append((head.group(1), wildcards))
    return jobs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(TINY))
    proc = snakemake(workdir, configfile)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return workdir, configfile


@pytest.mark.slow
def test_tiny_dag_outputs(tiny_run):
    workdir, _ = tiny_run
    recipes = TINY["experiments"]["main"]["recipes"]
    benchmarks = TINY["experiments"]["main"]["benchmarks"]

    train = [json.loads(line) for line in (workdir / "results/data/demo/train.jsonl").read_text().splitlines()]
    families = 6
    assert len(train) == TINY["datasets"]["demo"]["per_family"] * families
    ids = (workdir / "results/tiny/demo/selection/random-s0/0.5.ids").read_text().split()
    assert len(ids) == len(train) // 2 and len(set(ids)) == len(ids) and set(ids) <= {e["id"] for e in train}

    for recipe in recipes:
        run = workdir / "results/tiny/demo/runs" / recipe
        assert (run / "model" / "config.json").exists()
        composed = "composition" in TINY["recipes"][recipe]  # merged models keep no adapter
        assert (run / "model" / "adapter").exists() == (recipe != "sft_full" and not composed)
        log = pd.read_csv(run / "train_log.csv")
        assert log.loc[log.step == 0, "eval_loss"].notna().all()
        assert log["loss"].notna().any()
        for bench in benchmarks:
            score = json.loads((run / "scores" / f"{bench}.json").read_text())
            assert score["benchmark"] == bench and 0 <= score["value"] <= 100
            assert score["ci_low"] <= score["value"] <= score["ci_high"]
        answers = [json.loads(line) for line in (run / "answers/heldout_em.jsonl").read_text().splitlines()]
        assert len(answers) == TINY["datasets"]["demo"]["heldout"] * families
        em = json.loads((run / "scores/heldout_em.json").read_text())
        assert em["value"] == pytest.approx(100 * sum(a["correct"] for a in answers) / len(answers))

    table = pd.read_csv(workdir / "reports/tables/main.csv")
    assert list(table["recipe"]) == recipes
    assert list(table.columns) == ["model", "dataset", "recipe", *benchmarks]
    for ext in ("md", "tex"):
        assert (workdir / f"reports/tables/main.{ext}").stat().st_size > 0
    for ext in ("png", "pdf"):
        for figure in ("loss_curves", "tsne_tiny_demo", "confidence_tiny_demo"):
            assert (workdir / f"reports/figures/{figure}.{ext}").stat().st_size > 1000

    confidence = pd.read_parquet(workdir / "results/tiny/demo/confidence.parquet")
    assert list(confidence.columns) == ["id", "perplexity_c1", "perplexity_c2", "confidence", "variability", "split"]
    assert (confidence.split == "confident").sum() == len(train) // 2
    # confidence is minus the mean perplexity over the reference checkpoints
    assert confidence.confidence.to_numpy() == pytest.approx(
        -(confidence.perplexity_c1 + confidence.perplexity_c2).to_numpy() / 2)
    for c in (1, 2):
        assert (workdir / f"results/tiny/demo/reference/checkpoint-{c}/config.json").exists()
    deviation = pd.read_csv(workdir / "results/tiny/demo/runs/minorsft/train_log.csv")
    assert deviation.loc[deviation.step == 0, "deviation"].abs().max() < 1e-4, "m_θ is 0 before the first step"


@pytest.mark.slow
def test_changing_one_learning_rate_reruns_only_that_recipe(tiny_run):
    workdir, configfile = tiny_run
    proc = snakemake(workdir, configfile, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert planned_jobs(proc.stdout + proc.stderr) == [], "a finished DAG should plan nothing"

    changed = yaml.safe_load(configfile.read_text())
    changed["recipes"]["sft"].setdefault("training", {})["learning_rate"] = 5e-4
    changed_file = workdir / "changed.yaml"
    changed_file.write_text(yaml.safe_dump(changed))
    proc = snakemake(workdir, changed_file, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc.stdout + proc.stderr)
    planned = sorted((rule, wc.get("recipe", ""), wc.get("benchmark", "")) for rule, wc in jobs)
    # the t-SNE figure draws the sft run beside the reference and SFTMix, the DTM report has it as the SFT baseline
    expected = sorted([("train", "sft", ""), ("all", "", ""), ("build_report", "", ""), ("tsne", "", ""),
                       ("dtm_report", "", "")]
                      + [("evaluate", "sft", b) for b in TINY["experiments"]["main"]["benchmarks"]])
    assert planned == expected


@pytest.mark.slow
def test_tiny_dtm_and_seed_soup(tiny_run):
    workdir, _ = tiny_run
    import torch
    from transformers import AutoModelForCausalLM

    runs = workdir / "results/tiny/demo/runs"
    pool = (workdir / "results/tiny/demo/selection/full/1.ids").read_text().split()
    k = TINY["recipes"]["dtm"]["composition"]["k"]
    shards = [(runs / f"dtm/shards/ids/shard-{i}.ids").read_text().split() for i in range(k)]
    assert sorted(i for shard in shards for i in shard) == sorted(pool), "shards are disjoint and cover the pool"
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    seeds = TINY["recipes"]["seed_soup"]["composition"]["seeds"]
    for recipe, members in (("dtm", [f"shards/shard-{i}" for i in range(k)]),
                            ("seed_soup", [f"seeds/seed-{s}" for s in seeds])):
        # the merged model loads and is the mean of its members (merge method average)
        merged_weights = AutoModelForCausalLM.from_pretrained(runs / recipe / "model").state_dict()
        member_weights = [AutoModelForCausalLM.from_pretrained(runs / recipe / m / "model").state_dict()
                          for m in members]
        name = "model.layers.0.self_attn.q_proj.weight"
        assert not torch.equal(member_weights[0][name], member_weights[1][name])
        torch.testing.assert_close(merged_weights[name], sum(w[name] for w in member_weights) / len(members),
                                   rtol=0, atol=1e-6)
        logs = [pd.read_csv(runs / recipe / m / "train_log.csv") for m in members]
        merged = pd.read_csv(runs / recipe / "train_log.csv")
        # the merged run's log is its members' step-wise mean
        first = merged.set_index("step").loc[1]
        assert first["members"] == len(members)
        assert first["loss"] == pytest.approx(sum(log.set_index("step").loc[1, "loss"] for log in logs) / len(members))
    table = pd.read_csv(workdir / "reports/tables/dtm_main.csv")
    assert table.loc[table.source == "this work", "recipe"].tolist() == ["sft", "seed_soup", "dtm"]
    for ext in ("png", "pdf"):
        assert (workdir / f"reports/figures/dtm_k_ablation.{ext}").stat().st_size > 1000
