"""Exact match of greedy answers on the run's own held-out examples."""

from __future__ import annotations

from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type


@register_benchmark_type("exact_match")
class ExactMatch(BenchmarkType):
    pool_files = ("heldout", "train")

    def reads_heldout(self, bench):
        return True

    def evaluate(self, model, tokenizer, bench, inputs):
        from sftlab.evaluation.exact_match import exact_match

        examples = read_jsonl(inputs["heldout"])[: bench.get("limit")]
        return exact_match(model, tokenizer, examples, bench["max_new_tokens"], bench["batch_size"])
