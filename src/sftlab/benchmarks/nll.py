"""Per-item log-likelihood of reference answers beside the untrained base model (sftlab.evaluation.nll)."""

from __future__ import annotations

from .base import BenchmarkType, register_benchmark_type


@register_benchmark_type("nll")
class LogLikelihood(BenchmarkType):
    """Scored by rule ``log_likelihood``: the model, its base model and the items' file."""

    scored_by = "log_likelihood"

    def items_file(self, bench: dict, dataset: str) -> str:
        if bench["items"] == "exam":
            return f"{bench['data_dir']}/test.jsonl"
        return f"results/data/{dataset}/heldout.jsonl"

    def evaluate(self, model, tokenizer, bench, inputs):
        """NLL per token over the items (bootstrap interval) and one row per item: log π(y|x) of the model and of the
        base model ``inputs['reference']``, and |y|."""
        from transformers import AutoModelForCausalLM

        from sftlab.evaluation.nll import benchmark_items, score_nll

        reference = AutoModelForCausalLM.from_pretrained(inputs["reference"], dtype=model.dtype)
        reference = reference.to(model.device).eval()
        return score_nll(model, reference, tokenizer, benchmark_items(bench, inputs["items"]), bench["max_length"],
                         bench["batch_size"], bench["n_resamples"], bench["seed"])
