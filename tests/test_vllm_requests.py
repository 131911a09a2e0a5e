"""The vLLM backend's requests, pinned without importing vLLM: chat-templated prompt ids, MT-Bench's temperature per
category, per-request seeds, stop tokens. Also the envs/vllm.yaml environment that the generate rule uses for it."""

from pathlib import Path

import pytest
import yaml

from sftlab.benchmarks import mtbench
from sftlab.evaluation.generation import GenerationRequest, SamplingParams, eos_token_ids, vllm_requests
from sftlab.models.random_init import build_tokenizer

ROOT = Path(__file__).resolve().parents[1]


class Recorder:
    """A Generator that records the requests instead of answering them."""

    def __init__(self):
        self.requests = []

    def generate(self, requests, top_logprobs=0):
        from sftlab.evaluation.generation import Generation

        self.requests += list(requests)
        return [Generation(text="ok", token_ids=[1], prompt_tokens=1) for _ in requests]


def test_mtbench_requests_for_vllm():
    tokenizer = build_tokenizer()
    questions = [{"question_id": i, "category": c, "turns": [f"Question {i}?", "And then?"]}
                 for i, c in enumerate(["writing", "math", "stem", "coding", "roleplay", "unknown"])]
    recorder = Recorder()
    mtbench.generate_answers(recorder, questions, "m", max_new_tokens=64)
    built = vllm_requests(tokenizer, recorder.requests[:6], seed=10, stop_token_ids=[7, 3])
    # FastChat's temperatures: writing 0.7, math 0.0 (greedy), stem 0.1, coding 0.0, roleplay 0.7, unknown 0.7
    assert [kwargs["temperature"] for _, kwargs in built] == [0.7, 0.0, 0.1, 0.0, 0.7, 0.7]
    assert [kwargs["seed"] for _, kwargs in built] == [10, 11, 12, 13, 14, 15]
    for prompt, kwargs in built:
        assert kwargs["max_tokens"] == 64 and kwargs["stop_token_ids"] == [7, 3]
        assert kwargs["ignore_eos"] is False and kwargs["logprobs"] is None and kwargs["top_p"] == 1.0
    # the chat template, rendered with the generation prompt: ChatML for the tiny tokenizer
    expected = "<|im_start|>user\nQuestion 0?<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(built[0][0]) == expected
    # the second turn carries the model's first answer
    second = vllm_requests(tokenizer, recorder.requests[6:7], seed=0, stop_token_ids=[])
    assert tokenizer.decode(second[0][0]) == (expected + "ok<|im_end|>\n<|im_start|>user\nAnd then?<|im_end|>\n"
                                              "<|im_start|>assistant\n")


def test_throughput_requests_ignore_eos_and_ask_for_logprobs():
    tokenizer = build_tokenizer()
    request = GenerationRequest(messages=[{"role": "user", "content": "hi"}],
                                params=SamplingParams(max_new_tokens=5, temperature=0.9, top_p=0.8))
    (_, kwargs), = vllm_requests(tokenizer, [request], 0, [1], stop_at_eos=False, top_logprobs=3)
    assert kwargs["ignore_eos"] is True and kwargs["logprobs"] == 3
    assert (kwargs["temperature"], kwargs["top_p"]) == (0.9, 0.8)


def test_stop_tokens_join_the_generation_config_and_the_tokenizer():
    tokenizer = build_tokenizer()
    config = type("Config", (), {"eos_token_id": [0, 5]})()
    assert eos_token_ids(tokenizer, config) == sorted({0, 5, tokenizer.eos_token_id})
    assert eos_token_ids(tokenizer, None) == [tokenizer.eos_token_id]


def test_vllm_environment_and_rule():
    env = yaml.safe_load((ROOT / "envs" / "vllm.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(p.startswith("vllm==") for p in pip)
    assert not any(p.startswith("torch==") for p in pip)  # vLLM brings the CUDA torch it was built for
    rules = (ROOT / "workflow" / "rules" / "judge.smk").read_text()
    generate = rules[rules.index("rule generate:"):rules.index("rule judge:")]
    assert "conda:\n        PLAN.generation_env" in generate
