"""training.loss_reduction: the same global batch gives the same gradient whatever its layout — padded, length-grouped
or packed micro-batches, one example (SFTMix: one pair) or the whole batch per micro-batch, one process or two (DDP
over gloo) — for each reduction; for NTP and MinorSFT equal to the gradient of the reduction worked out by hand from
one forward pass per example."""

from __future__ import annotations

import sys

import pytest
import torch

from _train_cli import ROOT, run
from _reduction_grads import OBJECTIVES, features
from sftlab.models.random_init import build_random_model
from sftlab.objectives.base import LossTerm, reduce_terms
from sftlab.training.launch import CONFIG_DIR, launch_prefix

HARNESS = ROOT / "tests" / "_reduction_grads.py"


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """{(processes, objective, reduction, layout, micro-batch size): first-step gradient} from ObjectiveTrainer."""
    out = {}
    for processes in (1, 2):
        path = tmp_path_factory.mktemp(f"p{processes}") / "grads.pt"
        run([*launch_prefix(processes, "ddp", CONFIG_DIR, sys.executable), str(HARNESS), str(path), str(processes)])
        out.update({(processes, *key): grads for key, grads in torch.load(path).items()})
    return out


def by_hand(objective: str, reduction: str) -> dict[str, torch.Tensor]:
    """The global batch's loss from one unpadded forward per example, reduced as the docs define it; its gradient."""
    model, tokenizer = build_random_model(seed=0)
    losses, lengths = [], []
    for f in features(len(tokenizer)):
        logps = torch.log_softmax(model(input_ids=torch.tensor([f["input_ids"]])).logits[0, :-1].double(), -1)
        picked = [logps[t, y] for t, y in enumerate(f["labels"][1:]) if y != -100]
        logp, n = torch.stack(picked).sum(), len(picked)
        if objective == "ntp":
            mean = -logp / n
        else:  # MinorSFT: −(2 / (β·|y|))·log σ(β·(log πθ − log πref))
            beta = OBJECTIVES["minorsft"]["beta"]
            mean = -2.0 / (beta * n) * torch.nn.functional.logsigmoid(beta * (logp - f["ref_logp"]))
        losses.append(mean)
        lengths.append(n)
    means, n = torch.stack(losses), torch.tensor(lengths, dtype=torch.float64)
    loss = {"example_mean": means.mean(), "token_mean": (means * n).sum() / n.sum(), "sum": (means * n).sum()}[reduction]
    names = [name for name, _ in model.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(model.parameters()))))


@pytest.mark.parametrize("objective", ["ntp", "minorsft"])
@pytest.mark.parametrize("reduction", ["example_mean", "token_mean", "sum"])
def test_every_layout_gives_the_gradient_of_the_reduction(layouts, objective, reduction):
    expected = by_hand(objective, reduction)
    runs = {key: grads for key, grads in layouts.items() if key[1:3] == (objective, reduction)}
    # 1 process: micro-batches of 1 and 8; 2 processes: of 1 and 4; each padded, length-grouped and packed
    assert len(runs) == 12
    for key, grads in runs.items():
        assert grads.keys() == expected.keys()
        for name, grad in grads.items():
            want = expected[name]
            torch.testing.assert_close(grad, want, rtol=2e-4, atol=1e-6 * float(want.abs().max()),
                                       msg=lambda m, key=key, name=name: f"{key}: {name}: {m}")


@pytest.mark.parametrize("reduction", ["example_mean", "token_mean", "sum"])
def test_sftmix_gradient_does_not_depend_on_the_layout(layouts, reduction):
    """SFTMix's pairs (4 confident × 4 unconfident, global batch of 4 pairs) in micro-batches of 1 pair or all of
    them, padded, length-grouped or packed, on 1 or 2 processes: one gradient (each pair keeps its λ)."""
    runs = {key: grads for key, grads in layouts.items() if key[1:3] == ("sftmix", reduction)}
    assert len(runs) == 12
    first = runs[(1, "sftmix", reduction, "padded", 8)]
    ntp = layouts[(1, "ntp", reduction, "padded", 8)]
    # μ·ℓ_mix is in it: not NTP's gradient
    assert max(float((first[k] - ntp[k]).abs().max() / ntp[k].abs().max()) for k in ntp) > 1e-2
    for key, grads in runs.items():
        for name, grad in grads.items():
            torch.testing.assert_close(grad, first[name], rtol=2e-4, atol=1e-6 * float(first[name].abs().max()),
                                       msg=lambda m, key=key, name=name: f"{key}: {name}: {m}")


def test_the_reduction_decides_how_examples_weigh():
    """Without a global normalisation (each micro-batch's own mean, averaged over micro-batches, as before), micro-batches
    of one example give example_mean's gradient and one micro-batch of eight token_mean's: they differ, so a
    micro-batch mean depends on the layout."""
    per_example, per_token = by_hand("ntp", "example_mean"), by_hand("ntp", "token_mean")
    gap = max(float((per_example[k] - per_token[k]).abs().max() / per_token[k].abs().max()) for k in per_token)
    assert gap > 0.05


def test_reduce_terms_by_hand():
    term = LossTerm(torch.tensor([6.0, 3.0]), torch.tensor([3, 1]))
    totals = {"t": (4, 10)}  # the global batch: 4 examples, 10 tokens (this micro-batch holds 2 and 4)
    assert float(reduce_terms({"t": term}, "example_mean", totals)) == pytest.approx((2 + 3) / 4)
    assert float(reduce_terms({"t": term}, "token_mean", totals)) == pytest.approx(9 / 10)
    assert float(reduce_terms({"t": term}, "sum", totals)) == pytest.approx(9)
    weighted = {"t": term, "u": LossTerm(torch.tensor([2.0]), torch.tensor([2]), weight=0.5)}
    assert float(reduce_terms(weighted, "token_mean", {"t": (4, 10), "u": (1, 4)})) == pytest.approx(0.9 + 0.5 * 0.5)
    with pytest.raises(ValueError, match="training.loss_reduction"):
        reduce_terms({"t": term}, "mean", totals)


def test_auto_is_the_objectives_own_reduction():
    from sftlab.objectives import build_objective
    from sftlab.training.trainer import resolve_reduction

    assert [resolve_reduction("auto", build_objective(name)) for name in ("ntp", "sftmix", "minorsft", "dpo_sft")] == [
        "token_mean", "token_mean", "example_mean", "example_mean"]
    assert resolve_reduction("sum", build_objective("minorsft")) == "sum"
    with pytest.raises(ValueError, match="training.loss_reduction"):
        resolve_reduction("mean", build_objective("ntp"))
