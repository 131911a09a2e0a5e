"""MinorSFT / DPO-SFT losses, the reference log-prob rule and the deviation metric."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sftlab.data.tokenize import collate, encode_example
from sftlab.models.random_init import build_random_model, save_random_model
from sftlab.models.scoring import deviation
from sftlab.objectives import build_objective
from sftlab.objectives.minorsft import dpo_sft_loss, minorsft_loss

REPO = Path(__file__).resolve().parents[1]

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 plus 3"}, {"role": "assistant", "content": "5"}],
    [{"role": "system", "content": "answer"}, {"role": "user", "content": "Reverse the word cat"},
     {"role": "assistant", "content": "tac is the answer"}],
    [{"role": "user", "content": "Sort these numbers 3 1 2"}, {"role": "assistant", "content": "1 2 3"},
     {"role": "user", "content": "Uppercase the word dog"}, {"role": "assistant", "content": "DOG"}],
]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def naive_response_logp(model, input_ids, labels):
    """Σ_t log p(y_t | prefix), one forward pass per response token on the unpadded prefix."""
    total = 0.0
    with torch.no_grad():
        for t in range(1, len(input_ids)):
            if labels[t] == -100:
                continue
            logits = model(input_ids=torch.tensor([input_ids[:t]])).logits[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[input_ids[t]])
    return total


def test_minorsft_gradient_identity():
    torch.manual_seed(0)
    theta = torch.randn(5, dtype=torch.float64, requires_grad=True)
    features = torch.randn(4, 5, dtype=torch.float64)
    ref = torch.tensor([-3.0, -1.0, -2.5, 0.5], dtype=torch.float64)
    n_tokens = torch.tensor([3, 7, 1, 12])
    beta = 0.3

    def log_pi():  # an arbitrary smooth per-example log-likelihood of θ
        return -F.softplus(features @ theta) * n_tokens

    policy = log_pi().detach()
    for i in range(4):
        (grad,) = torch.autograd.grad(minorsft_loss(log_pi(), ref, n_tokens, beta)[i], theta)
        (grad_logp,) = torch.autograd.grad(log_pi()[i], theta)
        r = float(policy[i] - ref[i])
        sigma_neg = 1.0 / (1.0 + math.exp(beta * r))
        expected = -(2.0 / int(n_tokens[i])) * sigma_neg * grad_logp
        torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)


def test_minorsft_loss_and_dpo_sft_loss_hand_values():
    policy = torch.tensor([-10.0, -5.0], dtype=torch.float64)
    ref = torch.tensor([-12.0, -5.0], dtype=torch.float64)
    # r = (2, 0), β = 0.1: −log σ(0.2) = log(1 + e^−0.2) = 0.5981388693, −log σ(0) = log 2
    expected_dpo = torch.tensor([0.5981388693, 0.6931471806], dtype=torch.float64)
    torch.testing.assert_close(dpo_sft_loss(policy, ref, 0.1), expected_dpo, rtol=0, atol=1e-9)
    # MinorSFT scales by 2 / (β·|y|): |y| = (4, 10) gives factors 5 and 2
    expected_minor = torch.tensor([5 * 0.5981388693, 2 * 0.6931471806], dtype=torch.float64)
    torch.testing.assert_close(minorsft_loss(policy, ref, torch.tensor([4, 10]), 0.1), expected_minor, rtol=0, atol=1e-8)


def encoded_batch(tokenizer, columns=(), values=None):
    features = [encode_example(tokenizer, m, 64) for m in CONVERSATIONS]
    for f, v in zip(features, values or [{}] * len(features)):
        f.update(v)
    return collate(features, tokenizer.pad_token_id, columns)


def test_minorsft_at_zero_reward_is_length_normalised_sft():
    model, tokenizer = build_random_model(seed=1)
    batch = encoded_batch(tokenizer)
    # r = 0: the stored reference log-prob equals the current policy's
    refs = [naive_response_logp(model, batch["input_ids"][i].tolist(), batch["labels"][i].tolist()) for i in range(3)]
    batch["ref_logp"] = torch.tensor(refs, dtype=torch.float64)

    loss, metrics = build_objective("minorsft", {"beta": 0.7}).loss(model, batch)
    minor_grads = torch.autograd.grad(loss, list(model.parameters()))
    assert abs(metrics["reward_per_token"]) < 1e-5

    # length-normalised SFT, computed independently: per-token CE summed per example, divided by |y|, batch mean
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], reduction="none", ignore_index=-100)
    n = (batch["labels"][:, 1:] != -100).sum(-1)
    sft = (ce.sum(-1) / n).mean()
    sft_grads = torch.autograd.grad(sft, list(model.parameters()))
    for g_minor, g_sft in zip(minor_grads, sft_grads):
        torch.testing.assert_close(g_minor, g_sft, rtol=1e-4, atol=1e-6)


def test_dpo_sft_objective_matches_loss_function():
    model, tokenizer = build_random_model(seed=2)
    batch = encoded_batch(tokenizer)
    refs = torch.tensor([-40.0, -80.0, -60.0])
    batch["ref_logp"] = refs
    loss, _ = build_objective("dpo_sft", {"beta": 0.2}).loss(model, batch)
    policy = torch.tensor(
        [naive_response_logp(model, batch["input_ids"][i].tolist(), batch["labels"][i].tolist()) for i in range(3)]
    )
    expected = sum(math.log1p(math.exp(-0.2 * float(p - r))) for p, r in zip(policy, refs)) / 3
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_objectives_reject_bad_beta():
    with pytest.raises(ValueError, match="beta"):
        build_objective("minorsft", {"beta": 0})


def test_ref_logprobs_script_and_zero_deviation(tmp_path):
    model_dir = tmp_path / "model"
    save_random_model(model_dir, seed=3)
    train, heldout = tmp_path / "train.jsonl", tmp_path / "heldout.jsonl"
    rows = [{"id": f"ex{i}", "messages": m, "source": "test"} for i, m in enumerate(CONVERSATIONS)]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    heldout.write_text(json.dumps(rows[2]) + "\n")
    out = tmp_path / "ref_logprobs.parquet"
    load_script("ref_logprobs").main(
        ["--model", str(model_dir), "--data", str(train), str(heldout), "--out", str(out),
         "--max-length", "64", "--batch-size", "2", "--device", "cpu"]
    )
    table = pd.read_parquet(out)
    assert list(table.columns) == ["id", "ref_logp", "n_tokens"]
    assert table["id"].tolist() == ["ex0", "ex1", "ex2"]

    model, tokenizer = build_random_model(seed=3)
    model.eval()
    features = [encode_example(tokenizer, m, 64) for m in CONVERSATIONS]
    for f, ref_logp in zip(features, table["ref_logp"]):
        assert ref_logp == pytest.approx(naive_response_logp(model, f["input_ids"], f["labels"]), abs=1e-4)
        f["ref_logp"] = ref_logp
    assert table["n_tokens"].tolist() == [sum(label != -100 for label in f["labels"][1:]) for f in features]

    # m_θ before any step: zero, whatever the batching
    batches = [collate(features[:1], tokenizer.pad_token_id, ("ref_logp",)),
               collate(features[1:], tokenizer.pad_token_id, ("ref_logp",))]
    assert deviation(model, batches) == pytest.approx(0.0, abs=1e-5)
    # and it measures the per-token reward: shifting every stored ref_logp by −|y| gives m_θ = 1
    for f in features:
        f["ref_logp"] -= sum(label != -100 for label in f["labels"][1:])
    assert deviation(model, [collate(features, tokenizer.pad_token_id, ("ref_logp",))]) == pytest.approx(1.0, abs=1e-5)


def test_ref_logprobs_take_the_training_forward_precision_path(tmp_path):
    """log πref is scored as a full fine-tuning run's forward runs: float32 weights under bf16 autocast, not bf16
    weights, so log πθ/πref = 0 at the first step (LoRA and FSDP: tests/test_reference_path.py). Checked on CPU
    (autocast bf16) against a per-token loop."""
    model_dir = tmp_path / "model"
    save_random_model(model_dir, seed=3)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"ex{i}", "messages": m, "source": "t"}) + "\n"
                            for i, m in enumerate(CONVERSATIONS)))
    tables = {}
    for precision in ("bf16", "fp32"):
        tables[precision] = tmp_path / f"{precision}.parquet"
        load_script("ref_logprobs").main(["--model", str(model_dir), "--data", str(data), "--out",
                                          str(tables[precision]), "--max-length", "64", "--device", "cpu",
                                          "--training", json.dumps({"finetuning": "full", "precision": precision})])
    scored = {p: pd.read_parquet(t)["ref_logp"].tolist() for p, t in tables.items()}
    model, tokenizer = build_random_model(seed=3)
    model.eval()
    features = [encode_example(tokenizer, m, 64) for m in CONVERSATIONS]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the policy's forward in a bf16 run: fp32 weights, autocast
        policy = [naive_response_logp(model, f["input_ids"], f["labels"]) for f in features]
    fp32 = [naive_response_logp(model, f["input_ids"], f["labels"]) for f in features]
    bf16_weights = [naive_response_logp(model.to(torch.bfloat16), f["input_ids"], f["labels"]) for f in features]
    assert scored["bf16"] == pytest.approx(policy, abs=1e-3)
    assert scored["fp32"] == pytest.approx(fp32, abs=1e-4)
    # the old path on a GPU, bf16 weights, is off by several times that on this near-uniform random model
    assert max(abs(a - b) for a, b in zip(policy, bf16_weights)) > 3e-3
