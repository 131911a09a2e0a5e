"""Per-item log-likelihood of reference answers beside the untrained base model (sftlab.evaluation.nll)."""

from __future__ import annotations

from .base import BenchmarkType, register_benchmark_type


@register_benchmark_type("nll")
class LogLikelihood(BenchmarkType):
    """Scored by rule ``log_likelihood``: the model, the items' file and the base model's log-probs of the items,
    scored once by rule ``base_log_likelihood``."""

    scored_by = "log_likelihood"
    base_scored_by = "base_log_likelihood"
    #: the settings the base model's log-probs depend on (not the bootstrap's)
    base_keys = ("items", "data_dir", "limit", "max_length", "batch_size")

    def base_settings(self, bench: dict) -> dict:
        return {k: bench[k] for k in self.base_keys if k in bench}

    def reads_heldout(self, bench):
        return bench["items"] == "heldout"

    def items_file(self, bench: dict, dataset: str) -> str:
        if bench["items"] == "exam":
            return f"{bench['data_dir']}/test.jsonl"
        return f"results/data/{dataset}/heldout.jsonl"

    def evaluate(self, model, tokenizer, bench, inputs):
        """NLL per token over the items (bootstrap interval) and one row per item: log π(y|x) of the model and of the
        base model (``inputs['base']``, the Parquet file of rule base_log_likelihood), and |y|."""
        import pandas as pd

        from sftlab.evaluation.nll import benchmark_items, score_nll

        base = pd.read_parquet(inputs["base"])
        return score_nll(model, tokenizer, benchmark_items(bench, inputs["items"]), base, bench["max_length"],
                         bench["batch_size"], bench["n_resamples"], bench["seed"])
