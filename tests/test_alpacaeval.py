"""AlpacaEval 2 and the judged preference win rate: parsing, win-rate arithmetic, order switching, scripts."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest

from _openai_stub import OpenAIStub
from sftlab.benchmarks import alpacaeval, preference
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.judges import Judge, JudgeResponse, OpenAIJudge
from sftlab.io import DataError

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


def test_annotators_read_prompt_and_decoding_from_alpaca_eval():
    spec = importlib.util.find_spec("alpaca_eval")
    assert spec is not None, "alpaca_eval is a pinned dependency"
    package = Path(spec.submodule_search_locations[0]) / "evaluators_configs"
    prompt = (package / "alpaca_eval_clf_gpt4_turbo" / "alpaca_eval_clf.txt").read_text()
    weighted = alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo")
    assert weighted.template == prompt
    # weighted_alpaca_eval_gpt4_turbo/configs.yaml: max_tokens 1, temperature 1, logprobs true, top_logprobs 5
    assert (weighted.max_tokens, weighted.temperature, weighted.top_logprobs) == (1, 1.0, 5)
    text = alpacaeval.get_annotator("alpaca_eval_clf_text")
    assert text.template == prompt and (text.max_tokens, text.temperature, text.top_logprobs) == (1, 0.0, 0)
    assert not hasattr(alpacaeval, "CLF_TEMPLATE"), "no verbatim copy of the package's prompt"


def test_annotator_follows_the_config_it_is_pointed_at(tmp_path):
    """A different alpaca_eval config (here a stand-in directory) changes prompt and decoding: nothing is hard-coded."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.txt").write_text("<|im_start|>user\nPick: {instruction} {output_1} {output_2}<|im_end|>")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "configs.yaml").write_text(
        "mine:\n  prompt_template: prompts/p.txt\n  completions_kwargs:\n    max_tokens: 3\n    temperature: 0.5\n"
    )
    annotator = alpacaeval.annotator_from_package("x", lambda r: None, config="mine", config_dir=tmp_path)
    assert (annotator.max_tokens, annotator.temperature, annotator.top_logprobs) == (3, 0.5, 0)
    messages = alpacaeval.render_chatml(annotator.template, {"instruction": "i", "output_1": "a", "output_2": "b"})
    assert messages == [{"role": "user", "content": "Pick: i a b"}]


def test_render_chatml_fills_once_and_splits_messages():
    messages = alpacaeval.render_chatml(
        alpacaeval.get_annotator("weighted_alpaca_eval_gpt4_turbo").template, {"instruction": "Say {output_2}", "output_1": "first", "output_2": "second"}
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


def lc_annotations(n: int, seed: int = 0) -> tuple[list[dict], float, float]:
    """Outputs of random lengths whose preference follows a known logistic model of the length gap: the model's
    output wins more the longer it is. Returns the annotations and the model's intercept and slope."""
    import numpy as np

    rng = np.random.default_rng(seed)
    len_reference = rng.integers(100, 400, n)
    len_model = len_reference + rng.integers(-150, 250, n)
    delta = len_reference - len_model
    intercept, slope = -0.3, -1.5
    p = 1 / (1 + np.exp(-(intercept + slope * np.tanh(delta / delta.std(ddof=1)))))
    annotations = [
        {"instruction": f"task {k}", "output_1": "r" * int(lr), "output_2": "m" * int(lm), "annotator": "a", "preference": 1 + float(pk)}
        for k, (lr, lm, pk) in enumerate(zip(len_reference, len_model, p))
    ]
    return annotations, intercept, slope


def naive_lc(annotations: list[dict]) -> float:
    """The minimal GLM fitted by plain maximum likelihood (scipy, soft labels, no penalty, no cross-validation):
    logit P(model better) = a + b·tanh(Δlen / sd(Δlen)), Δlen = len(reference) − len(model); LC = 100·σ(a)."""
    import numpy as np
    from scipy.optimize import minimize
    from scipy.special import expit

    delta = np.array([len(a["output_1"]) - len(a["output_2"]) for a in annotations], dtype=float)
    x = np.tanh(delta / delta.std(ddof=1))
    y = np.array([a["preference"] - 1 for a in annotations])

    def nll(w):
        p = np.clip(expit(w[0] + w[1] * x), 1e-12, 1 - 1e-12)
        return -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))

    a, _ = minimize(nll, [0.0, 0.0], method="Nelder-Mead", options={"xatol": 1e-9, "fatol": 1e-12}).x
    return 100 * float(expit(a))


def test_length_controlled_win_rate_is_alpaca_evals_glm_on_any_eval_set():
    annotations, intercept, _ = lc_annotations(40)
    raw = alpacaeval.win_rate([a["preference"] for a in annotations])["value"]
    lc = alpacaeval.length_controlled_win_rate(annotations, "model", "reference")
    assert lc["available"] is True and lc["glm"] == "length_controlled_minimal"
    assert lc["value"] == pytest.approx(naive_lc(annotations), abs=0.05)
    assert lc["glm_weights"]["np.tanh(std_delta_len)"] == pytest.approx(-1.5, abs=0.01)
    # the generating model's win rate at zero length gap, and the raw rate that longer outputs inflate
    assert lc["value"] == pytest.approx(100 / (1 + math.exp(-intercept)), abs=0.05)
    assert raw - lc["value"] > 10


def test_length_controlled_needs_enough_parsable_preferences():
    annotations, _, _ = lc_annotations(8)
    for a in annotations[4:]:
        a["preference"] = None
    lc = alpacaeval.length_controlled_win_rate(annotations, "model", "reference")
    assert lc == {"available": False, "reason": lc["reason"]} and "5 instructions" in lc["reason"] and "got 4" in lc["reason"]


def test_length_controlled_refuses_fits_that_say_nothing():
    """alpaca_eval's GLM prints 50 % for a model that lost every comparison (liblinear drops the empty class), and
    its cross-validation zeroes the win-rate term on a handful of instructions (83 % raw → 50): neither is a result."""
    def annotations(preferences):
        return [{"instruction": f"i{k}", "output_1": "r" * 50, "output_2": "m" * (10 + 7 * k), "annotator": "a",
                 "preference": p} for k, p in enumerate(preferences)]

    for preferences, reason in (([1.0] * 6, "every parsable preference is a loss"),
                                ([2.0] * 6, "every parsable preference is a win"),
                                ([2, 2, 2, 2, 2, 1], "zeroed its win-rate term on 6 instructions")):
        lc = alpacaeval.length_controlled_win_rate(annotations(preferences), "model", "reference")
        assert lc["available"] is False and reason in lc["reason"], (preferences, lc)


def fake_hub(monkeypatch, tmp_path, gamed: "pd.DataFrame | None"):
    """Stand-ins for the hub's df_gamed.csv (a file, or no network when ``gamed`` is None)."""
    import huggingface_hub

    glm_winrate = alpacaeval._import_glm()

    def download(repo_id, filename, repo_type=None, **kwargs):
        assert (repo_id, filename, repo_type) == ("tatsu-lab/alpaca_eval", "df_gamed.csv", "dataset")
        if gamed is None:
            raise OSError("no network")
        path = tmp_path / filename
        gamed.to_csv(path, index=False)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(glm_winrate, "hf_hub_download", download)


def test_length_controlled_on_the_official_set_uses_alpaca_evals_v1_glm(monkeypatch, tmp_path):
    """805 instructions: alpaca_eval's own get_length_controlled_winrate with instruction difficulty and the gamed
    baselines (here a synthetic df_gamed.csv in the hub file's columns)."""
    import numpy as np
    import pandas as pd

    annotations, intercept, slope = lc_annotations(805, seed=1)
    rng = np.random.default_rng(2)
    difficulty = rng.normal(0, 0.3, 805)
    rows = []
    for model, gap in (("gamed_verbose", -1.0), ("gamed_concise", 1.0)):  # std_delta_len: reference − model
        p = 1 / (1 + np.exp(-(intercept + slope * np.tanh(gap) + difficulty)))
        rows.append(pd.DataFrame({"model": model, "index": range(805), "preference": p, "std_delta_len": gap,
                                  "instruction_difficulty": difficulty, "not_gamed_baseline": False}))
    fake_hub(monkeypatch, tmp_path, pd.concat(rows, ignore_index=True))
    raw = alpacaeval.win_rate([a["preference"] for a in annotations])["value"]
    lc = alpacaeval.length_controlled_win_rate(annotations, "model", "reference")
    assert lc["available"] is True and lc["glm"] == "length_controlled_v1"
    assert 0 < lc["standard_error"] < 5
    # longer outputs won: controlling for length brings the rate down towards the zero-gap rate σ(−0.3) = 42.6 %
    assert raw - lc["value"] > 8 and abs(lc["value"] - 100 / (1 + math.exp(-intercept))) < 5


def test_length_controlled_on_the_official_set_without_the_hub_fails_naming_the_file(monkeypatch, tmp_path):
    annotations, _, _ = lc_annotations(805)
    fake_hub(monkeypatch, tmp_path, None)
    with pytest.raises(DataError, match="tatsu-lab/alpaca_eval/df_gamed.csv.*no network"):
        alpacaeval.length_controlled_win_rate(annotations, "model", "reference")


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
    lc = scores["length_controlled"]
    assert lc["available"] is True and lc["glm"] == "length_controlled_minimal"
    # every model output is shorter than its reference: the GLM credits part of the losses to length (raw 37.5 %)
    assert lc["value"] == pytest.approx(naive_lc([json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]), abs=0.5)
    assert lc["value"] > scores["value"] + 5
    assert scores["annotator"] == "weighted_alpaca_eval_gpt4_turbo"
    assert scores["judge_cost"]["calls"] == 0 and scores["judge_cost"]["cached"] == 6
    # per instruction, for paired comparisons: its win × 100 (weight 1); the score is their mean
    assert scores["per_item"] == {e["instruction"]: [pytest.approx(100 * w), 1.0] for e, w in zip(eval_set, expected)}
    assert scores["judge"]["prompt_version"].startswith("alpaca_eval 0.6.6 weighted_alpaca_eval_gpt4_turbo (template")


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
