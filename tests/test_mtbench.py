"""MT-Bench: formats, judge prompts, [[rating]] parsing, scores; and the generation backends it uses."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from statistics import mean

import pytest
import torch

from _openai_stub import OpenAIStub
from _raw_files import raw_files
from sftlab.benchmarks import mtbench
from sftlab.evaluation.generation import (
    Generation,
    GenerationRequest,
    Generator,
    SamplingParams,
    TransformersGenerator,
    build_generator,
    generate_chats,
)
from sftlab.io import DataError
from sftlab.models.random_init import build_random_model

ROOT = Path(__file__).resolve().parents[1]
MT = ROOT / "tests" / "fixtures" / "mt_bench"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "judgment, rating",
    [
        ("The answer is accurate and clear.\n\nRating: [[7]]", 7.0),
        ("Rating: [[8.5]]", 8.5),
        ("Rating: [[10]]", 10.0),
        ("I would give it [6] overall.", 6.0),  # fallback pattern
        ("First [[3]], on reflection [[9]]", 3.0),  # the first match counts
        ("Rating: [[ 7 ]]", None),  # spaces: neither pattern
        ("Rating: [[7/10]]", None),
        ("Rating: [[11]]", None),  # outside 1-10
        ("Rating: [[0]]", None),
        ("Rating: seven out of ten", None),
        ("", None),
    ],
)
def test_parse_rating(judgment, rating):
    assert mtbench.parse_rating(judgment) == rating


def test_fixtures_follow_fastchat_formats():
    questions = mtbench.load_questions(MT / "question.jsonl")
    assert len(questions) == 8 and {q["category"] for q in questions} == set(mtbench.CATEGORIES)
    assert all(len(q["turns"]) == 2 for q in questions)
    prompts = mtbench.load_judge_prompts(MT / "judge_prompts.jsonl")
    assert set(mtbench.JUDGE_PROMPT_NAMES.values()) <= set(prompts)
    references = mtbench.load_answers(MT / "reference_answer" / "gpt-4.jsonl")
    needs_ref = {q["question_id"] for q in questions if q["category"] in mtbench.NEED_REF_CATEGORIES}
    assert needs_ref == set(references)
    assert references[4] == ["102", "30"]  # a bare-number turn becomes text


def test_judge_prompts_pick_reference_guided_and_multi_turn_templates():
    questions = {q["category"]: q for q in mtbench.load_questions(MT / "question.jsonl")}
    prompts = mtbench.load_judge_prompts(MT / "judge_prompts.jsonl")
    references = mtbench.load_answers(MT / "reference_answer" / "gpt-4.jsonl")
    math_q = questions["math"]
    name, user, messages = mtbench.judge_prompt(math_q, ["It is 102.", "It is 30."], 1, prompts, references[4])
    assert name == "single-math-v1"
    assert "[Reference Answer]\n102\n" in user and "It is 102." in user and "It is 30." not in user
    assert messages == [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}]
    name, user, _ = mtbench.judge_prompt(math_q, ["It is 102.", "It is 30."], 2, prompts, references[4])
    assert name == "single-math-v1-multi-turn"
    assert user.count("What is 17 multiplied by 6?") == 2 and "### Reference answer:\n30" in user
    name, user, messages = mtbench.judge_prompt(questions["writing"], ["Hi!", "Go garden!"], 2, prompts, None)
    assert name == "single-v1-multi-turn"
    assert "### Assistant:\nHi!" in user and "### Assistant:\nGo garden!" in user
    assert messages[0]["content"] == prompts["single-v1-multi-turn"]["system_prompt"]
    with pytest.raises(ValueError, match="no reference answer"):
        mtbench.judge_prompt(math_q, ["a", "b"], 1, prompts, None)


def test_scores_overall_per_turn_per_category_by_hand():
    rows = [
        ("writing", 1, 8.0), ("math", 1, 4.0), ("coding", 1, None),
        ("writing", 2, 6.0), ("math", 2, 10.0), ("coding", 2, 3.0),
    ]
    judgments = [{"category": c, "turn": t, "score": s} for c, t, s in rows]
    result = mtbench.score(judgments, n_resamples=500)
    assert result["value"] == pytest.approx(31 / 5) and result["n"] == 5 and result["n_unparsable"] == 1
    assert result["per_turn"]["1"]["value"] == pytest.approx(6.0) and result["per_turn"]["1"]["n_unparsable"] == 1
    assert result["per_turn"]["2"]["value"] == pytest.approx(19 / 3)
    assert result["per_category"]["writing"]["value"] == pytest.approx(7.0)
    assert result["per_category"]["math"]["value"] == pytest.approx(7.0)
    assert result["per_category"]["coding"] == {"value": 3.0, "ci_low": 3.0, "ci_high": 3.0, "n": 1, "n_unparsable": 1}
    assert 3.0 <= result["ci_low"] <= result["value"] <= result["ci_high"] <= 10.0
    all_bad = mtbench.score([{"category": "math", "turn": 1, "score": None}])
    assert all_bad["value"] is None and all_bad["n"] == 0 and all_bad["n_unparsable"] == 1


class RecordingGenerator(Generator):
    """Answers "answer k" to the k-th request it sees and records every request."""

    def __init__(self):
        self.requests: list[GenerationRequest] = []

    @classmethod
    def from_pretrained(cls, model_path, **options):
        return cls()

    def generate(self, requests, top_logprobs=0):
        out = []
        for r in requests:
            self.requests.append(r)
            out.append(Generation(text=f"answer {len(self.requests)}", token_ids=[], prompt_tokens=0))
        return out


def test_turn_two_sees_the_models_own_first_answer_and_category_temperatures():
    questions = mtbench.load_questions(MT / "question.jsonl")
    generator = RecordingGenerator()
    answers = mtbench.generate_answers(generator, questions, "spy", max_new_tokens=32)
    assert len(generator.requests) == 16
    first_turn, second_turn = generator.requests[:8], generator.requests[8:]
    for q, r1, r2, answer in zip(questions, first_turn, second_turn, answers):
        assert r1.messages == [{"role": "user", "content": q["turns"][0]}]
        own = answer["choices"][0]["turns"][0]
        assert r2.messages == [
            {"role": "user", "content": q["turns"][0]},
            {"role": "assistant", "content": own},
            {"role": "user", "content": q["turns"][1]},
        ]
        assert r1.params == r2.params == SamplingParams(32, {"writing": 0.7, "roleplay": 0.7, "stem": 0.1, "humanities": 0.1}.get(q["category"], 0.0))
        assert answer["question_id"] == q["question_id"] and answer["model_id"] == "spy"


@pytest.fixture(scope="module")
def tiny():
    return build_random_model()


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny):
    model, tokenizer = tiny
    requests = [
        GenerationRequest([{"role": "user", "content": "What is " + "ab" * i}], SamplingParams(max_new_tokens=6))
        for i in range(5)
    ]
    batched = TransformersGenerator(model, tokenizer, batch_size=4).generate(requests)
    single = TransformersGenerator(model, tokenizer, batch_size=1).generate(requests)
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]


def test_sampling_is_seeded_and_per_request_parameters_hold(tiny):
    model, tokenizer = tiny
    requests = [
        GenerationRequest([{"role": "user", "content": f"Count {i}"}], SamplingParams(max_new_tokens=3 + i % 2, temperature=1.0))
        for i in range(4)
    ]
    first = TransformersGenerator(model, tokenizer, batch_size=4, seed=3, stop_at_eos=False).generate(requests)
    second = TransformersGenerator(model, tokenizer, batch_size=4, seed=3, stop_at_eos=False).generate(requests)
    assert [g.token_ids for g in first] == [g.token_ids for g in second]
    assert [len(g.token_ids) for g in first] == [3, 4, 3, 4]
    other = TransformersGenerator(model, tokenizer, batch_size=4, seed=4, stop_at_eos=False).generate(requests)
    assert [g.token_ids for g in other] != [g.token_ids for g in first]


def test_top_logprobs_match_a_forward_pass(tiny):
    model, tokenizer = tiny
    request = GenerationRequest([{"role": "user", "content": "Yes or No?"}], SamplingParams(max_new_tokens=1))
    generation = TransformersGenerator(model, tokenizer).generate([request], top_logprobs=3)[0]
    from sftlab.data.tokenize import encode_prompt

    ids = torch.tensor([encode_prompt(tokenizer, request.messages)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), -1)
    best = logprobs.topk(3)
    expected = {tokenizer.decode([i]): v for v, i in zip(best.values.tolist(), best.indices.tolist())}
    assert list(generation.top_logprobs[0]) == list(expected)
    assert generation.top_logprobs[0] == pytest.approx(expected, abs=1e-5)
    assert generation.token_ids[0] == best.indices[0].item()


def test_vllm_backend_refuses_clearly_without_gpu_or_package():
    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vllm and a GPU are present")
    with pytest.raises(RuntimeError, match="vllm"):
        build_generator("vllm", "unused-model-path")


def test_generate_chats_batches_every_turn(tiny):
    model, tokenizer = tiny
    generator = TransformersGenerator(model, tokenizer, batch_size=8)
    answers = generate_chats(generator, [["Hi", "More"], ["One"]], [SamplingParams(4), SamplingParams(4)])
    assert [len(a) for a in answers] == [2, 1]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from sftlab.models.random_init import save_random_model

    path = tmp_path_factory.mktemp("tiny_mt")
    save_random_model(path)
    return path


def test_scripts_end_to_end_with_cache_and_hf_judge(tiny_model_dir, tmp_path, monkeypatch):
    generate, judge = load_script("generate"), load_script("judge")
    answers = tmp_path / "answers.jsonl"
    generate.main([
        "--benchmark-type", "mtbench", "--model", str(tiny_model_dir), "--model-id", "tiny", "--data",
        str(MT), "--out", str(answers), "--max-new-tokens", "6", "--device", "cpu",
    ])
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert len(rows) == 8 and all(len(r["choices"][0]["turns"]) == 2 for r in rows)
    files = ["--data", str(MT), "--n-resamples", "200"]

    # a local model as judge: its output may be unparsable, which is counted, never replaced
    config = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 8, "device": "cpu", "max_tokens": 8, "demo_quality": True}
    judge.main(["--benchmark-type", "mtbench", "--answers", str(answers), "--judge", json.dumps(config),
                "--cache", str(tmp_path / "hf_cache.jsonl"), "--judgments", str(tmp_path / "hf.jsonl"),
                "--scores", str(tmp_path / "hf.json"), *files])
    scores = json.loads((tmp_path / "hf.json").read_text())
    judgments = [json.loads(line) for line in (tmp_path / "hf.jsonl").read_text().splitlines()]
    assert len(judgments) == 16 and scores["n"] + scores["n_unparsable"] == 16
    assert scores["n_unparsable"] == sum(mtbench.parse_rating(j["judgment"]) is None for j in judgments)
    prompts_sha = hashlib.sha256((MT / "judge_prompts.jsonl").read_bytes()).hexdigest()[:12]
    assert scores["judge"] == {"name": f"hf:{tiny_model_dir}", "id": f"hf:{tiny_model_dir}", "backend": "hf",
                               "demo_quality": True, "model": str(tiny_model_dir),
                               "prompt_version": f"FastChat judge_prompts.jsonl sha256:{prompts_sha}",
                               "decoding": [{"max_tokens": 8, "temperature": 0.0, "top_logprobs": 0}]}
    assert scores["judge_cost"]["calls"] == 16

    # an OpenAI-compatible judge: the stub rates 1 + (length of system + user prompt) mod 10
    with OpenAIStub() as stub:
        config = {"backend": "openai", "model": "gpt-4", "base_url": stub.base_url, "api_key_env": None}
        argv = ["--benchmark-type", "mtbench", "--answers", str(answers), "--judge", json.dumps(config),
                "--cache", str(tmp_path / "cache.jsonl"), "--judgments", str(tmp_path / "j.jsonl"),
                "--scores", str(tmp_path / "s.json"), *files]
        judge.main(argv)
        expected = [1 + len("".join(m["content"] for m in p["messages"])) % 10 for p in stub.payloads]
        assert all(p["temperature"] == 0.0 and p["max_tokens"] == 2048 for p in stub.payloads)
        judge.main(argv)
        assert stub.calls == 16
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["value"] == pytest.approx(mean(expected)) and scores["n"] == 16 and scores["n_unparsable"] == 0
    assert scores["judge_cost"] == {"calls": 0, "cached": 16, "prompt_tokens": 16 * 11, "completion_tokens": 16 * 3}
    assert set(scores["per_category"]) == set(mtbench.CATEGORIES) and set(scores["per_turn"]) == {"1", "2"}
    first = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])
    assert set(first) >= {"question_id", "turn", "judge", "judgment", "score", "prompt_hash", "user_prompt"}


def official_files():
    """The fixture files at their paths in FastChat's repository."""
    return {repo_path: MT / name for name, repo_path in mtbench.OFFICIAL_FILES.items()}


def test_download_official_from_a_pinned_commit(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    with raw_files(tmp_path / "served", commit, official_files()) as url:
        source = mtbench.download_official(tmp_path / "mt_bench", commit=commit, raw_url=url)
    assert source["commit"] == commit and source["n_questions"] == 8
    for name in mtbench.OFFICIAL_FILES:
        data = (tmp_path / "mt_bench" / name).read_bytes()
        assert data == (MT / name).read_bytes()
        assert source["files"][name]["sha256"] == hashlib.sha256(data).hexdigest()
    assert json.loads((tmp_path / "mt_bench" / "SOURCE.json").read_text()) == source


def test_download_at_the_pinned_commit_refuses_files_with_other_digests(tmp_path):
    with raw_files(tmp_path / "served", mtbench.FASTCHAT_COMMIT, official_files()) as url:
        with pytest.raises(ValueError, match="differs from the pinned"):
            mtbench.download_official(tmp_path / "mt_bench", raw_url=url)
    assert not (tmp_path / "mt_bench" / "question.jsonl").exists()


def test_a_file_missing_at_the_commit_is_a_data_error_naming_its_url(tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    files = official_files()
    del files[mtbench.OFFICIAL_FILES["judge_prompts.jsonl"]]
    with raw_files(tmp_path / "served", commit, files) as url:
        with pytest.raises(DataError, match=rf"{url}/{commit}/.*judge_prompts.jsonl: HTTP 404"):
            mtbench.download_official(tmp_path / "mt_bench", commit=commit, raw_url=url)
    assert not (tmp_path / "mt_bench" / "question.jsonl").exists()
