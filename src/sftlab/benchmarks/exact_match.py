"""Exact match of greedy answers on the run's own held-out examples whose answers can be checked (the demo corpus).

The model answers each held-out prompt greedily (batched); the answer is correct when it equals the
reference assistant turn after normalisation (case, surrounding white space and final full stop).
"""

from __future__ import annotations

import re
from collections import defaultdict

from sftlab.evaluation.generation import GenerationRequest, SamplingParams, TransformersGenerator
from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type


def normalise_answer(text: str) -> str:
    text = text.strip().lower()
    text = re.sub(r"\s+", " ", text)
    return text.rstrip(".").strip()


def exact_match(model, tokenizer, examples: list[dict], max_new_tokens: int, batch_size: int, seed: int = 0
                ) -> tuple[dict, list[dict]]:
    """(score dict, per-example answers). The score is the percentage of correct answers with a bootstrap CI."""
    if not examples:
        raise ValueError("exact_match: no held-out examples to evaluate")
    generator = TransformersGenerator(model, tokenizer, batch_size=batch_size, seed=seed)
    requests = [GenerationRequest(messages=ex["messages"][:-1], params=SamplingParams(max_new_tokens=max_new_tokens))
                for ex in examples]
    generations = generator.generate(requests)
    answers, correct, by_group = [], [], defaultdict(list)
    for ex, gen in zip(examples, generations):
        ok = normalise_answer(gen.text) == normalise_answer(ex["messages"][-1]["content"])
        correct.append(float(ok))
        by_group[ex.get("source", "").rsplit("/", 1)[0]].append(float(ok))
        answers.append({"id": ex["id"], "reference": ex["messages"][-1]["content"], "output": gen.text, "correct": ok})
    score = {"metric": "exact_match", **mean_with_ci([100.0 * c for c in correct], seed=seed),
             "by_group": {k: 100.0 * sum(v) / len(v) for k, v in sorted(by_group.items())}}
    return score, answers


@register_benchmark_type("exact_match")
class ExactMatch(BenchmarkType):
    pool_files = ("heldout", "train")

    def reads_heldout(self, bench):
        return True

    def evaluate(self, model, tokenizer, bench, inputs):
        examples = read_jsonl(inputs["heldout"])[: bench.get("limit")]
        return exact_match(model, tokenizer, examples, bench["max_new_tokens"], bench["batch_size"])
