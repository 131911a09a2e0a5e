"""Judge variance: `repeats: n` asks the judge n times (distinct cache entries) and records its spread; two recipes'
judged scores compare by a paired bootstrap over the items both were judged on."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from _openai_stub import OpenAIStub
from test_mtbench import load_script
from sftlab.evaluation.stats import bootstrap_ci, paired_difference
from sftlab.report.tables import load_scores, score_difference

ROOT = Path(__file__).resolve().parents[1]
MT = ROOT / "tests" / "fixtures" / "mt_bench"


def test_paired_difference_is_the_bootstrap_of_per_item_differences():
    """With one unit-weight value per item the paired interval is the seeded bootstrap of the differences (the same
    draws), and the value is the difference of the means over the shared items only."""
    rng = np.random.default_rng(3)
    old = rng.normal(5.0, 2.0, 40)
    new = old + 0.3 + rng.normal(0.0, 0.2, 40)  # a small effect, strongly paired
    diff = paired_difference({f"{i:02d}": [v, 1.0] for i, v in enumerate(new)},  # keys sort as positions
                             {**{f"{i:02d}": [v, 1.0] for i, v in enumerate(old)}, "extra": [100.0, 1.0]},
                             n_resamples=500, seed=7)
    assert diff["n"] == 40 and diff["value"] == pytest.approx(float(np.mean(new - old)))
    assert (diff["ci_low"], diff["ci_high"]) == pytest.approx(bootstrap_ci(new - old, n_resamples=500, seed=7))
    # pairing is what makes the effect visible: unpaired, each side's own interval is wider than the difference
    low, high = bootstrap_ci(old, n_resamples=500, seed=7)
    assert diff["ci_high"] - diff["ci_low"] < (high - low) / 5 and diff["ci_low"] > 0
    # weights: a score is Σ sum / Σ weight (item a: 3 decisive wins of 3 battles; item b: 1 loss of 1)
    weighted = paired_difference({"a": [300.0, 3.0], "b": [0.0, 1.0]}, {"a": [0.0, 3.0], "b": [0.0, 1.0]})
    assert weighted["value"] == pytest.approx(75.0)
    assert paired_difference({"a": [1.0, 1.0]}, {"b": [1.0, 1.0]})["value"] is None


def mt_answers(path: Path) -> Path:
    rows = [json.loads(line) for line in (MT / "question.jsonl").read_text().splitlines()]
    path.write_text("".join(json.dumps({"question_id": q["question_id"], "model_id": "m", "choices": [
        {"index": 0, "turns": [f"answer {i}" for i in range(len(q["turns"]))]}]}) + "\n" for q in rows))
    return path


def test_repeats_ask_the_judge_again_and_record_its_spread(tmp_path):
    """Three repeats of MT-Bench's 16 judgments: 48 calls, the first at the protocol's temperature 0, the others at
    repeat_temperature; the score is the first judging's, the spread is over the three; a rerun makes no call."""
    judge = load_script("judge")
    lock, calls = threading.Lock(), [0]

    def rating_per_repeat(payload):
        with lock:
            calls[0] += 1
            repeat = (calls[0] - 1) // 16  # the repeats run one after another
        return f"Rating: [[{4 + 2 * repeat}]]", None

    with OpenAIStub(responder=rating_per_repeat) as stub:
        config = {"backend": "openai", "model": "m", "base_url": stub.base_url, "api_key_env": None, "repeats": 3,
                  "repeat_temperature": 0.7}
        argv = ["--benchmark-type", "mtbench", "--answers", str(mt_answers(tmp_path / "a.jsonl")), "--judge",
                json.dumps(config), "--cache", str(tmp_path / "cache.jsonl"), "--judgments", str(tmp_path / "j.jsonl"),
                "--scores", str(tmp_path / "s.json"), "--data", str(MT), "--n-resamples", "100"]
        judge.main(argv)
        temperatures = sorted(p["temperature"] for p in stub.payloads)
        judge.main(argv)
        assert stub.calls == 48
    assert temperatures == [0.0] * 16 + [0.7] * 32
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["value"] == 4.0 and scores["judge"]["repeats"] == 3
    assert scores["judge_repeats"] == {"n": 3, "values": [4.0, 6.0, 8.0], "mean": 6.0, "std": 2.0, "range": 4.0}
    assert scores["judge_cost"]["cached"] == 48 and scores["judge"]["decoding"] == [
        {"max_tokens": 2048, "temperature": 0.0, "top_logprobs": 0}]
    # per question: its two turns' ratings summed, and two turns (the first judging's)
    assert scores["per_item"] == {str(q): [8.0, 2.0] for q in range(1, 9)}


def write_judged(root: Path, recipe: str, per_item: dict, std: float | None) -> Path:
    path = root / "results" / "m" / "d" / "runs" / recipe / "scores" / "mt.json"
    path.parent.mkdir(parents=True)
    value = sum(s for s, _ in per_item.values()) / sum(w for _, w in per_item.values())
    judge = {"id": "openai:j", "model": "j", "prompt_version": "v1", "decoding": [{"temperature": 0.0}]}
    path.write_text(json.dumps({"benchmark": "mt", "metric": "m", "value": value, "judge": judge, "n_resamples": 300,
                                "seed": 1, "per_item": per_item,
                                **({"judge_repeats": {"std": std}} if std is not None else {})}))
    return path


def test_a_judged_difference_shows_its_paired_interval_and_the_judge_spread(tmp_path):
    new = {str(i): [5.0 + (i % 3), 1.0] for i in range(30)}
    old = {str(i): [4.5 + (i % 3), 1.0] for i in range(30)}
    scores = load_scores([write_judged(tmp_path, "a", new, 0.3), write_judged(tmp_path, "b", old, 0.4)])
    a, b = (next(r for r in scores.itertuples() if r.recipe == name) for name in ("a", "b"))
    # every item moves by 0.5: the paired interval is [0.5, 0.5]; judge sd √(0.3² + 0.4²) = 0.5
    assert score_difference(a, b) == "0.50 [0.5, 0.5]; judge sd 0.50"
    without = load_scores([write_judged(tmp_path / "x", "a", new, None), write_judged(tmp_path / "x", "b", old, None)])
    a, b = (next(r for r in without.itertuples() if r.recipe == name) for name in ("a", "b"))
    assert score_difference(a, b) == "0.50 [0.5, 0.5]"


def test_every_judged_run_is_compared_with_the_baseline_under_one_judge(tmp_path):
    from sftlab.report.judges import judged_comparisons

    new = {str(i): [5.0 + (i % 3), 1.0] for i in range(30)}
    old = {str(i): [4.5 + (i % 3), 1.0] for i in range(30)}
    paths = [write_judged(tmp_path, "sft", old, None), write_judged(tmp_path, "ours", new, None)]
    other = write_judged(tmp_path, "theirs", new, None)
    score = json.loads(other.read_text())
    score["judge"]["model"] = "k"  # another judge model: no difference is computed against the baseline
    other.write_text(json.dumps(score))
    table = judged_comparisons(load_scores([*paths, other]), "sft").set_index("recipe")
    assert list(table.index) == ["ours", "theirs"]
    assert table.loc["ours", "difference"] == "0.50 [0.5, 0.5]" and table.loc["ours", "judge"] == "openai:j"
    assert table.loc["theirs", "difference"] == "n/a (judges differ)"


def test_unjudged_differences_are_plain(tmp_path):
    paths = []
    for recipe, value in (("a", 0.7), ("b", 0.5)):
        path = tmp_path / "results" / "m" / "d" / "runs" / recipe / "scores" / "ifeval.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"benchmark": "ifeval", "metric": "acc", "value": value}))
        paths.append(path)
    a, b = load_scores(paths).itertuples()
    assert score_difference(a, b) == "0.20"


def test_the_recorded_decoding_is_the_one_the_backend_used():
    from sftlab.evaluation.judges import HFJudge, JudgeUsage, judge_identity

    usage = JudgeUsage()
    usage.add_decoding({"max_tokens": 1, "temperature": 1.0, "top_logprobs": 5})
    usage.add_decoding({"max_tokens": 1, "temperature": 1.0, "top_logprobs": 5})  # recorded once
    identity = judge_identity(HFJudge("some/dir"), {"demo_quality": True}, "local", usage, "v1", "gpt-4-0613")
    # a local model decodes greedily whatever the annotator asks
    assert identity == {"name": "local", "id": "hf:some/dir", "backend": "hf", "model": "some/dir",
                        "prompt_version": "v1", "decoding": [{"max_tokens": 1, "temperature": 0.0, "top_logprobs": 5}],
                        "demo_quality": True, "paper_judge": "gpt-4-0613"}
