"""AlpacaEval 2 and the judged preference win rate: parsing, win-rate arithmetic, order switching, scripts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

from _openai_stub import OpenAIStub
from sftlab.evaluation import alpacaeval, preference
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.judges import Judge, JudgeResponse, OpenAIJudge

ROOT = Path(__file__).resolve().parents[1]
EVAL_SET = ROOT / "tests" / "fixtures" / "alpaca_eval" / "eval_set.json"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_win_rate_counts_ties_as_half():
    # (2-1) + (1-1) + (1.5-1) + (2-1) + (1.25-1) = 2.75 over 5 parsable → 55 %
    result = alpacaeval.win_rate([2, 1, 1.5, 2, None, 1.25], n_resamples=300)
    assert result["value"] == pytest.approx(55.0)
    assert (result["n"], result["n_unparsable"]) == (5, 1)
    assert (result["n_wins"], result["n_losses"], result["n_draws"]) == (2, 2, 1)
    assert result["ci_low"] <= 55.0 <= result["ci_high"]
    assert alpacaeval.win_rate([1.5, 1.5, 1.5])["value"] == pytest.approx(50.0)
    assert alpacaeval.win_rate([2, 2, 1, 1.5])["value"] == pytest.approx(62.5)


def response(top: dict | None = None, text: str = "") -> JudgeResponse:
    return JudgeResponse(text=text, top_logprobs=[top] if top is not None else None)


@pytest.mark.parametrize(
    "top, preference_",
    [
        ({"m": math.log(0.2), "M": math.log(0.6), "x": math.log(0.1)}, 1.75),  # 2 - 0.2/0.8
        ({"M": -0.1, "The": -3.0}, 2.0),
        ({"m": -0.1}, 1.0),
        ({"A": -0.1, "B": -2.0}, None),  # neither identifier among the alternatives
        ({" m": -0.1}, None),  # identifiers are matched exactly, as alpaca_eval does
    ],
)
def test_logprob_preference(top, preference_):
    annotator = alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo")
    got = annotator.parse(response(top))
    assert got == (pytest.approx(preference_) if preference_ is not None else None)


def test_logprob_preference_without_logprobs_is_unparsable():
    assert alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo").parse(response(None, "m")) is None


@pytest.mark.parametrize("text, preference_", [("m", 1.0), (" M\n", 2.0), ("M.", None), ("model m", None), ("", None)])
def test_text_preference(text, preference_):
    assert alpacaeval.get_annotator("alpaca_eval_clf_text").parse(response(None, text)) == preference_


def test_template_is_alpaca_evals_own_when_installed():
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None:
        pytest.skip("alpaca_eval is not installed")
    path = Path(spec.submodule_search_locations[0]) / "evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
    assert path.read_text() == alpacaeval.CLF_TEMPLATE


def test_render_chatml_fills_once_and_splits_messages():
    messages = alpacaeval.render_chatml(
        alpacaeval.CLF_TEMPLATE, {"instruction": "Say {output_2}", "output_1": "first", "output_2": "second"}
    )
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"].startswith("You are a highly efficient assistant")
    user = messages[1]["content"]
    assert '"instruction": """Say {output_2}"""' in user
    assert user.index('"output": """first"""') < user.index('"output": """second"""')
    assert user.endswith("## Best Model Identifier")


class NoLogprobJudge(Judge):
    backend = "test"
    supports_logprobs = False
    id = "test:nologprobs"

    def complete(self, requests):
        raise AssertionError("the annotator must refuse this judge before asking it anything")


def test_weighted_annotator_needs_logprobs(tmp_path):
    with pytest.raises(ValueError, match="log-probabilities"):
        alpacaeval.annotate_pairs(
            NoLogprobJudge(), JudgmentCache(tmp_path / "c.jsonl"), alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo"),
            [{"instruction": "i", "output_1": "a", "output_2": "b"}],
        )


def coin(instruction: str, seed: int) -> bool:
    return hashlib.sha256(f"{seed}\0{instruction}".encode()).digest()[0] % 2 == 1


def test_order_is_switched_per_instruction_and_undone(tmp_path):
    # the stub always prefers the second shown output with P = 0.75 (shown preference 1.75)
    items = [{"instruction": f"task {i}", "output_1": f"reference {i}", "output_2": f"model {i}"} for i in range(10)]
    items.append({"instruction": "same", "output_1": "identical", "output_2": "identical"})
    switched = [coin(item["instruction"], 0) for item in items[:10]]
    assert 0 < sum(switched) < 10  # both orders occur in this sample
    with OpenAIStub() as stub:
        judge = OpenAIJudge("gpt-4-turbo", base_url=stub.base_url, api_key_env=None)
        annotations, usage = alpacaeval.annotate_pairs(
            judge, JudgmentCache(tmp_path / "c.jsonl"), alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo"), items
        )
        assert stub.calls == 10 and usage.calls == 10  # identical outputs are a tie without a call
        for payload in stub.payloads:
            assert payload["max_tokens"] == 1 and payload["top_logprobs"] == 5 and payload["logprobs"] is True
        for payload in stub.payloads:
            user = payload["messages"][1]["content"]
            i = int(user.split('"""task ')[1].split('"""')[0])
            first_shown = user.index(f"model {i}") < user.index(f"reference {i}")
            assert first_shown == switched[i]
    for annotation, was_switched in zip(annotations, switched):
        assert annotation["is_switched"] == was_switched
        assert annotation["preference"] == pytest.approx(1.25 if was_switched else 1.75)
    assert annotations[10]["preference"] == 1.5 and annotations[10]["prompt_hash"] is None


def test_length_controlled_is_reported_unavailable_not_approximated():
    annotations = [
        {"instruction": f"i{k}", "output_1": "r", "output_2": "m" * k, "annotator": "a", "preference": 1.5} for k in range(8)
    ]
    lc = alpacaeval.length_controlled_win_rate(annotations, "model", "reference")
    assert lc["available"] is False and lc["reason"]
    assert set(lc) == {"available", "reason"}


def test_alpaca_eval_scripts_end_to_end(tmp_path):
    eval_set = json.loads(EVAL_SET.read_text())
    model_outputs = tmp_path / "outputs.json"
    # two answers equal the reference (ties); the rest differ
    outputs = [
        {"instruction": e["instruction"], "output": e["output"] if k < 2 else f"short answer {k}", "generator": "tiny", "dataset": e["dataset"]}
        for k, e in enumerate(eval_set)
    ]
    model_outputs.write_text(json.dumps(outputs))
    judge = load_script("judge")
    with OpenAIStub() as stub:
        config = {"backend": "openai", "model": "gpt-4-1106-preview", "base_url": stub.base_url, "api_key_env": None}
        argv = ["--benchmark-type", "alpacaeval", "--answers", str(model_outputs), "--data", str(EVAL_SET.parent),
                "--judge", json.dumps(config), "--cache", str(tmp_path / "c.jsonl"),
                "--judgments", str(tmp_path / "j.jsonl"), "--scores", str(tmp_path / "s.json"), "--n-resamples", "200"]
        judge.main(argv)
        judge.main(argv)
        assert stub.calls == 6
    scores = json.loads((tmp_path / "s.json").read_text())
    expected = [0.5 if k < 2 else (0.25 if coin(e["instruction"], 0) else 0.75) for k, e in enumerate(eval_set)]
    assert scores["value"] == pytest.approx(100 * sum(expected) / 8)
    assert (scores["n"], scores["n_draws"], scores["n_unparsable"]) == (8, 2, 0)
    assert scores["length_controlled"]["available"] is False
    assert scores["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    assert scores["judge_cost"]["calls"] == 0 and scores["judge_cost"]["cached"] == 6


def test_generate_alpaca_eval_outputs_with_tiny_model(tmp_path):
    from sftlab.models.random_init import save_random_model

    save_random_model(tmp_path / "model")
    load_script("generate").main([
        "--benchmark-type", "alpacaeval", "--model", str(tmp_path / "model"), "--model-id", "tiny-sft",
        "--data", str(EVAL_SET.parent), "--out", str(tmp_path / "outputs.json"), "--max-new-tokens", "5", "--device", "cpu",
    ])
    outputs = alpacaeval.load_eval_set(tmp_path / "outputs.json")
    reference = json.loads(EVAL_SET.read_text())
    assert [o["instruction"] for o in outputs] == [r["instruction"] for r in reference]
    assert {o["generator"] for o in outputs} == {"tiny-sft"}
    assert [o["dataset"] for o in outputs] == [r["dataset"] for r in reference]


def test_preference_win_rate_against_chosen_answers(tmp_path):
    pairs = [
        {"id": "shp-1", "prompt": [{"role": "user", "content": "Best way to boil an egg?"}], "chosen": "Simmer 9 minutes.", "rejected": "Microwave it.", "subtask": "shp"},
        {"id": "shp-2", "prompt": [{"role": "user", "content": "Tea or coffee?"}], "chosen": "Either.", "rejected": "Neither.", "subtask": "shp"},
        {"id": "hh-1", "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Tell me a joke."}],
         "chosen": "Why did the tomato blush? It saw the salad dressing.", "rejected": "No.", "subtask": "hh_rlhf"},
    ]
    answers = [{"id": "shp-1", "answer": "Boil it."}, {"id": "shp-2", "answer": "Either."}, {"id": "hh-1", "answer": "A joke."}]
    assert preference.prompt_text(pairs[2]["prompt"]) == "User: Hi\n\nAssistant: Hello!\n\nUser: Tell me a joke."
    with OpenAIStub() as stub:
        judge = OpenAIJudge("gpt-4-turbo", base_url=stub.base_url, api_key_env=None)
        annotations, usage = preference.judge_answers(
            judge, JudgmentCache(tmp_path / "c.jsonl"), alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo"), pairs, answers
        )
    assert usage.calls == 2  # shp-2's answer equals the chosen one: a tie, not judged
    by_id = {a["id"]: a["preference"] for a in annotations}
    expected = {
        "shp-1": 1.25 if coin("Best way to boil an egg?", 0) else 1.75,
        "shp-2": 1.5,
        "hh-1": 1.25 if coin(preference.prompt_text(pairs[2]["prompt"]), 0) else 1.75,
    }
    assert by_id == pytest.approx(expected)
    result = preference.score(annotations, n_resamples=200)
    assert result["value"] == pytest.approx(100 * sum(p - 1 for p in expected.values()) / 3)
    assert result["per_subtask"]["shp"]["value"] == pytest.approx(100 * ((expected["shp-1"] - 1) + 0.5) / 2)
    assert result["per_subtask"]["hh_rlhf"]["n"] == 1
