"""Fisher merging: the diagonal Fisher and the weighted average on hand-worked numbers, and a merge of real
model directories against a second, naive implementation (HF's own loss, torch.autograd.grad)."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from sftlab.compose.fisher import diagonal_fisher, fisher_weighted_average
from sftlab.compose.merge import merge
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
    torch.testing.assert_close(fisher_weighted_average(values, fishers, [0.5, 0.5]), torch.tensor([2.5, 6.0, 6.0]))
    # prior weights multiply the Fishers: (1·1·1 + 3·3·3)/(1 + 9) = 2.8
    assert fisher_weighted_average(values, fishers, [1.0, 3.0])[0].item() == pytest.approx(2.8)


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
    merge(members, tmp_path / "fisher", "fisher", base_model=base, params={"fisher_samples": 100},
          member_examples=data, max_length=64)
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


def test_fisher_merge_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="merge_space must be 'delta'"):
        merge(["a", "b"], tmp_path / "o", "fisher", "adapter", "base", member_examples=[[], []])
    with pytest.raises(ValueError, match="each member's training examples"):
        merge(["a", "b"], tmp_path / "o", "fisher", base_model="base")
