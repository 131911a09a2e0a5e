"""SFTMix: the Mixup term, the objective's reduction to NTP, the pair sampler."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sftlab.data.tokenize import collate, collate_packed, encode_example
from sftlab.models.random_init import build_random_model
from sftlab.objectives import build_objective
from sftlab.objectives.sftmix import PairSampler, forward_with_final_hidden, mixup_loss, pair_lambdas

# two confident then two unconfident examples, of different response lengths (one with two assistant turns)
CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 plus 3"}, {"role": "assistant", "content": "5 is the answer"}],
    [{"role": "user", "content": "Reverse the word cat"}, {"role": "assistant", "content": "tac"}],
    [{"role": "user", "content": "Count letters in dog"}, {"role": "assistant", "content": "3"},
     {"role": "user", "content": "Uppercase the word dog"}, {"role": "assistant", "content": "DOG"}],
    [{"role": "user", "content": "Sort these numbers 3 1 2"}, {"role": "assistant", "content": "1 2 3 and that is all"}],
]


@pytest.fixture(scope="module")
def tiny():
    return build_random_model(seed=0)


def make_batch(tokenizer):
    features = [encode_example(tokenizer, m, 96) for m in CONVERSATIONS]
    for i, f in enumerate(features):
        f["confident"] = 1.0 if i < 2 else 0.0
    return collate(features, tokenizer.pad_token_id, ("confident",))


def naive_mixup(hidden, labels, lm_head, lam):
    """Per-pair loop: k-th response position of the confident with the k-th of the unconfident, one at a time."""
    half = hidden.shape[0] // 2
    terms = []
    for i in range(half):
        pos_c = [t for t in range(labels.shape[1] - 1) if labels[i, t + 1] != -100]
        pos_u = [t for t in range(labels.shape[1] - 1) if labels[half + i, t + 1] != -100]
        for k in range(min(len(pos_c), len(pos_u))):
            z = lam[i] * hidden[i, pos_c[k]] + (1 - lam[i]) * hidden[half + i, pos_u[k]]
            logits = lm_head(z).unsqueeze(0)
            ce_c = F.cross_entropy(logits, labels[i, pos_c[k] + 1].view(1))
            ce_u = F.cross_entropy(logits, labels[half + i, pos_u[k] + 1].view(1))
            terms.append(lam[i] * ce_c + (1 - lam[i]) * ce_u)
    return torch.stack(terms).mean(), len(terms)


def random_pair_batch(seed):
    """Random hidden states and labels with prompts, padding and a response split in two turns."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(6, 12, 8, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 11, (6, 12), generator=g)
    response = [(3, 9), (2, 12), (5, 7), (1, 11), (4, 12), (6, 10)]
    for row, (start, end) in enumerate(response):
        labels[row, :start] = -100
        labels[row, end:] = -100
    labels[3, 5:7] = -100  # a second assistant turn after a user turn
    return hidden, labels


def test_batched_mixup_equals_naive_loop():
    hidden, labels = random_pair_batch(0)
    lm_head = torch.nn.Linear(8, 11, bias=False).double()
    lam = torch.tensor([0.1, 0.73, 0.5], dtype=torch.float64)
    batched, n = mixup_loss(hidden, labels, lm_head, lam)
    naive, n_naive = naive_mixup(hidden, labels, lm_head, lam)
    # shifted response counts per row: 6, 10, 2 | 8, 8, 4 -> pairs keep min(6, 8) + min(10, 8) + min(2, 4) positions
    assert n == n_naive == 16
    torch.testing.assert_close(batched, naive.float(), rtol=1e-6, atol=1e-6)
    grad_batched = torch.autograd.grad(batched, [hidden, lm_head.weight])
    grad_naive = torch.autograd.grad(naive, [hidden, lm_head.weight])
    for a, b in zip(grad_batched, grad_naive):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-7)


def test_mixup_with_lambda_one_is_confident_cross_entropy(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer)
    logits, hidden = forward_with_final_hidden(model, batch)
    torch.testing.assert_close(model.lm_head(hidden), logits)  # the captured states are the LM head's input
    loss, _ = mixup_loss(hidden, batch["labels"], model.lm_head, torch.ones(2))
    # confident rows 0, 1 against unconfident rows 2, 3: first n = min(Nc, Nu) response positions of each confident
    labels = batch["labels"]
    ces = []
    for c, u in ((0, 2), (1, 3)):
        n = min(int((labels[c, 1:] != -100).sum()), int((labels[u, 1:] != -100).sum()))
        positions = [t for t in range(labels.shape[1] - 1) if labels[c, t + 1] != -100][:n]
        ces += [F.cross_entropy(logits[c, t], labels[c, t + 1]) for t in positions]
    torch.testing.assert_close(loss, torch.stack(ces).mean())


def test_mu_zero_gives_ntp_loss_and_gradients(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer)
    ntp, _ = build_objective("ntp").loss(model, batch)
    ntp_grads = torch.autograd.grad(ntp, list(model.parameters()))
    mix, metrics = build_objective("sftmix", {"mu": 0.0}).loss(model, batch)
    mix_grads = torch.autograd.grad(mix, list(model.parameters()))
    assert metrics["mixup_loss"] > 0
    assert torch.equal(mix, ntp)
    for a, b in zip(mix_grads, ntp_grads):
        assert torch.equal(a, b)


def test_objective_adds_mu_times_mixup_and_detach_keeps_value(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer)
    loss, metrics = build_objective("sftmix", {"mu": 0.5, "seed": 3}).loss(model, batch)
    lam = pair_lambdas(0.5, 3, batch)
    logits, hidden = forward_with_final_hidden(model, batch)
    naive, _ = naive_mixup(hidden, batch["labels"], model.lm_head, lam)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100)
    torch.testing.assert_close(loss, ce + 0.5 * naive, rtol=1e-5, atol=1e-6)

    detached, detached_metrics = build_objective("sftmix", {"mu": 0.5, "seed": 3, "mixup_detach": True}).loss(model, batch)
    assert detached_metrics["mixup_loss"] == pytest.approx(metrics["mixup_loss"], rel=1e-6)
    # detached: the Mixup term reaches the LM head but no layer below it
    (g_embed,) = torch.autograd.grad(detached, [model.model.embed_tokens.weight])
    ntp, _ = build_objective("ntp").loss(model, batch)
    (g_embed_ntp,) = torch.autograd.grad(ntp, [model.model.embed_tokens.weight])
    torch.testing.assert_close(g_embed, g_embed_ntp)


def test_batch_layout_is_checked(tiny):
    model, tokenizer = tiny
    batch = make_batch(tokenizer)
    batch["confident"] = torch.tensor([1.0, 0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="laid out"):
        build_objective("sftmix").loss(model, batch)
    assert build_objective("sftmix", {"pairing": "random"}).columns == ()


def test_lambdas_reproducible_per_pair_and_beta_distributed():
    g = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(5, 100, (3 + i % 5,), generator=g).tolist()} for i in range(8)]
    for row in rows:
        row["labels"] = row["input_ids"]
    pad = collate(rows, 0)
    lam = pair_lambdas(0.5, 0, pad)
    assert torch.equal(lam, pair_lambdas(0.5, 0, collate_packed(rows)))  # the same in a packed batch
    assert not torch.equal(lam, pair_lambdas(0.5, 1, pad))
    # a pair keeps its λ in another micro-batch: pairs (0, 4) and (2, 6) alone
    assert torch.equal(pair_lambdas(0.5, 0, collate([rows[0], rows[2], rows[4], rows[6]], 0)), lam[[0, 2]])
    many = torch.cat([pair_lambdas(0.5, 0, collate([{"input_ids": [i], "labels": [i]}, {"input_ids": [i, 1],
                                                                                     "labels": [i, 1]}], 0))
                      for i in range(5000)])
    # Beta(0.5, 0.5): mean 1/2, variance 1/8
    assert float(many.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(many.var()) == pytest.approx(0.125, abs=0.01)


def test_sftmix_through_lora(tiny):
    from peft import LoraConfig, get_peft_model

    model, tokenizer = build_random_model(seed=5)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    loss, metrics = build_objective("sftmix").loss(peft_model, make_batch(tokenizer))
    loss.backward()
    lora_grads = [p.grad for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_grads and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    assert metrics["mixup_positions"] > 0


def batches_of(indices, batch_size):
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def test_sampler_balanced_disjoint_pairs_covering_both_halves():
    flags = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1], dtype=bool)  # 6 confident, 6 unconfident
    confident, unconfident = set(np.flatnonzero(flags)), set(np.flatnonzero(~flags))
    sampler = PairSampler(flags, batch_size=4, seed=7)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 12
    firsts, seconds = [], []
    for batch in batches_of(indices, 4):
        assert set(batch[:2]) <= confident and set(batch[2:]) <= unconfident
        firsts += batch[:2]
        seconds += batch[2:]
    # every example exactly once: disjoint pairs covering each half
    assert sorted(firsts) == sorted(confident) and sorted(seconds) == sorted(unconfident)
    assert list(PairSampler(flags, 4, seed=7)) == indices
    sampler.set_epoch(1)
    assert list(sampler) != indices


def test_sampler_cycles_smaller_half_and_fills_last_batch():
    flags = np.array([1] * 7 + [0] * 3, dtype=bool)
    sampler = PairSampler(flags, batch_size=4, seed=0)
    indices = list(sampler)
    # 7 pairs padded to 8 (four full batches of 2 pairs)
    assert len(indices) == len(sampler) == 16
    batches = batches_of(indices, 4)
    assert all(set(b[:2]) <= set(range(7)) and set(b[2:]) <= {7, 8, 9} for b in batches)
    assert set(i for b in batches for i in b[:2]) == set(range(7))


def test_sampler_random_pairing_and_replicas():
    sampler = PairSampler(None, batch_size=4, seed=1, n_examples=9)
    indices = list(sampler)
    assert len(indices) == 8  # 4 pairs, one example sits out
    assert len(set(indices)) == 8

    flags = np.array([1, 0] * 7, dtype=bool)  # 7 pairs -> 4 batches of 2 pairs
    whole = batches_of(list(PairSampler(flags, 4, seed=2)), 4)
    per_rank = [batches_of(list(PairSampler(flags, 4, seed=2, num_replicas=3, rank=r)), 4) for r in range(3)]
    assert [len(b) for b in per_rank] == [2, 2, 2]  # 4 batches padded to 6
    assert [per_rank[b % 3][b // 3] for b in range(4)] == whole
    for padding in (per_rank[1][1], per_rank[2][1]):  # padded with pairs recycled from the epoch's start
        assert flags[padding[:2]].all() and not flags[padding[2:]].any()


def test_sampler_under_accelerate_sharding_gives_whole_pairs():
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    flags = np.array([1, 1, 1, 0, 0, 0, 0, 1, 0, 1], dtype=bool)
    sampler = PairSampler(flags, batch_size=4, seed=0)
    for rank in range(2):
        shard = BatchSamplerShard(BatchSampler(sampler, 4, drop_last=False), num_processes=2, process_index=rank)
        for batch in shard:
            assert len(batch) == 4 and flags[batch[:2]].all() and not flags[batch[2:]].any()
