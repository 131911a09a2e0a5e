"""Denormal floats are flushed in training and scoring processes (sftlab.numerics)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sftlab.data.tokenize import collate
from sftlab.models.random_init import build_random_model
from sftlab.numerics import flush_denormals
from sftlab.objectives import build_objective, sequence_logps
from sftlab.objectives.base import model_inputs

REPO = Path(__file__).resolve().parents[1]
TINY = torch.finfo(torch.float32).tiny  # smallest normal float32, 1.18e-38
# the scripts whose processes train or score a model
SCRIPTS = ("train", "ref_logprobs", "confidence", "tsne", "grad_features", "evaluate", "generate", "judge")


def subnormal_share(tensors) -> float:
    values = torch.cat([t.flatten() for t in tensors])
    return float(((values != 0) & (values.abs() < TINY)).float().mean())


def test_flush_turns_subnormals_into_zero():
    code = ("import json, torch; from sftlab.numerics import flush_denormals; x = torch.tensor([3e-39, 1e-30]); "
            "before = (x * 1.0).tolist(); flush_denormals(); print(json.dumps([before, (x * 1.0).tolist()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after = json.loads(out)
    assert before == [pytest.approx(3e-39, rel=1e-3), pytest.approx(1e-30, rel=1e-6)]
    assert after == [0.0, pytest.approx(1e-30, rel=1e-6)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_and_scoring_scripts_flush_denormals(script):
    """Each entry point calls flush_denormals in its main(), right after parsing its arguments."""
    source = (REPO / "scripts" / f"{script}.py").read_text()
    main = source[source.index("def main("):]
    assert "from sftlab.numerics import flush_denormals" in source
    assert main.index("flush_denormals()") < main.index("parse_args(") + 80


def _saturated_setup():
    model, tokenizer = build_random_model(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, seed=0)
    g = torch.Generator().manual_seed(0)
    features = []
    for length in (96, 80, 64, 48):
        ids = torch.randint(10, model.config.vocab_size, (length,), generator=g).tolist()
        features.append({"input_ids": ids, "labels": [-100] * 16 + ids[16:]})
    batch = collate(features, tokenizer.pad_token_id)
    beta = 0.1
    with torch.no_grad():
        policy = sequence_logps(model(**model_inputs(batch)).logits, batch["labels"])[0]
    # β·r = 85: σ(−β·r) ≈ 1e-37, so the gradients land in the subnormal range — a run whose loss has saturated
    batch["ref_logp"] = policy - 85.0 / beta
    return model, batch, beta


def test_saturated_minorsft_step_not_much_slower_than_ntp():
    model, batch, beta = _saturated_setup()
    objectives = {"ntp": build_objective("ntp"), "minorsft": build_objective("minorsft", {"beta": beta})}

    def step(objective):
        model.zero_grad(set_to_none=True)
        loss, _ = objective.loss(model, batch)
        loss.backward()

    torch.set_flush_denormal(False)  # as in a fresh process (another test may have flushed in this one)
    step(objectives["minorsft"])
    # the regime is the one that matters: without flushing, nearly every gradient entry is subnormal
    assert subnormal_share(p.grad for p in model.parameters()) > 0.5
    flush_denormals()
    step(objectives["minorsft"])
    assert subnormal_share(p.grad for p in model.parameters()) == 0.0
    times = {name: [] for name in objectives}
    for _ in range(9):  # interleaved, fastest of each kept: robust to a loaded machine
        for name, objective in objectives.items():
            start = time.perf_counter()
            step(objective)
            times[name].append(time.perf_counter() - start)
    # a generous factor: the slowdown it guards against is 10x (issue 18); a loaded machine adds noise
    assert min(times["minorsft"]) < 3.0 * min(times["ntp"])
