"""The whole DAG for configs/tiny.yaml through the snakemake command line, then the rerun scope of one change."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from scipy import stats

from _openai_stub import OpenAIStub

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]
TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
# the judged preference benchmark goes to an OpenAI-compatible server started here, with a key that must not leak
KEY = "sk-workflow-test-3c9e1f-never-write-me"
JUDGED = TINY["experiments"]["judged"]["benchmarks"]
# rules that only read results and write reports: rerunning them is cheap and expected when a score changes
REPORT_RULES = {"all", "build_report", "judges_table", "mtbench_categories", "report_sftmix", "report_minorsft",
                "dtm_report", "selection_report", "cost_report", "mechanism_sftmix", "mechanism_selection",
                "mechanism_minorsft", "mechanism_dtm", "mechanism_nll"}
# the categories of reports/report.html: one per paper, the main results and the judged benchmarks
REPORT_CATEGORIES = ["Main", "SFTMix", "MinorSFT", "LESS / ROSE", "Disperse-Then-Merge", "Judged benchmarks"]


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SFTLAB_TEST_JUDGE_KEY": KEY}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), "--configfile", str(configfile), "--cores", "2",
                           *args], capture_output=True, text=True, env=env, timeout=3000)


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
def judge_server():
    with OpenAIStub(api_key=KEY) as stub:
        yield stub


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, judge_server):
    workdir = tmp_path_factory.mktemp("tiny")
    configfile = workdir / "tiny.yaml"
    config = copy.deepcopy(TINY)  # in the file's order: the main experiment's columns come first
    config["judges"]["server"] = {"type": "openai", "model": "judge-model", "base_url": judge_server.base_url,
                                  "api_key_env": "SFTLAB_TEST_JUDGE_KEY", "max_retries": 0}
    config["benchmarks"]["pref_tiny"]["judge"] = "server"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
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
    ids = (workdir / "results/tiny/demo/selection/random-s1/0.5.ids").read_text().split()
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
    assert list(table["recipe"]) == recipes + [r for r in TINY["experiments"]["selection"]["recipes"] if r not in recipes]
    assert list(table.columns) == ["model", "dataset", "recipe", *benchmarks, *JUDGED,
                                   *TINY["experiments"]["mechanisms"]["benchmarks"]]
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

    # the papers' own reports: SFTMix beside its reported numbers, MinorSFT's methods at their best setting
    sftmix = pd.read_csv(workdir / "reports/tables/sftmix_main.csv")
    runs = sftmix[~sftmix.method.str.startswith("Δ")]
    assert list(runs.loc[runs.source == "ours", "recipe"]) == ["sft", "sft_full", "sftmix"]
    # then the differences SFTMix − NTP: ours (one pair of runs) and the paper's (two models)
    assert list(sftmix.loc[sftmix.method.str.startswith("Δ"), "source"].str[:6]) == ["ours", "SFTMix", "SFTMix"]
    # the paper's MT-Bench numbers sit under our benchmark of the same type
    paper_rows = runs[runs.source != "ours"]
    assert len(paper_rows) and paper_rows["mt_tiny"].notna().all() and (paper_rows["mt_tiny"] != "n/a").all()
    minorsft = pd.read_csv(workdir / "reports/tables/minorsft_accuracy.csv")
    assert list(minorsft["method"]) == ["SFT", "DPO-SFT", "MinorSFT"]
    for figure in ("minorsft_grid", "minorsft_deviation"):
        assert (workdir / f"reports/figures/{figure}.png").stat().st_size > 1000


@pytest.mark.slow
def test_mechanism_tables_recomputed_from_the_run_files(tiny_run):
    """Every cell of the five mechanism tables, recomputed from the run's files by naive code (_mechanism_check)."""
    from _mechanism_check import check_mechanism_tables

    workdir, _ = tiny_run
    checked = check_mechanism_tables(workdir)
    # SFTMix: AUROC at 2 checkpoints + mean, 2 shares, 1 difference; selections: less/rose 25/50, random 50, confident
    # 50, ambiguous 50, and the baselines bm25, dsir, rds, rds_plus; MinorSFT: sft, minorsft, dpo_sft; DTM: dtm and
    # dtm_minorsft; NLL: 5 recipes × 2 benchmarks
    assert checked == {"sftmix": 6, "selection": 11, "minorsft": 3, "dtm": 2, "nll": 10}, checked
    for paper in checked:
        assert (workdir / f"reports/figures/mechanism_{paper}.png").stat().st_size > 1000
    dtm = pd.read_csv(workdir / "reports/tables/mechanism_dtm.csv")
    assert dict(zip(dtm.recipe, dtm.baseline)) == {"dtm": "sft", "dtm_minorsft": "minorsft"}


@pytest.mark.slow
def test_cost_of_every_stage_and_the_html_report(tiny_run):
    workdir, configfile = tiny_run
    # every job of the finished DAG that writes a benchmark file (all but the reports and the local rules that copy
    # or fetch files: exam_results, calibration_data) has its row
    proc = snakemake(workdir, configfile, "-n", "--forceall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = {}
    for rule, _ in planned_jobs(proc.stdout + proc.stderr):
        if rule not in REPORT_RULES | {"exam_results", "calibration_data"}:
            planned[rule] = planned.get(rule, 0) + 1
    cost = pd.read_csv(workdir / "reports/tables/cost.csv", keep_default_na=False)
    stages = cost[cost.stage != "whole pipeline"]
    assert stages.groupby("stage")["jobs"].sum().to_dict() == planned
    assert (stages["wall time (s)"] != "n/a").all() and (cost["GPU-hours"] == "n/a").all()  # measured, on CPU
    papers = pd.read_csv(workdir / "reports/tables/cost_papers.csv", keep_default_na=False)
    assert set(papers.paper) == {"SFT", "SFTMix", "MinorSFT", "LESS / ROSE", "Disperse-Then-Merge"}
    judges_line = (workdir / "reports/tables/main.md").read_text().splitlines()[-1]  # under the main table
    assert judges_line.startswith("Judges: ") and "tiny_judge (" in judges_line and "demo quality" in judges_line

    proc = snakemake(workdir, configfile, "--report", "reports/report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (workdir / "reports/report.html").read_text()
    assert all(json.dumps(c) in html for c in REPORT_CATEGORIES), [c for c in REPORT_CATEGORIES if json.dumps(c) not in html]


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
    # the t-SNE figure draws the sft run beside the reference and SFTMix: it is redrawn too
    # and so are the SFTMix, MinorSFT, DTM and LESS/ROSE reports, where sft is the (full-data) baseline
    expected = sorted([("train", "sft", ""), ("all", "", ""), ("build_report", "", ""), ("tsne", "", ""),
                       ("report_sftmix", "", ""), ("report_minorsft", "", ""),
                       ("dtm_report", "", ""), ("selection_report", "", ""), ("cost_report", "", "")]
                      + [("evaluate", "sft", "")]   # one job scores the run's exams, each copied out of it
                      + [("exam_results", "sft", b) for b in TINY["experiments"]["main"]["benchmarks"]]
                      + [(rule, "sft", b) for b in JUDGED[:3] for rule in ("generate", "judge")]
                      + [("implicit_reward", "sft", "ir_tiny"), ("judges_table", "", ""), ("mtbench_categories", "", "")]
                      # sft's per-item log-likelihoods, and the mechanism tables where sft is the baseline (the DTM
                      # drift and the NLL comparison); MinorSFT's table compares objectives at one learning rate,
                      # and sft no longer shares minorsft's, so that table has no baseline row to redo
                      + [("log_likelihood", "sft", b) for b in TINY["experiments"]["mechanisms"]["benchmarks"]]
                      + [("mechanism_dtm", "", ""), ("mechanism_nll", "", "")])
    assert planned == expected


def pair_is_switched(instruction: str, seed: int = 0) -> bool:
    """alpaca_eval-style seeded coin: whether the model's answer was shown to the judge first."""
    return hashlib.sha256(f"{seed}\0{instruction}".encode()).digest()[0] % 2 == 1


@pytest.mark.slow
def test_judged_benchmarks_and_the_key_stays_secret(tiny_run, judge_server):
    workdir, _ = tiny_run
    run = workdir / "results/tiny/demo/runs/sft"
    table = pd.read_csv(workdir / "reports/tables/main.csv").set_index("recipe")
    mt = json.loads((run / "scores/mt_tiny.json").read_text())
    assert mt["n"] + mt["n_unparsable"] == 2 * 4 and mt["judge"]["demo_quality"] is True  # 4 questions, 2 turns
    assert len((run / "answers/mt_tiny.jsonl").read_text().splitlines()) == 4
    assert len(json.loads((run / "answers/ae_tiny.json").read_text())) == 6

    # the server prefers the second output shown with P = 0.75: 75 when the reference is shown first, else 25
    pairs = [json.loads(line) for line in (workdir / "results/benchmarks/pref_tiny/pairs.jsonl").read_text().splitlines()]
    answers = {a["id"]: a["answer"] for a in map(json.loads, (run / "answers/pref_tiny.jsonl").read_text().splitlines())}
    wins = [50.0 if answers[p["id"]] == p["chosen"] else 25.0 if pair_is_switched(p["prompt"][0]["content"]) else 75.0
            for p in pairs]
    judged = sum(answers[p["id"]] != p["chosen"] for p in pairs)  # an answer equal to the chosen one is a tie, not sent
    pref = json.loads((run / "scores/pref_tiny.json").read_text())
    assert len(pairs) == 12 and pref["n"] == 12 and pref["value"] == pytest.approx(sum(wins) / len(wins))
    assert pref["judge"]["name"] == "server" and pref["judge_cost"]["calls"] == judge_server.completions == judged
    assert table.loc["sft", "pref_tiny"].startswith(f"{sum(wins) / len(wins):.2f} [")

    ir = json.loads((run / "scores/ir_tiny.json").read_text())
    assert ir["n"] + ir["skipped"] == 12 and 0 <= ir["ci_low"] <= ir["value"] <= ir["ci_high"] <= 100
    judges = pd.read_csv(workdir / "reports/tables/judges.csv")
    assert sorted(judges["benchmark"]) == ["ae_tiny", "mt_tiny", "pref_tiny"]
    # each judged score names its judge's model, prompt and decoding, and keeps its items for paired comparisons
    assert pref["judge"]["model"] == "judge-model" and pref["judge"]["prompt_version"].startswith("alpaca_eval")
    assert pref["judge"]["decoding"] == [{"max_tokens": 1, "temperature": 1.0, "top_logprobs": 5}]
    assert len(pref["per_item"]) == 12
    assert "Judged columns: ae_tiny by hf:" in (workdir / "reports/tables/main.md").read_text()
    # only the baseline `sft` is judged in the tiny DAG: the comparisons table is written, with no row
    comparisons = pd.read_csv(workdir / "reports/tables/judged_comparisons.csv")
    assert list(comparisons.columns[-3:]) == ["score", "baseline score", "difference"] and comparisons.empty
    assert judges.set_index("benchmark").loc["pref_tiny", "requests"] == judged
    for ext in ("png", "pdf"):
        assert (workdir / f"reports/figures/mtbench_categories.{ext}").stat().st_size > 1000

    written = [p for p in workdir.rglob("*") if p.is_file() and p.suffix not in (".safetensors", ".parquet", ".pt")]
    assert any(p.relative_to(workdir).parts[:2] == ("logs", "judge") for p in written)
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path


@pytest.mark.slow
def test_switching_a_judge_rejudges_without_regenerating(tiny_run):
    workdir, configfile = tiny_run
    changed = yaml.safe_load(configfile.read_text())
    changed["benchmarks"]["pref_tiny"]["judge"] = "tiny_judge"
    changed_file = workdir / "other_judge.yaml"
    changed_file.write_text(yaml.safe_dump(changed, sort_keys=False))
    proc = snakemake(workdir, changed_file, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    planned = sorted((rule, wc.get("benchmark", "")) for rule, wc in planned_jobs(proc.stdout + proc.stderr))
    # the one judging job, then only the reports that show its score: no generation, no training
    assert [p for p in planned if p[0] not in REPORT_RULES] == [("judge", "pref_tiny")]
    assert {"build_report", "judges_table"} <= {rule for rule, _ in planned}


@pytest.mark.slow
def test_rerunning_the_judges_makes_no_judge_call(tiny_run, judge_server):
    workdir, configfile = tiny_run
    calls_before = judge_server.calls
    proc = snakemake(workdir, configfile, "--forcerun", "judge", "--until", "judge")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert judge_server.calls == calls_before
    for bench, n in (("mt_tiny", 8), ("ae_tiny", 6), ("pref_tiny", judge_server.completions)):
        cost = json.loads((workdir / f"results/tiny/demo/runs/sft/scores/{bench}.json").read_text())["judge_cost"]
        assert (cost["calls"], cost["cached"]) == (0, n), bench


@pytest.mark.slow
def test_seeds_give_mean_std_a_paired_test_and_one_row_per_recipe(tmp_path_factory):
    """With ``seeds``, every recipe runs per seed; the main table folds them (mean ± std, paired t-test against
    SFT) and so do the papers' tables (one row per recipe, not per seed)."""
    workdir = tmp_path_factory.mktemp("seeds")
    config = copy.deepcopy(TINY)
    config["seeds"] = [0, 1]
    config["experiments"] = {"main": {"models": ["tiny"], "datasets": ["demo"], "recipes": ["sft", "minorsft"],
                                      "benchmarks": ["heldout_em", "mc_demo"]}}
    configfile = workdir / "seeds.yaml"
    configfile.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, configfile)
    assert proc.returncode == 0, proc.stderr[-5000:]

    table = pd.read_csv(workdir / "reports/tables/main.csv", dtype=str, keep_default_na=False).set_index("recipe")
    assert list(table.index) == ["sft", "minorsft"] and set(table["seeds"]) == {"2"}
    for recipe in ("sft", "minorsft"):
        for bench in ("heldout_em", "mc_demo"):
            values = [json.loads((workdir / f"results/tiny/demo/runs/{recipe}_s{s}/scores/{bench}.json").read_text())
                      ["value"] for s in (0, 1)]
            mean, std = sum(values) / 2, abs(values[0] - values[1]) / 2 ** 0.5  # sample std of two values
            assert table.loc[recipe, bench] == f"{mean:.2f} ± {std:.2f} (n=2)"
    assert table.loc["sft", "mc_demo p"] == "—"
    for bench in ("heldout_em", "mc_demo"):  # the paired test, recomputed with scipy from the per-seed files
        pairs = [[json.loads((workdir / f"results/tiny/demo/runs/{r}_s{s}/scores/{bench}.json").read_text())["value"]
                  for r in ("minorsft", "sft")] for s in (0, 1)]
        diffs = {a - b for a, b in pairs}
        if len(diffs) == 1:  # no variance in the differences: no t statistic
            assert table.loc["minorsft", f"{bench} p"] == ("n/a" if diffs == {0} else "0.000")
        else:
            expected = stats.ttest_rel([a for a, _ in pairs], [b for _, b in pairs]).pvalue
            assert float(table.loc["minorsft", f"{bench} p"]) == pytest.approx(expected, abs=1e-3)
    minorsft = pd.read_csv(workdir / "reports/tables/minorsft_accuracy.csv")
    assert list(minorsft["method"]) == ["SFT", "MinorSFT"]
    assert (workdir / "reports/figures/minorsft_deviation.png").stat().st_size > 1000


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
    # single runs that are a DTM's baseline (same objective: SFT for dtm, MinorSFT for dtm_minorsft), soups, DTMs
    assert table.loc[table.source == "this work", "recipe"].tolist() == ["sft", "minorsft", "seed_soup", "dtm",
                                                                         "dtm_minorsft"]
    # every DTM recipe of tiny.yaml has K = 2: one point on the K axis, no figure, and the table says so
    assert not list(workdir.glob("reports/figures/dtm_k_ablation.*"))
    assert "No K ablation figure: the DTM runs have one K (2)" in (
        workdir / "reports/tables/dtm_merge_methods.md").read_text()


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
    assert set(cost["stage"]) == {"warmup", "gradient features", "hidden-state features", "selection", "final training"}
    warmup = cost[cost.stage == "warmup"].iloc[0]
    assert float(warmup["wall time (s)"]) > 0 and warmup["GPU-hours"] == "n/a"
    assert float(warmup["stored (MiB)"]) > 0
    shots = pd.read_csv(workdir / "reports/tables/selection_shots.csv")
    # every selector scored against a validation set: LESS, ROSE and the baselines
    assert sorted(set(shots["method"])) == ["bm25", "dsir", "less", "rds", "rds_plus", "rose"]
    assert "2-shot" in shots.columns
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
