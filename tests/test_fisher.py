"""Fisher merging: the diagonal Fisher (the empirical one, and the model's own against its closed form on a linear
softmax model), the normalised two-member merge and the weighted average on hand-worked numbers, and a merge of real
model directories against a second, naive implementation (HF's own loss, torch.autograd.grad)."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from sftlab.compose.fisher import METADATA_FILE, diagonal_fisher, fisher_weighted_average, merge_members
from sftlab.compose.merge import merge, resolve_params
from sftlab.models.random_init import save_random_model

TINY = dict(hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16)


class Bigram(torch.nn.Module):
    """logits of the next token = W[current token]: ∂ log p(b|a) / ∂W[a] = onehot(b) − softmax(W[a])."""

    def __init__(self, vocab):
        super().__init__()
        self.W = torch.nn.Parameter(torch.zeros(vocab, vocab))

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.W[input_ids])


def test_diagonal_fisher_is_the_mean_of_per_example_squared_gradients():
    # W = 0, two tokens: p(·|a) = [½, ½]. Examples (a → b): 0→0, 0→1, 1→1, the prompt token unlabelled.
    # gradients: row 0 ±[½, −½] for the first two, row 1 [−½, ½] for the third; squared ¼ each; mean over 3 examples:
    # row 0 (¼ + ¼)/3 = 1/6, row 1 ¼/3 = 1/12. (The batch gradient's square would give row 0 zero.)
    examples = [{"input_ids": [a, b], "labels": [-100, b]} for a, b in ((0, 0), (0, 1), (1, 1))]
    fisher = diagonal_fisher(Bigram(2), examples, ["W"])["W"]
    torch.testing.assert_close(fisher, torch.tensor([[1 / 6, 1 / 6], [1 / 12, 1 / 12]]))


def test_fisher_weighted_average_on_hand_worked_numbers():
    values = [torch.tensor([1.0, 2.0, 5.0]), torch.tensor([3.0, 6.0, 7.0])]
    fishers = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3.0, 1.0, 0.0])]
    # (1·1 + 3·3)/(1 + 3) = 2.5; only the second has Fisher: 6; neither: the mean (5 + 7)/2 = 6
    got = fisher_weighted_average(values, fishers, [0.5, 0.5], floor=1e-30)
    torch.testing.assert_close(got, torch.tensor([2.5, 6.0, 6.0]))
    # the coefficients multiply the Fishers: (1·1·1 + 3·3·3)/(1 + 9) = 2.8
    assert fisher_weighted_average(values, fishers, [1.0, 3.0], floor=1e-30)[0].item() == pytest.approx(2.8)
    # floored as max(F, floor), only the values below it lifted: [1, .5, .5] and [3, 1, .5]:
    # (1 + 9)/4 = 2.5, (.5·2 + 1·6)/1.5 = 14/3, (5 + 7)/2 = 6
    got = fisher_weighted_average(values, fishers, [0.5, 0.5], floor=0.5)
    torch.testing.assert_close(got, torch.tensor([2.5, 14 / 3, 6.0]))


def test_model_fisher_of_a_linear_softmax_is_its_closed_form():
    # logits = W[a]: ∂ log p(y|a)/∂W[a] = onehot(y) − p, so E_{y~p}[(onehot(y) − p)_i²] = p_i(1 − p_i) in row a
    # (0 elsewhere), whatever the answer. Row 0 p = [.2, .3, .5] → [.16, .21, .25]. The empirical Fisher of the
    # answer 2 would be (onehot(2) − p)² = [.04, .09, .25].
    model = Bigram(3)
    with torch.no_grad():
        model.W[0] = torch.tensor([0.2, 0.3, 0.5]).log()
    examples = [{"input_ids": [0, 0], "labels": [-100, 2]}] * 4000
    fisher = diagonal_fisher(model, examples, ["W"], torch.Generator().manual_seed(0))["W"]
    # a draw's value is (1 − p_i)² w.p. p_i, else p_i²: relative sd ≤ 1.5/√4000 ≈ 2.4%
    torch.testing.assert_close(fisher[0], torch.tensor([0.16, 0.21, 0.25]), rtol=0.1, atol=0)
    assert fisher[1:].eq(0).all()


def test_two_member_merge_with_the_model_fisher_normalised_and_floored():
    # Two bigram members over 2 tokens, each with examples 0 → 0 only (row 1 has no gradient: Fisher 0).
    # A: W[0] = [ln 4, 0] (p = [.8, .2]); B: W[0] = [0, 0] (p = [.5, .5]); their rows 1 differ.
    # Model Fisher, row 0: p0·p1 in both entries, A .16, B .25; row 1: 0. L2 norms over W: .16√2 and .25√2.
    # Coefficients c = ½/‖F‖. Row 0: c·F = ½/√2 for both → the plain mean [ln 2, 0].
    # Row 1: both floored at 1e-6 before the division → weights ∝ c: A's share (1/.16)/(1/.16 + 1/.25) = 6.25/10.25.
    # (The empirical, unnormalised Fisher would give row 0 A's share .04/(.04 + .25) and row 1 the mean [2, 0].)
    rows = {"A": ([math.log(4), 0.0], [1.0, -1.0]), "B": ([0.0, 0.0], [3.0, 1.0])}
    members = []
    for row0, row1 in rows.values():
        model = Bigram(2)
        with torch.no_grad():
            model.W.copy_(torch.tensor([row0, row1]))
        members.append((model, [{"input_ids": [0, 0], "labels": [-100, 0]}] * 4000))
    merged, records = merge_members(iter(members), ["W"], [0.5, 0.5], "model", seed=0)
    share = 6.25 / 10.25
    torch.testing.assert_close(merged["W"][0], torch.tensor([math.log(2), 0.0]), rtol=0, atol=1e-5)
    # A's Fisher is estimated (relative sd 1.5/√4000 ≈ 2.4%), B's is exact (both draws give .25)
    want_row1 = share * torch.tensor([1.0, -1.0]) + (1 - share) * torch.tensor([3.0, 1.0])
    torch.testing.assert_close(merged["W"][1], want_row1, rtol=0, atol=0.04)
    assert [r["fisher_norm"] for r in records] == pytest.approx([0.16 * math.sqrt(2), 0.25 * math.sqrt(2)], rel=0.1)
    assert records[1]["coefficient"] == pytest.approx(0.5 / (0.25 * math.sqrt(2)))
    assert [r["share_below_floor"] for r in records] == [0.5, 0.5]  # row 1 of each W
    # the empirical option: A's answer 0 has (1 − .8)² = .04 in row 0; no normalisation; rows 1 floored equally
    merged, _ = merge_members(iter(members), ["W"], [0.5, 0.5], "empirical")
    a_share = 0.04 / 0.29
    torch.testing.assert_close(merged["W"][0], torch.tensor([a_share * math.log(4), 0.0]))
    torch.testing.assert_close(merged["W"][1], torch.tensor([2.0, 0.0]))


def test_the_authors_fisher_is_the_default_and_the_type_is_checked():
    assert resolve_params("fisher", 2)["fisher_type"] == "model"
    with pytest.raises(ValueError, match="fisher_type must be one of"):
        resolve_params("fisher", 2, {"fisher_type": "true"})


def naive_fisher(model_dir, examples, names):
    """Second implementation: HF's mean token loss × response tokens = −log p(y|x), torch.autograd.grad per example."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.data.tokenize import collate, encode_example

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    params = dict(model.named_parameters())
    total = {n: torch.zeros_like(params[n]) for n in names}
    for ex in examples:
        batch = collate([encode_example(tok, ex["messages"], 64)], tok.pad_token_id or 0)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
        grads = torch.autograd.grad(-out.loss * batch["n_tokens"].sum(), [params[n] for n in names])
        for n, g in zip(names, grads):
            total[n] += g.square()
    return {n: t / len(examples) for n, t in total.items()}


def test_fisher_merge_of_model_directories(tmp_path):
    base = tmp_path / "base"
    save_random_model(base, **TINY)
    weights = load_file(base / "model.safetensors")
    target = "model.layers.0.self_attn.q_proj.weight"
    members = []
    for k in range(2):
        out = shutil.copytree(base, tmp_path / f"m{k}")
        gen = torch.Generator().manual_seed(k)
        save_file({**weights, target: weights[target] + 0.5 * torch.randn(weights[target].shape, generator=gen)},
                  out / "model.safetensors", metadata={"format": "pt"})
        members.append(out)
    words = ["cat", "dog", "seven", "blue", "yes", "the answer"]
    data = [[{"id": f"{k}{i}", "messages": [{"role": "user", "content": f"Say {w}"},
                                            {"role": "assistant", "content": w * (k + 1)}]}
             for i, w in enumerate(words)] for k in range(2)]
    merge(members, tmp_path / "fisher", "fisher", base_model=base,
          params={"fisher_samples": 100, "fisher_type": "empirical"}, member_examples=data, max_length=64)
    got = load_file(tmp_path / "fisher" / "model.safetensors")
    for name, value in weights.items():
        if name != target:  # no member changed it: the base's value, whatever the Fisher
            torch.testing.assert_close(got[name], value, rtol=0, atol=0)
    fishers = [naive_fisher(m, d, [target])[target] for m, d in zip(members, data)]
    values = [load_file(m / "model.safetensors")[target] for m in members]
    want = (fishers[0] * values[0] + fishers[1] * values[1]) / (fishers[0] + fishers[1])
    torch.testing.assert_close(got[target], want, rtol=1e-4, atol=1e-6)
    assert (got[target] - (values[0] + values[1]) / 2).abs().max() > 1e-3  # not the plain average
    assert json.loads((tmp_path / "fisher" / "config.json").read_text())["architectures"]
    record = json.loads((tmp_path / "fisher" / METADATA_FILE).read_text())
    assert (record["fisher_type"], record["normalised"], record["floor"]) == ("empirical", False, 1e-30)
    assert [m["examples"] for m in record["members"]] == [6, 6] and record["tensors"] == [target]
    # the default: the model's Fisher, each member's coefficient its weight over its Fisher's L2 norm
    merge(members, tmp_path / "model", "fisher", base_model=base, member_examples=data, max_length=64)
    record = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    assert (record["fisher_type"], record["normalised"], record["floor"]) == ("model", True, 1e-6)
    for member in record["members"]:
        assert member["coefficient"] == pytest.approx(0.5 / member["fisher_norm"])


def test_fisher_merge_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="merge_space must be 'delta'"):
        merge(["a", "b"], tmp_path / "o", "fisher", "adapter", "base", member_examples=[[], []])
    with pytest.raises(ValueError, match="each member's training examples"):
        merge(["a", "b"], tmp_path / "o", "fisher", base_model="base")
