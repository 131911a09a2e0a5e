"""Rule judge_calibration's scripts on local samples of the published formats, re-judged by a scripted local OpenAI
server: the agreement numbers are worked out by hand below. Also the pinned sources, the plan-time checks, the
rehearsal's stand-in and the report's table."""

import importlib.util
import json
from pathlib import Path

import pytest

from _openai_stub import OpenAIStub
from sftlab import rehearsal
from sftlab.config import ConfigError
from sftlab.evaluation import calibration_sources as cs
from sftlab.io import DataError, read_jsonl

ROOT = Path(__file__).parents[1]
DEMO = ROOT / "workflow" / "benchmarks" / "calibration_demo"


def script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def run_calibration(tmp_path, kind, calib, data, responder, annotator=None):
    sample = tmp_path / "published"
    script("calibration_data")(["--benchmark-type", kind, "--benchmark-name", "b", "--calibration", json.dumps(calib),
                                "--out", str(sample)])
    with OpenAIStub(responder=responder) as stub:
        judge = {"backend": "openai", "model": "judge-model", "base_url": stub.base_url, "api_key_env": None}
        script("judge_calibration")(["--benchmark-type", kind, "--benchmark-name", "b", "--sample", str(sample),
                                     "--data", str(data), "--judge", json.dumps(judge), "--judge-name", "j",
                                     "--cache", str(tmp_path / "cache.jsonl"), "--rows", str(tmp_path / "rows.jsonl"),
                                     "--summary", str(tmp_path / "summary.json"),
                                     *(["--annotator", annotator] if annotator else [])])
        payloads = list(stub.payloads)
    return json.loads((tmp_path / "summary.json").read_text()), read_jsonl(tmp_path / "rows.jsonl"), payloads


MT_OURS = {"gpt-4": 8, "vicuna-13b-v1.3": 6, "llama-13b": 3}


def mt_responder(payload):
    prompt = payload["messages"][-1]["content"]
    model = next(m for m in MT_OURS if f"answer of {m} to" in prompt)
    return f"Rating: [[{MT_OURS[model]}]]", None


def test_mtbench_calibration_by_hand(tmp_path):
    calib = {"data_dir": str(DEMO / "mt_bench"), "models": list(MT_OURS), "items": 3, "seed": 0}
    summary, rows, payloads = run_calibration(tmp_path, "mtbench", calib, ROOT / "workflow/benchmarks/mt_bench_demo",
                                              mt_responder)
    # 3 models x 3 questions x 2 turns; the gpt-3.5-turbo judgment is not GPT-4's and is left out
    assert len(rows) == len(payloads) == 18
    # the published prompt is sent as it is, under the system prompt of its judge prompt
    prompts = {json.loads(line)["name"]: json.loads(line)
               for line in (ROOT / "workflow/benchmarks/mt_bench_demo/judge_prompts.jsonl").read_text().splitlines()}
    first = next(p for p in payloads if "Demo question 101, turn 2" in p["messages"][1]["content"])
    assert first["messages"][0]["content"] == prompts["single-math-v1-multi-turn"]["system_prompt"]
    # original means: gpt-4 (9+9+8+9+10+9)/6 = 9, vicuna 38/6, llama (3+2+2+1+4)/5 = 2.4 (its -1: unscored);
    # ours 8, 6, 3: the same order
    assert summary["rank"] == {"models": 3, "spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0)}
    # |original - ours|: gpt-4 1 1 0 1 2 1, vicuna 1 0 0 1 2 0, llama 0 1 1 2 1 → 5 exact, 14 within one, of 17
    assert summary["per_item"] == {"items": 17, "unscored": 1, "exact": pytest.approx(5 / 17),
                                   "within_one": pytest.approx(14 / 17)}
    # model means: x = ours (8, 6, 3), y = original (9, 19/3, 2.4): Sxy = 16.71111, Sxx = 12.66667
    models = summary["mapping"]["models"]
    assert models["slope"] == pytest.approx(16.711111 / 12.666667, rel=1e-5)
    assert models["intercept"] == pytest.approx(5.911111 - 16.711111 / 12.666667 * 17 / 3, rel=1e-5)
    assert summary["judge"]["name"] == "j" and summary["original_judge"].startswith("FastChat gpt-4")
    assert summary["published"]["models"] == sorted(MT_OURS)


AE_MODELS = ("gpt4_1106_preview", "vicuna-7b", "falcon-7b-instruct")


def ae_responder(payload):
    """Prefers the model's output for gpt4_1106_preview, for vicuna-7b on the haiku and the synonym, else the
    reference: 'm' names the output shown first."""
    prompt = "".join(m["content"] for m in payload["messages"])
    model = next(m for m in AE_MODELS if f"{m} answer to:" in prompt)
    model_first = prompt.index(f"{model} answer to:") < prompt.index("reference answer to:")
    wants_model = model == "gpt4_1106_preview" or (model == "vicuna-7b" and ("haiku" in prompt or "synonym" in prompt))
    return ("m" if model_first == wants_model else "M"), None


def test_alpacaeval_calibration_by_hand(tmp_path):
    calib = {"data_dir": str(DEMO / "alpaca_eval"), "models": list(AE_MODELS), "items": 4}
    summary, rows, _ = run_calibration(tmp_path, "alpacaeval", calib, tmp_path, ae_responder,
                                       annotator="alpaca_eval_clf_text")
    ours = {(r["model"], r["item"][:5]): r["ours"] for r in rows}
    assert ours[("vicuna-7b", "Write")] == 2.0 and ours[("vicuna-7b", "Name ")] == 1.0
    # winners, original vs ours: gpt4 (tie, model, ref, model) vs all model → 2; vicuna (ref, ref, ref, model) vs
    # (ref, model, ref, model) → 3; falcon (ref, ref, ref, unscored) vs all ref → 3: 8 of 11
    assert summary["per_item"] == {"items": 11, "unscored": 1, "same_winner": pytest.approx(8 / 11)}
    assert summary["rank"]["spearman"] == pytest.approx(1.0)
    # model means: ours (2, 1.5, 1), original (1.55, 1.3, 3.1/3): slope 0.258333/0.5, intercept ȳ − slope · 1.5
    models = summary["mapping"]["models"]
    assert models["slope"] == pytest.approx(0.516667, rel=1e-5)
    assert models["intercept"] == pytest.approx((1.55 + 1.3 + 3.1 / 3) / 3 - 0.516667 * 1.5, rel=1e-4)


def test_sample_is_seeded_shared_and_bounded():
    ids = {"a": {1, 2, 3, 4, 5, 6}, "b": {2, 3, 4, 5, 6, 7}}
    first = cs.sample_ids(ids, 3, seed=0)
    assert first == cs.sample_ids(ids, 3, seed=0) and len(first) == 3 and set(first) <= {2, 3, 4, 5, 6}
    assert {tuple(cs.sample_ids(ids, 3, seed=s)) for s in range(10)} != {tuple(first)}
    assert cs.sample_ids(ids, 99, seed=0) == [2, 3, 4, 5, 6]


def test_downloads_are_pinned_or_refused_naming_the_key():
    key = "benchmarks.mt.calibration"
    with pytest.raises(ConfigError, match=r"benchmarks\.mt\.calibration\.sha256.*gpt-4_single\.jsonl"):
        cs.check_calibrations({"benchmarks": {"mt": {"type": "mtbench", "calibration": {}}}})
    digest = "0" * 64
    assert cs.MTBenchSource().files({"sha256": {"gpt-4_single.jsonl": digest}}, key) == {
        "gpt-4_single.jsonl": (cs.MTBENCH_JUDGMENTS_URL, digest)}
    files = cs.AlpacaEvalSource().files({"models": ["vicuna-7b", "alpaca-7b"]}, key)
    assert files["vicuna-7b/weighted_alpaca_eval_gpt4_turbo/annotations.json"] == (
        f"https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/{cs.ALPACAEVAL_COMMIT}/results/vicuna-7b/"
        "weighted_alpaca_eval_gpt4_turbo/annotations.json", cs.ALPACAEVAL_SHA256["vicuna-7b"])
    with pytest.raises(ConfigError, match=r"sha256\.unpinned-model"):
        cs.AlpacaEvalSource().files({"models": ["vicuna-7b", "unpinned-model"]}, key)
    with pytest.raises(ConfigError, match="no published original-judge scores"):
        cs.check_calibrations({"benchmarks": {"p": {"type": "preference", "calibration": {}}}})


def test_a_copy_that_differs_from_its_digest_is_refused(tmp_path):
    calib = {"data_dir": str(DEMO / "mt_bench"), "sha256": {"gpt-4_single.jsonl": "0" * 64}}
    with pytest.raises(DataError, match="differs from the pinned"):
        cs.gather("mtbench", calib, "benchmarks.mt.calibration", tmp_path)


def test_rehearsal_reads_the_local_sample():
    bench = {"type": "mtbench", "judge": "gpt4", "calibration": {"sha256": {"gpt-4_single.jsonl": "0" * 64},
                                                                 "items": 10, "seed": 3}}
    out = rehearsal.shrink_benchmark(bench, {}, rehearsal.FIXTURES)["calibration"]
    assert out == {"data_dir": str(DEMO / "mt_bench"), "models": ["gpt-4", "llama-13b", "vicuna-13b-v1.3"],
                   "items": 2, "seed": 3}
    ae = rehearsal.shrink_benchmark({"type": "alpacaeval", "judge": "g", "calibration": {}}, {}, rehearsal.FIXTURES)
    assert ae["calibration"]["models"] == sorted(AE_MODELS)


def test_calibration_beside_the_judges(tmp_path):
    from sftlab.report.judges import calibration_note, calibration_table, with_calibration
    import pandas as pd

    summary = {"benchmark": "mt", "original_judge": "FastChat gpt-4", "judge": {"name": "j", "id": "openai:x"},
               "kind": "rating", "rank": {"models": 3, "spearman": 1.0, "kendall": 1.0},
               "per_item": {"items": 17, "unscored": 1, "exact": 5 / 17, "within_one": 14 / 17},
               "mapping": {"items": {"intercept": None, "slope": None, "r": None, "n": 1},
                           "models": {"intercept": -1.5649, "slope": 1.3193, "r": 0.99, "n": 3}}}
    (tmp_path / "s.json").write_text(json.dumps(summary))
    table = calibration_table([tmp_path / "s.json"])
    row = table.iloc[0]
    assert (row["spearman"], row["agreement"]) == ("1.00", "29% same rating, 82% within 1")
    assert row["mapping (model means)"] == "original ≈ -1.56 + 1.32 · ours (n = 3, r = 0.99)"
    judges = pd.DataFrame({"judge_id": ["openai:x", "openai:x"], "benchmark": ["mt", "ae"]})
    assert calibration_note(table) == (
        "Calibration against the original judges (reports/tables/judge_calibration; model means): mt by j against "
        "FastChat gpt-4: ρ 1.00 over 3 models, 29% same rating, 82% within 1; original ≈ -1.56 + 1.32 · ours "
        "(n = 3, r = 0.99).")
    assert calibration_note(calibration_table([])) is None
    assert list(with_calibration(judges, table)["calibration"]) == [
        "ρ 1.00 over 3 models; 29% same rating, 82% within 1", "n/a"]


def plan_tiny(tmp_path, edit, *args):
    import os
    import subprocess
    import sys

    import yaml

    config = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text())
    edit(config)
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("SFTLAB_UNSET_KEY", None)
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                           str(tmp_path / "work"), "--configfile", str(configfile), "--cores", "1", *args],
                          capture_output=True, text=True, env=env, timeout=900)


def test_planning_refuses_a_download_without_digest_naming_the_key(tmp_path):
    def edit(config):
        config["benchmarks"]["mt_tiny"]["calibration"] = {"items": 2}
    proc = plan_tiny(tmp_path, edit, "-n")
    assert proc.returncode != 0
    assert "config key benchmarks.mt_tiny.calibration.sha256" in proc.stdout + proc.stderr


def test_a_calibration_by_an_api_judge_needs_its_key_before_the_first_job(tmp_path):
    def edit(config):
        config["judges"]["api"] = {"type": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                                   "api_key_env": "SFTLAB_UNSET_KEY"}
        config["benchmarks"]["ae_tiny"]["judge"] = "api"
    proc = plan_tiny(tmp_path, edit, "results/calibration/ae_tiny/summary.json")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "config key judges.api.api_key_env" in output and "ae_tiny" in output
    assert not (tmp_path / "work" / "results" / "calibration").exists()   # refused before any job
