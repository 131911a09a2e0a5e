"""Judge-free preference win rate: share of test pairs with β·r(y_w) > β·r(y_l), r = log πθ − log πref."""

from __future__ import annotations

from pathlib import Path

from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type
from .preference import prepare_pairs


@register_benchmark_type("implicit_reward")
class ImplicitReward(BenchmarkType):
    scored_by = "implicit_reward"
    gathers_files = True

    def prepare(self, bench, out, pairs_path):
        return prepare_pairs(bench, out, pairs_path)

    def evaluate(self, model, tokenizer, bench, inputs):
        """The win rate in percent, like every other win rate in the tables; πref from ``inputs['reference']``."""
        from transformers import AutoModelForCausalLM

        from sftlab.evaluation.implicit_reward import implicit_reward_win_rate

        reference = AutoModelForCausalLM.from_pretrained(inputs["reference"], dtype=model.dtype)
        reference = reference.to(model.device).eval()
        result = implicit_reward_win_rate(model, reference, tokenizer, read_jsonl(Path(inputs["data"]) / "pairs.jsonl"),
                                          beta=bench["beta"], max_length=bench["max_length"],
                                          batch_size=bench["batch_size"], n_boot=bench["n_resamples"],
                                          seed=bench["seed"])
        return {**result, **{k: 100 * result[k] for k in ("value", "ci_low", "ci_high")}}, []
