"""A judge that never gives a rating in the expected format: the job fails loudly instead of writing a null score that
drops the benchmark from every table (a demo-quality judge writes the null with a warning)."""

import importlib.util
import json
from pathlib import Path

import pytest

from _openai_stub import OpenAIStub

ROOT = Path(__file__).resolve().parents[1]
MT = ROOT / "tests" / "fixtures" / "mt_bench"


def judge_script():
    spec = importlib.util.spec_from_file_location("script_judge", ROOT / "scripts" / "judge.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path, responder, **judge_options):
    answers = tmp_path / "answers.jsonl"
    questions = [json.loads(line) for line in (MT / "question.jsonl").read_text().splitlines()]
    answers.write_text("".join(json.dumps({"question_id": q["question_id"], "model_id": "m", "choices": [{"turns": ["Fine.", "Also fine."]}]})
                               + "\n" for q in questions))
    with OpenAIStub(responder=responder) as stub:
        config = {"backend": "openai", "model": "gpt-4", "base_url": stub.base_url, "api_key_env": None,
                  "max_retries": 0, **judge_options}
        judge_script().main(["--benchmark-type", "mtbench", "--data", str(MT), "--answers", str(answers),
                             "--judge", json.dumps(config), "--cache", str(tmp_path / "cache.jsonl"),
                             "--judgments", str(tmp_path / "j.jsonl"), "--scores", str(tmp_path / "s.json"),
                             "--n-resamples", "10"])
    return json.loads((tmp_path / "s.json").read_text())


def never_rates(payload):
    return "The answer is fine, I would rate it highly.", None


def test_a_judge_that_never_rates_fails_loudly(tmp_path):
    with pytest.raises(SystemExit, match=r"none of the 16 judgments .* holds a rating .*cache\.jsonl"):
        run(tmp_path, never_rates)
    assert not (tmp_path / "s.json").exists()


def test_a_demo_quality_judge_writes_the_null_score(tmp_path):
    scores = run(tmp_path, never_rates, demo_quality=True)
    assert scores["value"] is None and (scores["n"], scores["n_unparsable"]) == (0, 16)


def test_one_parsed_rating_is_a_score(tmp_path):
    calls = []

    def one_rating(payload):
        calls.append(payload)
        return ("Rating: [[4]]" if len(calls) == 1 else "no idea"), None

    scores = run(tmp_path, one_rating)
    assert (scores["value"], scores["n"], scores["n_unparsable"]) == (4.0, 1, 15)
