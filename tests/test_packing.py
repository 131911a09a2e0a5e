"""Padding-free packed batches give every objective the same per-example values and gradients as padded batches."""

import numpy as np
import pytest
import torch

from sftlab.data.tokenize import collate, collate_packed
from sftlab.models.random_init import build_random_model
from sftlab.objectives import build_objective
from sftlab.objectives.base import batch_sequence_logps, model_inputs, sequence_logps

LENGTHS = (23, 9, 31, 14)  # different lengths: the padded batch has padding, the packed one none


@pytest.fixture(scope="module")
def tiny():
    model, tokenizer = build_random_model(seed=0)
    return model.eval(), tokenizer  # eval: no dropout, so both layouts see the same function


def features(vocab: int, lengths=LENGTHS):
    g = torch.Generator().manual_seed(1)
    out = []
    for i, n in enumerate(lengths):
        ids = torch.randint(5, vocab, (n,), generator=g).tolist()
        prompt = 3 + i
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:],
                    "confident": 1.0 if i < len(lengths) // 2 else 0.0, "ref_logp": -40.0 - 3 * i})
    return out


def naive_logps(model, feats):
    """One unpadded forward per example: log π(y|x) and |y|."""
    out = []
    for f in feats:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([f["input_ids"]])).logits[0, :-1].double()
        logps = torch.log_softmax(logits, -1)
        targets = f["labels"][1:]
        out.append(sum(float(logps[t, y]) for t, y in enumerate(targets) if y != -100))
    return out


def test_packed_layout(tiny):
    _, tokenizer = tiny
    feats = features(len(tokenizer))
    packed = collate_packed(feats, ("confident",))
    assert packed["input_ids"].shape == (1, sum(LENGTHS))
    assert "attention_mask" not in packed
    starts = [0, 23, 32, 63]
    assert packed["position_ids"][0, starts].tolist() == [0, 0, 0, 0]
    assert packed["position_ids"][0, 22].item() == 22 and packed["seq_idx"][0, 62].item() == 2
    assert all(packed["labels"][0, s].item() == -100 for s in starts)
    assert packed["n_tokens"].tolist() == [n - 3 - i for i, n in enumerate(LENGTHS)]
    assert torch.equal(packed["n_tokens"], collate(feats, 0)["n_tokens"])


def test_packed_sequence_logps_equal_one_forward_per_example(tiny):
    model, tokenizer = tiny
    feats = features(len(tokenizer))
    packed = collate_packed(feats)
    with torch.no_grad():
        logps, n = batch_sequence_logps(model(**model_inputs(packed)).logits, packed)
    # attention that crossed examples would change every example after the first
    assert logps.tolist() == pytest.approx(naive_logps(model, feats), abs=2e-4)
    assert n.tolist() == packed["n_tokens"].tolist()


@pytest.mark.parametrize("objective", [
    ("ntp", {}), ("minorsft", {"beta": 0.1}), ("dpo_sft", {"beta": 0.1}), ("sftmix", {"mu": 0.5, "seed": 2}),
])
def test_packed_and_padded_give_the_same_loss_metrics_and_gradients(tiny, objective):
    model, tokenizer = tiny
    name, params = objective
    feats = features(len(tokenizer))
    columns = ("confident", "ref_logp")
    results = []
    for batch in (collate(feats, tokenizer.pad_token_id, columns), collate_packed(feats, columns)):
        loss, metrics = build_objective(name, params).loss(model, batch)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
        results.append((loss, metrics, grads))
    (loss_pad, metrics_pad, grads_pad), (loss_pack, metrics_pack, grads_pack) = results
    torch.testing.assert_close(loss_pack, loss_pad, rtol=1e-5, atol=1e-6)
    assert metrics_pack == pytest.approx(metrics_pad, rel=1e-4, abs=1e-6)
    for a, b in zip(grads_pack, grads_pad):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_per_example_rewards_survive_packing(tiny):
    """MinorSFT's r and |y| are per example: the packed sums must match the padded rows one by one."""
    model, tokenizer = tiny
    feats = features(len(tokenizer))
    padded, packed = collate(feats, tokenizer.pad_token_id), collate_packed(feats)
    with torch.no_grad():
        pad_logps, pad_n = sequence_logps(model(**model_inputs(padded)).logits, padded["labels"])
        pack_logps, pack_n = batch_sequence_logps(model(**model_inputs(packed)).logits, packed)
    torch.testing.assert_close(pack_logps, pad_logps, rtol=1e-5, atol=1e-4)
    assert torch.equal(pack_n, pad_n)


def test_pair_sampler_groups_pairs_by_length_without_changing_them():
    from sftlab.objectives.sftmix import PairSampler

    rng = np.random.default_rng(0)
    lengths = rng.lognormal(5.5, 0.8, 400).astype(int) + 8
    confident = np.arange(400) < 200
    plain = PairSampler(confident, 8, seed=3)
    grouped = PairSampler(confident, 8, seed=3, lengths=lengths)

    def batches(sampler):
        order = np.array(list(sampler)).reshape(-1, 8)
        return [(b[:4], b[4:]) for b in order]

    as_pairs = lambda s: sorted(zip(*map(np.concatenate, zip(*batches(s)))))  # noqa: E731
    assert as_pairs(grouped) == as_pairs(plain)  # the same (confident, unconfident) pairs
    for first, second in batches(grouped):
        assert confident[first].all() and not confident[second].any()

    def real_share(sampler):
        real = computed = 0
        for first, second in batches(sampler):
            rows = lengths[np.concatenate([first, second])]
            real, computed = real + rows.sum(), computed + rows.max() * len(rows)
        return real / computed

    assert real_share(grouped) > real_share(plain) + 0.15


def test_auto_batching_packs_only_with_flash_attention():
    from sftlab.training.trainer import resolve_batching

    assert resolve_batching("auto", "flash_attention_2") == "packed"
    assert resolve_batching("auto", "sdpa") == "length_grouped"
    assert resolve_batching("padded", "flash_attention_2") == "padded"
    with pytest.raises(ValueError, match="training.batching"):
        resolve_batching("bucketed", "sdpa")


def test_length_grouped_sampler_is_a_seeded_permutation_with_little_padding():
    from sftlab.data.batching import LengthGroupedSampler

    lengths = np.random.default_rng(0).lognormal(np.log(300), 0.8, 2000).astype(int) + 16
    sampler = LengthGroupedSampler(lengths, 8, seed=5)
    first = list(sampler)
    assert sorted(first) == list(range(2000)) and first == list(sampler)  # a permutation, the same on every call
    sampler.set_epoch(1)
    assert list(sampler) != first  # a fresh order each epoch

    def real_share(order):
        rows = lengths[np.asarray(order)].reshape(-1, 8)
        return rows.sum() / (rows.max(1) * 8).sum()

    assert real_share(first) > 0.9 > 0.6 > real_share(np.random.default_rng(1).permutation(2000))
