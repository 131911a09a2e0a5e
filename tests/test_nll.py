"""The nll benchmark: the base model's log-probs of the items are scored once (base_scores) and every run's scoring
reads them; each item's numbers equal a naive one-item-at-a-time forward pass, and a base table scored on other tokens
is refused."""

import math

import pytest
import torch

from sftlab.data.tokenize import encode_example, ensure_chat_template
from sftlab.benchmarks.nll import base_scores, score_nll
from sftlab.models.materialise import materialise

ITEMS = [
    {"id": "a", "source": "demo/x/clean", "messages": [{"role": "user", "content": "What is 2 plus 2"},
                                                       {"role": "assistant", "content": "4"}]},
    {"id": "b", "source": "demo/y/clean", "messages": [{"role": "user", "content": "Reverse the word answer"},
                                                       {"role": "assistant", "content": "rewsna is the answer"}]},
    {"id": "c", "source": "demo/x/clean", "messages": [{"role": "user", "content": "Uppercase the word question"},
                                                       {"role": "assistant", "content": "QUESTION"}]},
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = {}
    for seed in (0, 1):  # the base model and a "trained" one: another draw of the same architecture
        path = tmp_path_factory.mktemp(f"seed{seed}") / "model"
        materialise({"source": "random", "seed": seed}, path)
        out[seed] = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    return out[0], out[1], tokenizer


def naive_logp(model, tokenizer, item, max_length):
    """log π(y|x) summed over the answer's tokens, one item alone (no padding), by a plain log-softmax."""
    enc = encode_example(tokenizer, item["messages"], max_length)
    ids, labels = torch.tensor([enc["input_ids"]]), enc["labels"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    picked = [(t - 1, y) for t, y in enumerate(labels) if y != -100]
    return sum(float(logprobs[t, y]) for t, y in picked), len(picked)


def test_runs_read_the_base_log_probs_scored_once(models):
    base_model, run_model, tokenizer = models
    base = base_scores(base_model, tokenizer, ITEMS, max_length=64, batch_size=2)
    assert base["id"].tolist() == ["a", "b", "c"]
    for item, (_, row) in zip(ITEMS, base.iterrows()):
        logp, n = naive_logp(base_model, tokenizer, item, 64)
        assert row["n_tokens"] == n and row["ref_logp"] == pytest.approx(logp, abs=1e-4)

    score, rows = score_nll(run_model, tokenizer, ITEMS, base, 64, 2, n_resamples=50, seed=0)
    for item, row, ref in zip(ITEMS, rows, base["ref_logp"]):
        logp, n = naive_logp(run_model, tokenizer, item, 64)
        assert row["ref_logp"] == ref and row["logp"] == pytest.approx(logp, abs=1e-4) and row["n_tokens"] == n
        assert row["logp"] != pytest.approx(row["ref_logp"], abs=1e-3)  # two models: the columns must differ
    assert score["value"] == pytest.approx(sum(-r["logp"] / r["n_tokens"] for r in rows) / 3)
    assert score["n"] == 3 and score["left_out"] == 0 and math.isfinite(score["ci_low"])


def test_a_base_table_of_other_tokens_is_refused(models):
    base_model, run_model, tokenizer = models
    other_items = base_scores(base_model, tokenizer, ITEMS[:2], max_length=64, batch_size=2)
    with pytest.raises(ValueError, match="rerun rule base_log_likelihood"):
        score_nll(run_model, tokenizer, ITEMS, other_items, 64, 2, n_resamples=50, seed=0)
    # the same items cut shorter: same ids, other tokens
    first = encode_example(tokenizer, ITEMS[1]["messages"], 64)
    prompt = sum(label == -100 for label in first["labels"])
    shorter = base_scores(base_model, tokenizer, ITEMS, max_length=prompt + 2, batch_size=2)
    assert shorter["id"].tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="rerun rule base_log_likelihood"):
        score_nll(run_model, tokenizer, ITEMS, shorter, 64, 2, n_resamples=50, seed=0)
