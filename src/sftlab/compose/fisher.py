"""Fisher merging (Matena & Raffel, 2022): a diagonal-Fisher-weighted average of the member models.

    θ*_i = Σ_k w_k·F_k,i·θ_k,i / Σ_k w_k·F_k,i        F_k,i = E_x [(∂ log p_θk(y|x) / ∂θ_i)²]

F_k is the empirical diagonal Fisher of member k: the mean over a seeded sample of its *own* training examples
(a DTM sub-model's shard, a seed-soup member's selection) of the squared gradient of the example's log-likelihood
(the sum of its response tokens' log-probabilities, the tokens the member was trained on), one example at a time:
the square of a batch's mean gradient would be another quantity. ``w_k`` are the prior weights (uniform by
default). Every F is floored at ``FISHER_FLOOR`` (1e-30, below any squared gradient float32 training produces), so
a coordinate where every member's Fisher is zero gets the weighted mean of the members.

Only tensors that some member changed from the base model are weighted: the others are equal in every member (a
LoRA run leaves all but its target modules at the base's values), so any weighting returns them unchanged, and
no gradient is computed for them. The members are processed one at a time; the sums Σ w·F·θ and Σ w·F of the
trained tensors are held in float32 on the CPU.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Mapping, Sequence

import torch

from sftlab.progress import progress

log = logging.getLogger(__name__)

FISHER_FLOOR = 1e-30


def example_loglik(model: torch.nn.Module, example: Mapping[str, list[int]], device: torch.device) -> torch.Tensor:
    """log p(y|x) of one encoded example: the sum of its response tokens' log-probabilities (labels != −100)."""
    from sftlab.objectives.base import sequence_logps

    input_ids = torch.tensor([example["input_ids"]], device=device)
    labels = torch.tensor([example["labels"]], device=device)
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    return sequence_logps(logits, labels)[0][0]


def diagonal_fisher(model: torch.nn.Module, examples: Sequence[Mapping[str, list[int]]],
                    names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Mean over ``examples`` of the squared gradient of each example's log-likelihood, for parameters ``names``."""
    if not examples:
        raise ValueError("the diagonal Fisher needs at least one example")
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"model has no parameters {missing[:3]}")
    for name, param in params.items():
        param.requires_grad_(name in names)
    device = next(model.parameters()).device
    fisher = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    was_training = model.training
    model.eval()  # no dropout: the Fisher of the model as it is, not of a random sub-network
    try:
        for example in progress(examples, "Fisher", total=len(examples), unit="example"):
            model.zero_grad(set_to_none=True)
            example_loglik(model, example, device).backward()
            for n in names:
                if params[n].grad is not None:
                    fisher[n] += params[n].grad.float().square()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return {n: f / len(examples) for n, f in fisher.items()}


def fisher_weighted_average(values: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor],
                            weights: Sequence[float]) -> torch.Tensor:
    """Σ w_k·F_k·θ_k / Σ w_k·F_k per coordinate (F floored: the weighted mean where all F_k are 0)."""
    num = sum(w * (f + FISHER_FLOOR) * v for w, f, v in zip(weights, fishers, values))
    return num / sum(w * (f + FISHER_FLOOR) for w, f in zip(weights, fishers))


def sample_examples(examples: Sequence[dict], n: int, seed: int) -> list[dict]:
    """A seeded sample of ``n`` examples (all of them when there are fewer), in their original order."""
    if len(examples) <= n:
        return list(examples)
    keep = sorted(random.Random(seed).sample(range(len(examples)), n))
    return [examples[i] for i in keep]


def _changed_tensors(models: Sequence[Path], base_model: Path) -> set[str]:
    """Names of the tensors some member changed from the base (streamed from the safetensors files)."""
    from safetensors import safe_open

    def files(model_dir: Path) -> dict[str, Path]:
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            return {k: model_dir / v for k, v in json.loads(index.read_text())["weight_map"].items()}
        single = model_dir / "model.safetensors"
        if not single.is_file():
            raise FileNotFoundError(f"{model_dir}: no safetensors weights (Fisher merging reads safetensors)")
        with safe_open(str(single), "pt") as f:
            return {k: single for k in f.keys()}

    base_files = files(base_model)
    changed = set()
    for model_dir in models:
        for name, path in files(model_dir).items():
            if name in changed:
                continue
            if name not in base_files:
                raise KeyError(f"{model_dir}: tensor {name} is not in the base model {base_model}")
            with safe_open(str(path), "pt") as f, safe_open(str(base_files[name]), "pt") as b:
                if not torch.equal(f.get_tensor(name), b.get_tensor(name)):
                    changed.add(name)
    return changed


def fisher_merge(models: Sequence[str | Path], out_dir: str | Path, base_model: str | Path,
                 member_examples: Sequence[Sequence[dict]], weights: Sequence[float], samples: int,
                 max_length: int = 1024, seed: int = 0, device: str = "cpu") -> dict:
    """Fisher-merge full model directories; each member's Fisher comes from a sample of ``member_examples[k]``
    (normalised examples), ``samples`` of them per member. Writes ``out_dir`` atomically; returns a summary (tensors weighted, examples used)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.compose.merge import _config_dtype, copy_tokenizer
    from sftlab.data.tokenize import encode_example, ensure_chat_template
    from sftlab.io import atomic_path

    models = [Path(m) for m in models]
    if len(member_examples) != len(models):
        raise ValueError(f"Fisher merging: {len(member_examples)} example sets for {len(models)} models")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ensure_chat_template(tokenizer)
    changed = _changed_tensors(models, Path(base_model))
    num: dict[str, torch.Tensor] = {}
    den: dict[str, torch.Tensor] = {}
    used = []
    model = None
    for k, (model_dir, examples, weight) in enumerate(zip(models, member_examples, weights)):
        encoded = [e for e in (encode_example(tokenizer, ex["messages"], max_length)
                               for ex in sample_examples(examples, samples, seed + k)) if e is not None]
        if not encoded:
            raise ValueError(f"{model_dir}: no example with a response token within max_length={max_length}")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        params = dict(model.named_parameters())
        # tied weights are one parameter under the first name; a changed tensor saved under another name is it
        names = [n for n in params if n in changed]
        fisher = diagonal_fisher(model, encoded, names)
        for n in names:
            value, f = params[n].detach().float().cpu(), fisher[n].cpu()
            num[n] = num.get(n, 0) + weight * (f + FISHER_FLOOR) * value
            den[n] = den.get(n, 0) + weight * (f + FISHER_FLOOR)
            if f.eq(0).all():
                log.warning("%s: Fisher of %s is zero on all %d examples", model_dir, n, len(encoded))
        used.append(len(encoded))
        if k < len(models) - 1:
            del model
    with torch.no_grad():
        params = dict(model.named_parameters())
        for n in num:
            params[n].copy_((num[n] / den[n]).to(params[n].device))
    model.to("cpu").to(getattr(torch, _config_dtype(Path(base_model))))
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        copy_tokenizer(base_model, tmp)
    log.info("Fisher-merged %d models (%d tensors weighted; %s examples each) into %s",
             len(models), len(num), used, out_dir)
    return {"method": "fisher", "tensors": sorted(num), "examples": used, "weights": list(weights)}
