"""Fisher merging (Matena & Raffel, 2022): a diagonal-Fisher-weighted average of the member models.

    θ*_i = Σ_k c_k·max(F_k,i, floor)·θ_k,i / Σ_k c_k·max(F_k,i, floor)

Two Fishers (``merge.fisher_type``):

``model`` (the default: Matena & Raffel's definition and their code, github.com/mmatena/model_merging)
    The Fisher under the model's *own* predictive distribution, F_k = E_x E_{y~p_θk(·|x)} [(∂ log p_θk(y|x)/∂θ)²].
    Their code (``fisher.py``, GLUE classifiers) sums exactly over the classes, Σ_y p(y|x)·g_y², one backward pass
    per class; sampling y from the logits is left there as a TODO. A causal LM has a class per vocabulary entry at
    every answer token, one backward per class would be |V|·T passes an example, so we *sample*: at each answer
    position t the token ŷ_t is drawn from the model's prediction p(·|x, y<t) (the data's prefix, teacher-forced),
    and the example contributes (∂ Σ_t log p(ŷ_t|x, y<t)/∂θ)², one backward pass, as the empirical Fisher costs.
    Its expectation is Σ_t E_{ŷ_t} [g_t²], the per-token expected Fisher: the draws at different positions are
    independent and each score g_t has mean zero under the model, so the cross terms vanish in expectation.
    Each member's merge coefficient is its prior weight divided by the L2 norm of its whole Fisher
    (√(Σ_i F_k,i²) over every tensor weighted; their ``merging.py`` ``_l2_norm_of_fisher`` and
    ``normalize_fishers=True``), and F is floored as ``max(F, 1e-6)`` *before* that division (their
    ``fisher_floor``, on the raw Fisher). Their default ``favor_target_model`` floors the first (target) model's
    Fisher only; DTM's members are symmetric, so every member is floored (their ``favor_target_model=False``).
``empirical``
    The empirical Fisher: y is the example's own answer (the tokens the member was trained on), no normalisation
    (a member with longer answers weighs more), floored at 1e-30 (below any squared gradient float32 produces).

In both, F_k is the mean over a seeded sample of member k's *own* training examples (a DTM sub-model's shard, a
seed-soup member's selection) of the squared gradient of one example's log-likelihood at a time (the square of a
batch's mean gradient would be another quantity). ``w_k`` are the prior weights (uniform by default). Where every
member's Fisher is below the floor, the merge is the coefficient-weighted mean of the members.

Only tensors that some member changed from the base model are weighted (and normalised over): the others are equal
in every member (a LoRA run leaves all but its target modules at the base's values), so any weighting returns them
unchanged, and no gradient is computed for them. (Matena & Raffel's norm runs over the whole encoder body; for a
full fine-tune that is every tensor here too.) The members are processed one at a time; the sums Σ c·F·θ and Σ c·F
of the trained tensors are held in float32 on the CPU. The merged model's ``fisher_merge.json`` records the Fisher
used, its floor, and each member's norm, coefficient and share of entries below the floor.
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import torch

from sftlab.compose.merge import FISHER_TYPES, FisherType
from sftlab.progress import progress

log = logging.getLogger(__name__)


#: The file of a Fisher-merged model directory that records how it was merged.
METADATA_FILE = "fisher_merge.json"


def fisher_spec(name: str) -> FisherType:
    if name not in FISHER_TYPES:
        raise ValueError(f"unknown fisher_type {name!r}; known: {list(FISHER_TYPES)}")
    return FISHER_TYPES[name]


def model_labels(logits: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``labels`` with each answer token (label != −100) replaced by a draw from the model's prediction for it
    (the logits one position earlier)."""
    mask = labels[:, 1:] != -100
    probs = logits[:, :-1].detach()[mask].float().softmax(-1)
    drawn = labels.clone()
    drawn[:, 1:][mask] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return drawn


def example_loglik(model: torch.nn.Module, example: Mapping[str, list[int]], device: torch.device,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """log p(y|x) of one encoded example: the sum of its answer tokens' log-probabilities (labels != −100); with
    ``generator``, of tokens drawn from the model at the answer's positions instead of the answer's own."""
    from sftlab.objectives.base import sequence_logps

    input_ids = torch.tensor([example["input_ids"]], device=device)
    labels = torch.tensor([example["labels"]], device=device)
    logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
    if generator is not None:
        labels = model_labels(logits, labels, generator)
    return sequence_logps(logits, labels)[0][0]


def diagonal_fisher(model: torch.nn.Module, examples: Sequence[Mapping[str, list[int]]],
                    names: Sequence[str], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Mean over ``examples`` of the squared gradient of each example's log-likelihood, for parameters ``names``:
    of the data's answers (the empirical Fisher), or with ``generator`` of answers drawn from the model."""
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
            example_loglik(model, example, device, generator).backward()
            for n in names:
                if params[n].grad is not None:
                    fisher[n] += params[n].grad.float().square()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return {n: f / len(examples) for n, f in fisher.items()}


def fisher_norm(fisher: Mapping[str, torch.Tensor]) -> float:
    """The L2 norm of a whole diagonal Fisher, all its tensors together."""
    return math.sqrt(sum(float(f.double().square().sum()) for f in fisher.values()))


def merge_coefficient(norm: float, weight: float, kind: FisherType) -> float:
    """A member's coefficient c_k: its prior weight, divided by its Fisher's L2 norm ``norm`` where the Fisher is
    normalised."""
    if not kind.normalised:
        return weight
    if norm == 0:
        raise ValueError("a member's Fisher is zero on every tensor: it cannot be normalised (its examples' "
                         "gradients vanish)")
    return weight / norm


def weighted_terms(value: torch.Tensor, fisher: torch.Tensor, coefficient: float,
                   floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One member's terms of the merge: (c·max(F, floor)·θ, c·max(F, floor))."""
    weight = coefficient * fisher.clamp_min(floor)
    return weight * value, weight


def fisher_weighted_average(values: Sequence[torch.Tensor], fishers: Sequence[torch.Tensor],
                            coefficients: Sequence[float], floor: float) -> torch.Tensor:
    """Σ c_k·max(F_k, floor)·θ_k / Σ c_k·max(F_k, floor) per coordinate."""
    terms = [weighted_terms(v, f, c, floor) for v, f, c in zip(values, fishers, coefficients)]
    return sum(t[0] for t in terms) / sum(t[1] for t in terms)


def merge_members(members: Iterable[tuple[torch.nn.Module, Sequence[Mapping[str, list[int]]]]],
                  names: Sequence[str], weights: Sequence[float], kind: str = "model",
                  seed: int = 0) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Fisher-merge tensors ``names`` of the members, each a (model, its encoded examples) pair, taken one at a time
    (an iterator may load them lazily). Member k's draws are seeded with ``seed + k``. Returns the merged tensors
    (float32, CPU) and each member's record (examples, Fisher norm, coefficient, share of its Fisher's entries below
    the floor: weighted by the floor, not by their Fisher)."""
    spec = fisher_spec(kind)
    num: dict[str, torch.Tensor] = {}
    den: dict[str, torch.Tensor] = {}
    records = []
    for k, ((model, examples), weight) in enumerate(zip(members, weights, strict=True)):
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed + k) if spec.sampled else None
        fisher = diagonal_fisher(model, examples, names, generator)  # on the model's device, moved a tensor at a time
        norm = fisher_norm(fisher)
        coefficient = merge_coefficient(norm, weight, spec)
        params = dict(model.named_parameters())
        floored = 0
        for n in names:
            if fisher[n].eq(0).all():
                log.warning("member %d: Fisher of %s is zero on all %d examples", k, n, len(examples))
            floored += int(fisher[n].lt(spec.floor).sum())
            term, norm_term = weighted_terms(params[n].detach().float().cpu(), fisher[n].cpu(), coefficient,
                                             spec.floor)
            num[n] = num[n].add_(term) if n in num else term
            den[n] = den[n].add_(norm_term) if n in den else norm_term
        size = sum(fisher[n].numel() for n in names)
        records.append({"examples": len(examples), "fisher_norm": norm, "coefficient": coefficient,
                        "share_below_floor": floored / size if size else 0.0})
    return {n: num[n] / den[n] for n in num}, records


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
                 max_length: int = 1024, seed: int = 0, device: str = "cpu", fisher_type: str = "model") -> dict:
    """Fisher-merge full model directories; each member's Fisher (``fisher_type``, see the module) comes from a
    sample of ``member_examples[k]`` (normalised examples), ``samples`` of them per member. Writes ``out_dir``
    atomically, with ``fisher_merge.json`` recording how it merged; returns that record."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from sftlab.compose.merge import _config_dtype, copy_tokenizer
    from sftlab.data.tokenize import encode_example, ensure_chat_template
    from sftlab.io import atomic_path

    spec = fisher_spec(fisher_type)
    models = [Path(m) for m in models]
    if len(member_examples) != len(models):
        raise ValueError(f"Fisher merging: {len(member_examples)} example sets for {len(models)} models")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ensure_chat_template(tokenizer)
    changed = _changed_tensors(models, Path(base_model))

    with torch.device("meta"):  # the parameter names, without the weights
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_model))
    # tied weights are one parameter under the first name; a changed tensor saved under another name is it
    names = [n for n, _ in skeleton.named_parameters() if n in changed]

    def members():
        for k, (model_dir, examples) in enumerate(zip(models, member_examples)):
            encoded = [e for e in (encode_example(tokenizer, ex["messages"], max_length)
                                   for ex in sample_examples(examples, samples, seed + k)) if e is not None]
            if not encoded:
                raise ValueError(f"{model_dir}: no example with a response token within max_length={max_length}")
            yield AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device), encoded

    merged, records = merge_members(members(), names, weights, fisher_type, seed)
    # the tensors no member changed are the base's: the merged values go into it (on the CPU, the members freed)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    with torch.no_grad():
        params = dict(base.named_parameters())
        for n, value in merged.items():
            params[n].copy_(value)
    base.to(getattr(torch, _config_dtype(Path(base_model))))
    record = {"method": "fisher", "fisher_type": fisher_type, **asdict(spec), "seed": seed,
              "weights": list(weights), "tensors": names,
              "members": [{"model": str(m), **r} for m, r in zip(models, records)]}
    with atomic_path(out_dir) as tmp:
        base.save_pretrained(tmp, safe_serialization=True)
        copy_tokenizer(base_model, tmp)
        Path(tmp, METADATA_FILE).write_text(json.dumps(record, indent=1))
    log.info("Fisher-merged %d models (%s; %d tensors weighted; %s examples each) into %s", len(models),
             spec.description, len(names), [r["examples"] for r in records], out_dir)
    return record
