"""Memory-lean log-probabilities (gather minus chunked log-sum-exp) equal the full log-softmax ones."""

import pytest
import torch

from sftlab.objectives.base import chunked_logsumexp, selective_logps, sequence_logps, token_logps
from sftlab.objectives.sftmix import mixup_loss


def full_token_logps(logits, labels):
    """The former implementation: a float32 log-softmax over the whole (B, T, V) tensor, then gather."""
    shifted = labels[:, 1:]
    mask = shifted != -100
    safe = shifted.masked_fill(~mask, 0)
    logps = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logps * mask, mask


def batch(dtype=torch.float32, b=3, t=11, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (4 * torch.randn(b, t, v, generator=g)).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[:, :3] = -100
    labels[1, 8:] = -100  # a shorter, padded row
    return logits, labels


def test_logsumexp_by_hand():
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0], [2.0, 2.0]])
    # log(e^0 + e^0) = log 2;  log(e^1 + e^−1) = 1 + log(1 + e^−2);  log(2·e^2) = 2 + log 2
    expected = [0.693147, 1.126928, 2.693147]
    assert chunked_logsumexp(logits, chunk=2).tolist() == pytest.approx(expected, abs=1e-6)
    # log softmax([1, -1])[0] = −log(1 + e^−2)
    assert selective_logps(logits[1:2], torch.tensor([0])).item() == pytest.approx(-0.126928, abs=1e-6)


@pytest.mark.parametrize("chunk", [1, 4, 1024])
def test_token_logps_equal_full_log_softmax_with_gradients(chunk, monkeypatch):
    monkeypatch.setattr("sftlab.objectives.base.LOGSUMEXP_CHUNK", chunk)
    calls = []
    real = torch.logsumexp
    monkeypatch.setattr(torch, "logsumexp", lambda x, dim: calls.append(1) or real(x, dim=dim))
    logits, labels = batch()
    new, mask = token_logps(logits, labels)
    (grad_new,) = torch.autograd.grad((new * torch.arange(new.numel()).view_as(new)).sum(), logits)
    old, old_mask = full_token_logps(logits, labels)
    (grad_old,) = torch.autograd.grad((old * torch.arange(old.numel()).view_as(old)).sum(), logits)
    assert torch.equal(mask, old_mask)
    assert len(calls) == logits.shape[0] * -(-(logits.shape[1] - 1) // chunk)  # chunks per row, every row
    torch.testing.assert_close(new, old, rtol=0, atol=2e-6)
    torch.testing.assert_close(grad_new, grad_old, rtol=1e-5, atol=1e-5)
    assert new.dtype == torch.float32


def test_bf16_logits_give_float32_logps_equal_to_the_full_upcast():
    logits, labels = batch(torch.bfloat16)
    new, _ = sequence_logps(logits, labels)
    old = full_token_logps(logits, labels)[0].sum(-1)
    assert new.dtype == torch.float32
    torch.testing.assert_close(new, old, rtol=0, atol=1e-4)


def test_mixup_loss_equals_the_full_log_softmax_version():
    torch.manual_seed(0)
    hidden = torch.randn(4, 9, 8, requires_grad=True)
    labels = torch.randint(0, 30, (4, 9))
    labels[:, :2] = -100
    labels[3, 6:] = -100
    head = torch.nn.Linear(8, 30, bias=False)
    lam = torch.tensor([0.3, 0.8])
    loss, n = mixup_loss(hidden, labels, head, lam)
    (grad,) = torch.autograd.grad(loss, hidden)
    # the former computation, pair by pair with a full log-softmax
    total, count = 0.0, 0
    targets, states = labels[:, 1:], hidden[:, :-1]
    for i in range(2):
        c, u = targets[i] != -100, targets[2 + i] != -100
        k = int(min(c.sum(), u.sum()))
        z = lam[i] * states[i][c][:k] + (1 - lam[i]) * states[2 + i][u][:k]
        logps = torch.log_softmax(head(z), -1)
        total = total - (lam[i] * logps.gather(-1, targets[i][c][:k, None]).squeeze(-1)
                         + (1 - lam[i]) * logps.gather(-1, targets[2 + i][u][:k, None]).squeeze(-1)).sum()
        count += k
    expected = total / count
    (expected_grad,) = torch.autograd.grad(expected, hidden)
    assert n == count
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
