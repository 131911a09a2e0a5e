"""Judge-free preference win rate on held-out preference pairs (ROSE): share of test pairs with β·r(y_w) > β·r(y_l).

r(x, y) = log πθ(y|x) − log πref(y|x) (summed over response tokens). A pair is won when β·r(y_w) > β·r(y_l);
for β > 0 that is r(y_w) > r(y_l), so β only matters for the reported reward margins. Ties count as lost
(the definition's strict inequality) and are reported separately. The confidence interval is a percentile
bootstrap over pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

from sftlab.data.tokenize import collate
from sftlab.evaluation.stats import bootstrap_ci
from sftlab.io import read_jsonl
from sftlab.lazy import torch
from sftlab.objectives.base import sequence_logps
from sftlab.progress import progress

from .base import BenchmarkType, register_benchmark_type
from .preference import prepare_pairs


def pair_logps(model: torch.nn.Module, items: list[dict], pad_token_id: int, batch_size: int = 8) -> torch.Tensor:
    """(N, 2) log π(chosen|x), log π(rejected|x) for encoded pairs (``encode_rows(..., kind="dpo")``)."""
    model.eval()
    device = next(model.parameters()).device
    out = torch.empty(len(items), 2, dtype=torch.float64)
    with torch.no_grad():
        for start in progress(range(0, len(items), batch_size), "implicit reward",
                              total=math.ceil(len(items) / batch_size)):
            chunk = items[start : start + batch_size]
            batch = collate([s for item in chunk for s in item["sequences"]], pad_token_id)
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            logps, _ = sequence_logps(logits, batch["labels"].to(device))
            out[start : start + len(chunk)] = logps.view(len(chunk), 2).double().cpu()
    return out


def implicit_reward_win_rate(policy: torch.nn.Module, reference: torch.nn.Module, tokenizer, pairs: list[dict],
                             beta: float = 0.1, max_length: int = 1024, batch_size: int = 8, n_boot: int = 1000,
                             seed: int = 0) -> dict:
    """Scores record ``{"metric", "value", "ci_low", "ci_high", "n", "ties", "skipped", "beta", "mean_margin"}``.

    For a LoRA policy the reference can be the base model loaded separately; pairs whose answers are
    truncated away entirely at ``max_length`` are skipped and counted.
    """
    from sftlab.selection.gradients import encode_rows

    if beta <= 0:
        raise ValueError(f"beta must be positive, got {beta}")
    items, skipped = encode_rows(tokenizer, pairs, "dpo", max_length)
    if not items:
        raise ValueError(f"no scorable preference pairs ({len(skipped)} skipped at max_length={max_length})")
    rewards = (pair_logps(policy, items, tokenizer.pad_token_id, batch_size)
               - pair_logps(reference, items, tokenizer.pad_token_id, batch_size))
    margin = beta * (rewards[:, 0] - rewards[:, 1])
    wins = (margin > 0).double().numpy()
    low, high = bootstrap_ci(wins, n_resamples=n_boot, seed=seed)
    return {
        "metric": "implicit_reward_win_rate",
        "value": float(wins.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": len(items),
        "ties": int((margin == 0).sum()),
        "skipped": len(skipped),
        "beta": beta,
        "mean_margin": float(margin.mean()),
    }


@register_benchmark_type("implicit_reward")
class ImplicitReward(BenchmarkType):
    scored_by = "implicit_reward"
    gathers_files = True

    def prepare(self, bench, out, pairs_path):
        return prepare_pairs(bench, out, pairs_path)

    def evaluate(self, model, tokenizer, bench, inputs):
        """The win rate in percent, like every other win rate in the tables; πref from ``inputs['reference']``."""
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(inputs["reference"], dtype=model.dtype)
        reference = reference.to(model.device).eval()
        result = implicit_reward_win_rate(model, reference, tokenizer, read_jsonl(Path(inputs["data"]) / "pairs.jsonl"),
                                          beta=bench["beta"], max_length=bench["max_length"],
                                          batch_size=bench["batch_size"], n_boot=bench["n_resamples"],
                                          seed=bench["seed"])
        return {**result, **{k: 100 * result[k] for k in ("value", "ci_low", "ci_high")}}, []
