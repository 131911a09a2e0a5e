"""Per-example gradient features of a LoRA model, as LESS and ROSE use them (METHODS.md, "LESS and ROSE").

A feature is the gradient of one example's loss w.r.t. the LoRA parameters (all LoRA matrices, in
``named_parameters`` order), Adam-preconditioned with a warmup checkpoint's moments (training features),
randomly projected to ``dim`` (``sftlab.selection.projection``), L2-normalised and kept in fp16.

Per-example gradients come from one ordinary batched forward/backward with the model's own attention (SDPA,
flash-attention): every LoRA matrix is a linear map y = x·Wᵀ, and the gradient of one example's loss w.r.t. W is
Σ_t (∂ℓ/∂y_t)ᵀ x_t over that example's tokens. Hooks capture x in the forward and ∂ℓ/∂y in the backward (the way
Opacus forms per-sample gradients); because examples do not interact in a batch (eval mode, padding masked), the
gradient of Σ_b ℓ_b at example b's positions is ∂ℓ_b/∂y. Each matrix's (B, out·in) gradients are preconditioned
with that matrix's Adam moments and projected as soon as its output gradient arrives, inside the backward: the
concatenated P-number gradient of an example never exists (P = 134M for LESS's Llama-2-7B adapter).

Batches are filled up to ``max_tokens`` padded tokens (longest examples first); an item whose sequences alone
exceed the budget is refused with an error naming it (raise the budget or lower ``max_length``), never truncated
silently.

Losses, per example:

- ``train`` / ``ntp``: mean token NLL over the response tokens (LESS training features and LESS validation).
- ``dpo``: −log σ(β·[(log πθ(y_w|x) − log πθ(y_l|x)) − (log πref(y_w|x) − log πref(y_l|x))]),
  with πref the same model with its adapter disabled (ROSE validation).

Feature files are ``torch.save`` dicts (load with ``load_features``; ``weights_only`` safe):
``{"ids": [str], "features": (N, dim) float16, "subtasks": [str], "skipped": [str],
"kind", "projection", "dim", "seed", "n_params"}``.
``skipped`` holds ids with no response token left after truncation to ``max_length`` (no gradient exists).
Features are comparable only when ``projection``, ``dim``, ``seed`` and ``n_params`` agree (checked on gathering
and by the influence step).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from sftlab.data.tokenize import collate, encode_example
from sftlab.io import atomic_path
from sftlab.objectives.base import sequence_logps
from sftlab.progress import progress

from .projection import Projection

FEATURE_KINDS = ("train", "ntp", "dpo")
#: what must agree between feature files that are compared or gathered
FEATURE_SETTINGS = ("projection", "dim", "seed", "n_params")


# ----------------------------------------------------------------------------- losses


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Element-wise DPO loss −log σ(β·[(πθ_w − πθ_l) − (πref_w − πref_l)]) from sequence log-probs."""
    margin = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return -torch.nn.functional.logsigmoid(beta * margin)


def example_losses(model: torch.nn.Module, inputs: dict[str, torch.Tensor], kind: str, beta: float) -> torch.Tensor:
    """(B,) loss of each item from one batched forward; ``inputs`` (B, G, T) from ``batch_inputs``.

    NTP: mean token NLL of the item's one sequence. DPO: the pair's DPO loss against ``inputs["ref_logps"]`` (B, 2).
    """
    b, g, t = inputs["input_ids"].shape
    logits = model(input_ids=inputs["input_ids"].view(b * g, t), attention_mask=inputs["attention_mask"].view(b * g, t)).logits
    logps, n_tokens = sequence_logps(logits, inputs["labels"].view(b * g, t))
    if kind == "dpo":
        logps, ref = logps.view(b, 2), inputs["ref_logps"]
        return dpo_loss(logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta)
    return -logps / n_tokens.clamp(min=1)


# ----------------------------------------------------------------------------- per-example gradients


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, in ``named_parameters`` order (the order of the flattened gradient).

    Raises if a trainable parameter is not a LoRA matrix: a feature must be the gradient w.r.t. the adapter only.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters; load the adapter with is_trainable=True")
    others = [name for name in params if "lora_" not in name]
    if others:
        raise ValueError(f"trainable parameters that are not LoRA matrices: {others[:5]}")
    return params


def lora_linears(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> dict[str, torch.nn.Linear]:
    """parameter name → the bias-free ``nn.Linear`` it is the weight of, for every trainable parameter."""
    linears = {f"{name}.weight": m for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and f"{name}.weight" in params}
    others = [name for name in params if name not in linears]
    if others:
        raise ValueError(f"per-example gradients by hooks cover the weights of bias-free LoRA Linear layers; "
                         f"these trainable parameters are not: {others[:5]}")
    biased = [name for name, m in linears.items() if m.bias is not None and m.bias.requires_grad]
    if biased:
        raise ValueError(f"LoRA layers with a trainable bias are not supported: {biased[:5]}")
    return {name: linears[name] for name in params}


class PerExampleGradientTaps:
    """While active, every LoRA Linear hands its per-example weight gradients to ``consume`` during backward.

    ``consume(index, name, grads)``: ``index`` the parameter's position in ``params``, ``grads`` (B, out, in)
    float32, B = items of the batch (the ``groups`` sequences of an item, e.g. a DPO pair, are summed).
    """

    def __init__(self, model: torch.nn.Module, params: dict[str, torch.Tensor], groups: int,
                 consume: Callable[[int, str, torch.Tensor], None]) -> None:
        self.linears = lora_linears(model, params)
        self.groups, self.consume = groups, consume
        self._handles: list = []

    def _forward_hook(self, index: int, name: str):
        def hook(module, args, output):
            if not output.requires_grad:
                return
            x = args[0].detach()

            def on_grad(grad_output):
                # (B·G, T, ·) → (B, G·T, ·): an item's gradient sums over all its sequences' tokens
                b = x.shape[0] // self.groups
                g = grad_output.reshape(b, -1, grad_output.shape[-1]).float()
                self.consume(index, name, torch.bmm(g.transpose(1, 2), x.reshape(b, -1, x.shape[-1]).float()))

            output.register_hook(on_grad)

        return hook

    def __enter__(self):
        for index, (name, linear) in enumerate(self.linears.items()):
            self._handles.append(linear.register_forward_hook(self._forward_hook(index, name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def backward_per_example(model: torch.nn.Module, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
                         kind: str, beta: float, consume: Callable[[int, str, torch.Tensor], None]) -> None:
    """One batched forward/backward of Σ_b ℓ_b; ``consume`` receives each LoRA matrix's per-example gradients."""
    if model.training:
        raise ValueError("per-example gradients need the model in eval mode (dropout would couple them to the batch)")
    with PerExampleGradientTaps(model, params, inputs["input_ids"].shape[1], consume):
        losses = example_losses(model, inputs, kind, beta)
        # the weights' own (summed) gradients are a by-product of the backward the hooks ride on; discarded
        torch.autograd.grad(losses.sum(), list(params.values()))


def per_example_gradients(model: torch.nn.Module, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
                          kind: str = "ntp", beta: float = 0.1) -> torch.Tensor:
    """(B, P) per-example gradients, flattened in ``params`` order (tests and benchmarks; features never form it)."""
    grads: dict[int, torch.Tensor] = {}
    backward_per_example(model, params, inputs, kind, beta, lambda i, name, g: grads.__setitem__(i, g.flatten(1)))
    return torch.cat([grads[i] for i in range(len(params))], dim=1)


def adam_precondition(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    betas: tuple[float, float],
    eps: float = 1e-8,
) -> torch.Tensor:
    """Γ = m' / sqrt(v' + eps), m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g² (no bias correction, as LESS)."""
    beta1, beta2 = betas
    # in place on fresh (B, n) tensors: 134M numbers an example at LESS's size, each pass over them counts
    m = torch.add(beta1 * exp_avg, grads, alpha=1 - beta1)
    v = grads.square().mul_(1 - beta2).add_(beta2 * exp_avg_sq).add_(eps)
    return m.div_(v.sqrt_())


def module_moments(params: dict[str, torch.Tensor], moments: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   source: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Adam moments (exp_avg, exp_avg_sq) of each parameter in ``params`` order, flattened, float32, on its device.

    ``source`` names the checkpoint: a parameter without moments (or with moments of another shape) is an error.
    """
    missing = [name for name in params if name not in moments]
    if missing:
        raise KeyError(f"{source}: no Adam moments for parameters {missing[:5]} ({len(missing)} missing)")
    out = []
    for name, p in params.items():
        avg, avg_sq = moments[name]
        if avg.numel() != p.numel() or avg_sq.numel() != p.numel():
            raise ValueError(f"{source}: Adam moments of {name} have {avg.numel()} numbers, the parameter {p.numel()}")
        out.append((avg.reshape(-1).to(p.device, torch.float32), avg_sq.reshape(-1).to(p.device, torch.float32)))
    return out


# ----------------------------------------------------------------------------- data


def take_shots(rows: list[dict], shots: int | None) -> list[dict]:
    """The first ``shots`` rows of each subtask (file order); all rows when ``shots`` is None."""
    if shots is None:
        return list(rows)
    seen: dict[str, int] = {}
    kept = []
    for row in rows:
        subtask = row_subtask(row)
        if seen.get(subtask, 0) < shots:
            kept.append(row)
            seen[subtask] = seen.get(subtask, 0) + 1
    return kept


def row_subtask(row: dict) -> str:
    """A validation item's subtask: ``subtask``, else ``source`` (SFT examples), else one shared group."""
    return str(row.get("subtask", row.get("source", "all")))


def pair_messages(pair: dict) -> tuple[list[dict], list[dict]]:
    """(chosen conversation, rejected conversation) of a preference pair."""
    prompt = list(pair["prompt"])
    return (prompt + [{"role": "assistant", "content": pair["chosen"]}],
            prompt + [{"role": "assistant", "content": pair["rejected"]}])


def encode_rows(tokenizer, rows: list[dict], kind: str, max_length: int) -> tuple[list[dict], list[str]]:
    """Encoded items ``{"id", "subtask", "sequences": [encoded, ...]}`` and the ids that had to be skipped.

    An SFT example is one sequence; a preference pair is two (chosen, rejected), or, for ``ntp`` (LESS on a
    preference validation set), one: the prompt with its chosen answer. An item is skipped when a sequence
    keeps no response token after truncation to ``max_length``.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {FEATURE_KINDS}")
    items, skipped = [], []
    for row in rows:
        chosen_only = kind == "ntp" and "messages" not in row and "chosen" in row
        if kind == "dpo":
            required, what = ("id", "prompt", "chosen", "rejected"), "preference pair"
        elif chosen_only:
            required, what = ("id", "prompt", "chosen"), "preference pair"
        else:
            required, what = ("id", "messages"), "example"
        for key in required:
            if key not in row:
                raise KeyError(f"{what} {row.get('id', '?')!r} lacks {key!r}")
        if kind == "dpo":
            conversations = pair_messages(row)
        elif chosen_only:
            conversations = [list(row["prompt"]) + [{"role": "assistant", "content": row["chosen"]}]]
        else:
            conversations = [row["messages"]]
        sequences = [encode_example(tokenizer, messages, max_length) for messages in conversations]
        if any(s is None for s in sequences):
            skipped.append(str(row["id"]))
        else:
            items.append({"id": str(row["id"]), "subtask": row_subtask(row), "sequences": sequences})
    return items, skipped


def shard_slice(n: int, shard: int, n_shards: int) -> slice:
    """Contiguous shard ``shard`` of ``n_shards`` over n items: concatenating shards in order restores the pool."""
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard must be in [0, {n_shards}), got {shard}")
    return slice(shard * n // n_shards, (shard + 1) * n // n_shards)


def batch_inputs(items: list[dict], pad_token_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Collate the items' sequences to one width and shape them (B, G, T)."""
    sequences = [s for item in items for s in item["sequences"]]
    flat = collate(sequences, pad_token_id)
    groups = len(items[0]["sequences"])
    return {key: flat[key].view(len(items), groups, -1).to(device) for key in ("input_ids", "attention_mask", "labels")}


@torch.no_grad()
def reference_logps(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, G) sequence log-probs under πref = the model with its LoRA adapter disabled."""
    b, g, t = inputs["input_ids"].shape
    with model.disable_adapter():
        logits = model(input_ids=inputs["input_ids"].view(b * g, t),
                       attention_mask=inputs["attention_mask"].view(b * g, t)).logits
    logps, _ = sequence_logps(logits, inputs["labels"].view(b * g, t))
    return logps.view(b, g)


# ----------------------------------------------------------------------------- features


def item_tokens(item: dict) -> int:
    """Padded tokens an item takes in a batch of its own width: sequences × the longest sequence."""
    return len(item["sequences"]) * max(len(s["input_ids"]) for s in item["sequences"])


def token_batches(items: list[dict], max_tokens: int) -> list[list[int]]:
    """Indices of ``items`` in batches of at most ``max_tokens`` padded tokens, longest items first.

    Sorted by length, a batch's width is its first item's, so a batch of k items costs k × that item's tokens.
    An item that alone exceeds the budget is refused (an error naming it), not truncated.
    """
    order = sorted(range(len(items)), key=lambda i: -item_tokens(items[i]))
    batches: list[list[int]] = []
    for i in order:
        tokens = item_tokens(items[i])
        if tokens > max_tokens:
            raise ValueError(f"item {items[i]['id']!r} needs {tokens} tokens, over the token budget "
                             f"gradients.max_tokens = {max_tokens}; raise it or lower max_length")
        if batches and (len(batches[-1]) + 1) * item_tokens(items[batches[-1][0]]) <= max_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def gradient_features(
    model: torch.nn.Module,
    items: list[dict],
    kind: str,
    pad_token_id: int,
    projection: Projection,
    max_tokens: int = 4096,
    moments: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    beta: float = 0.1,
) -> torch.Tensor:
    """(N, dim) float16 features of ``items`` (from ``encode_rows``), in item order.

    ``train`` needs ``moments`` (per parameter, see ``module_moments``) and ``betas``; ``ntp`` and ``dpo`` are
    plain gradients. ``beta`` is the DPO temperature. Batches hold at most ``max_tokens`` padded tokens.
    """
    if kind not in FEATURE_KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {FEATURE_KINDS}")
    if kind == "train" and moments is None:
        raise ValueError("training features need the checkpoint's Adam moments")
    if kind != "train" and moments is not None:
        raise ValueError(f"{kind!r} features are plain gradients; Adam moments are for training features only")
    model.eval()
    params = lora_parameters(model)
    device = next(iter(params.values())).device
    out = torch.empty(len(items), projection.dim, dtype=torch.float16)
    batches = token_batches(items, max_tokens)
    for index in progress(batches, f"{kind} gradient features", total=len(batches)):
        inputs = batch_inputs([items[i] for i in index], pad_token_id, device)
        if kind == "dpo":
            inputs["ref_logps"] = reference_logps(model, inputs)
        projected = torch.zeros(len(index), projection.dim, device=projection.device)

        def consume(k, name, grads):
            grads = grads.flatten(1)
            if moments is not None:
                grads = adam_precondition(grads, moments[k][0], moments[k][1], betas)
            projected.add_(projection.project(k, grads))

        backward_per_example(model, params, inputs, kind, beta, consume)
        out[index] = torch.nn.functional.normalize(projected, dim=1).to("cpu", torch.float16)
    return out


def save_features(path: str | Path, ids: Sequence[str], features: torch.Tensor, subtasks: Sequence[str],
                  skipped: Sequence[str], kind: str, *, projection: str, dim: int, seed: int, n_params: int) -> None:
    if len(ids) != features.shape[0] or len(ids) != len(subtasks):
        raise ValueError(f"{path}: {len(ids)} ids, {features.shape[0]} feature rows, {len(subtasks)} subtasks")
    record = {"ids": list(ids), "features": features.to(torch.float16).contiguous(), "subtasks": list(subtasks),
              "skipped": list(skipped), "kind": kind, "projection": projection, "dim": dim, "seed": seed,
              "n_params": n_params}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(record, tmp)


def load_features(path: str | Path) -> dict:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"gradient features not found: {path}") from None
    missing = {"ids", "features", "subtasks", "skipped", "kind", *FEATURE_SETTINGS} - set(record)
    if missing:
        raise ValueError(f"{path}: not a gradient-feature file of this version (lacks {sorted(missing)}); "
                         f"recompute it")
    return record


def settings_of(record: dict) -> str:
    return ", ".join(f"{key} {record[key]}" for key in FEATURE_SETTINGS)


def check_comparable(records: Sequence[dict], paths: Sequence[str | Path]) -> None:
    """Refuse feature files made by different projections (name, dim, seed) or of different adapters (n_params):
    their inner products mean nothing."""
    for path, record in zip(paths, records):
        if any(record[key] != records[0][key] for key in FEATURE_SETTINGS):
            raise ValueError(f"{path} ({settings_of(record)}) and {paths[0]} ({settings_of(records[0])}) were made "
                             f"by different projections or adapters and cannot be compared; recompute one of them "
                             f"with the other's gradients.projection / dim / seed")


def gather_features(paths: Sequence[str | Path], out: str | Path) -> None:
    """Concatenate shard files in the given (shard) order into one file; shards must agree on their settings."""
    records = [load_features(p) for p in paths]
    if not records:
        raise ValueError("no shard files to gather")
    first = records[0]
    check_comparable(records, paths)
    for path, record in zip(paths, records):
        if record["kind"] != first["kind"]:
            raise ValueError(f"{path}: kind={record['kind']!r} differs from {paths[0]}: {first['kind']!r}")
    ids = [i for r in records for i in r["ids"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids across shards {list(map(str, paths))}")
    save_features(out, ids, torch.cat([r["features"] for r in records]),
                  [s for r in records for s in r["subtasks"]], [s for r in records for s in r["skipped"]],
                  first["kind"], **{key: first[key] for key in FEATURE_SETTINGS})


def load_lora_checkpoint(base_model: str | Path, checkpoint: str | Path, device: str = "cpu",
                         dtype: torch.dtype = torch.float32):
    """(peft model with a trainable adapter, eval mode, the model's default attention; tokenizer) for features."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.data.tokenize import ensure_chat_template

    for path, what in ((base_model, "base model"), (checkpoint, "warmup checkpoint")):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{what} directory not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ensure_chat_template(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    model = PeftModel.from_pretrained(base, checkpoint, is_trainable=True).to(device)
    model.eval()
    return model, tokenizer
