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
        assert (run / "model" / "adapter").exists() == (recipe != "sft_full")
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
    assert list(table["recipe"]) == recipes + [r for r in TINY["experiments"]["selection"]["recipes"] if r not in recipes]
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
    # the t-SNE figure draws the sft run beside the reference and SFTMix, the LESS/ROSE report has it as the
    # full-data line: both are redrawn too
    expected = sorted([("train", "sft", ""), ("all", "", ""), ("build_report", "", ""), ("tsne", "", ""),
                       ("selection_report", "", "")]
                      + [("evaluate", "sft", b) for b in TINY["experiments"]["main"]["benchmarks"]])
    assert planned == expected


@pytest.mark.slow
def test_less_rose_outputs_nested_fractions_and_cost_report(tiny_run):
    workdir, _ = tiny_run
    base = workdir / "results/tiny/demo"
    pool = [json.loads(line)["id"] for line in (workdir / "results/data/demo/train.jsonl").read_text().splitlines()]
    warmup_ids = (base / "selection/random-s0/0.25.ids").read_text().split()
    assert len(warmup_ids) == len(pool) // 4
    for c in (1, 2):
        checkpoint = base / f"warmup/checkpoint-{c}"
        assert (checkpoint / "adam_moments.safetensors").exists() and (checkpoint / "adapter_model.safetensors").exists()
        assert json.loads((checkpoint / "warmup_epoch.json").read_text())["mean_lr"] > 0
    validation = [json.loads(line) for line in (workdir / "results/data/demo/validation/target.jsonl").read_text().splitlines()]
    assert {v["subtask"] for v in validation} == {"arithmetic", "count"}
    for selector in ("less-target-2shot", "rose-target-2shot"):
        table = pd.read_parquet(base / f"influence/{selector}.parquet")
        assert sorted(table["id"]) == sorted(pool) and table["influence"].notna().all()
        small, large = ((base / f"selection/{selector}/{f}.ids").read_text().split() for f in ("0.25", "0.5"))
        assert len(small) == len(pool) // 4 and len(large) == len(pool) // 2
        assert small == large[: len(small)], "a smaller fraction is the head of the larger one"
        ranked = table.sort_values("influence", ascending=False, kind="stable")["id"].tolist()
        assert large == ranked[: len(large)]

    cost = pd.read_csv(workdir / "reports/tables/selection_cost.csv", keep_default_na=False)
    assert set(cost["stage"]) == {"warmup", "gradient features", "selection", "final training"}
    warmup = cost[cost.stage == "warmup"].iloc[0]
    assert float(warmup["wall time (s)"]) > 0 and warmup["GPU-hours"] == "n/a"
    assert float(warmup["stored (MiB)"]) > 0
    shots = pd.read_csv(workdir / "reports/tables/selection_shots.csv")
    assert sorted(set(shots["method"])) == ["less", "rose"] and "2-shot" in shots.columns
    for ext in ("png", "pdf"):
        assert (workdir / f"reports/figures/selection_fraction_curve.{ext}").stat().st_size > 1000


@pytest.mark.slow
def test_same_seed_gives_the_same_rose_selection(tiny_run, tmp_path_factory):
    """The whole chain again in a fresh directory (model, data, warmup, gradients, influence, selection)."""
    workdir, configfile = tiny_run
    again = tmp_path_factory.mktemp("tiny_again")
    target = "results/tiny/demo/selection/rose-target-2shot/0.25.ids"
    proc = snakemake(again, configfile, target)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert (again / target).read_text() == (workdir / target).read_text()
