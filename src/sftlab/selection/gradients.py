"""Per-example gradient features of a LoRA model, as LESS and ROSE use them (METHODS.md, "LESS and ROSE").

A feature is the gradient of one example's loss w.r.t. the LoRA parameters (flattened in
``named_parameters`` order), optionally Adam-preconditioned with a warmup checkpoint's moments,
randomly projected to ``dim`` with a seeded Rademacher matrix, L2-normalised and kept in fp16.

Gradients are computed for a whole batch at once: ``torch.func.vmap`` over ``grad`` of a
``functional_call`` of the model, so each example gets its own exact gradient from one batched
forward/backward (LESS runs one backward per example). Models must use eager attention: the
fused SDPA kernels have no vmap batching rule and would silently fall back to a loop.

Losses, per example:

- ``train`` / ``ntp``: mean token NLL over the response tokens (LESS training features and LESS validation).
- ``dpo``: −log σ(β·[(log πθ(y_w|x) − log πθ(y_l|x)) − (log πref(y_w|x) − log πref(y_l|x))]),
  with πref the same model with its adapter disabled (ROSE validation).

Feature files are ``torch.save`` dicts (load with ``load_features``; ``weights_only`` safe):
``{"ids": [str], "features": (N, dim) float16, "subtasks": [str], "skipped": [str],
"kind", "dim", "seed", "n_params"}``.
``skipped`` holds ids with no response token left after truncation to ``max_length`` (no gradient exists).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from sftlab.progress import progress
from sftlab.data.tokenize import collate, encode_example
from sftlab.io import atomic_path
from sftlab.objectives.base import sequence_logps
from sftlab.objectives.ntp import ntp_loss

FEATURE_KINDS = ("train", "ntp", "dpo")

#: Rows (parameter coordinates) per generated block of the projection matrix. Part of the matrix's
#: definition: block b is drawn from a generator keyed by (seed, b), so changing this changes the matrix.
PROJECTION_BLOCK_ROWS = 4096


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


def ntp_example_loss(logits: torch.Tensor, example: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean token NLL of one example; ``logits`` (1, T, V)."""
    return ntp_loss(logits, example["labels"])


def dpo_example_loss(beta: float) -> Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]:
    """DPO loss of one pair; ``logits`` (2, T, V) for (chosen, rejected), ``example["ref_logps"]`` (2,)."""

    def loss(logits, example):
        logps, _ = sequence_logps(logits, example["labels"])
        ref = example["ref_logps"]
        return dpo_loss(logps[0], logps[1], ref[0], ref[1], beta)

    return loss


# ----------------------------------------------------------------------------- per-example gradients


def lora_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name, in ``named_parameters`` order (the order of the flattened gradient).

    Raises if a trainable parameter is not a LoRA matrix: a feature must be the gradient w.r.t. the adapter only.
    """
    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters; load the adapter with is_trainable=True")
    others = [name for name in params if "lora_" not in name]
    if others:
        raise ValueError(f"trainable parameters that are not LoRA matrices: {others[:5]}")
    return params


def use_eager_attention(model: torch.nn.Module) -> None:
    """Switch to eager attention, the implementation vmap can batch (see the module docstring)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if base.config._attn_implementation != "eager":
        base.set_attn_implementation("eager")


def per_example_gradients(
    model: torch.nn.Module,
    params: dict[str, torch.Tensor],
    example_loss: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor],
    inputs: dict[str, torch.Tensor],
) -> torch.Tensor:
    """(B, P) gradients of ``example_loss`` w.r.t. ``params``, one row per example.

    ``inputs`` holds tensors with a leading example dimension B; each example's ``input_ids`` and
    ``attention_mask`` are (G, T): the G sequences the example's loss needs (1 for NTP, 2 for a pair).
    The model must be in eval mode (no dropout), so the gradient is a function of the example alone.
    """

    def loss(p, example):
        logits = functional_call(
            model,
            p,
            args=(),
            kwargs={"input_ids": example["input_ids"], "attention_mask": example["attention_mask"]},
            strict=False,
        ).logits
        return example_loss(logits, example)

    grads = vmap(grad(loss), in_dims=(None, 0))(params, inputs)
    return torch.cat([grads[name].flatten(1) for name in params], dim=1)


def adam_precondition(
    grads: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    betas: tuple[float, float],
    eps: float = 1e-8,
) -> torch.Tensor:
    """Γ = m' / sqrt(v' + eps), m' = β1·m + (1−β1)·g, v' = β2·v + (1−β2)·g² (no bias correction, as LESS)."""
    beta1, beta2 = betas
    m = beta1 * exp_avg + (1 - beta1) * grads
    v = beta2 * exp_avg_sq + (1 - beta2) * grads.square()
    return m / torch.sqrt(v + eps)


def flat_moments(
    params: dict[str, torch.Tensor], moments: dict[str, tuple[torch.Tensor, torch.Tensor]], source: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam moments flattened in the order of ``params``; ``source`` names the checkpoint for errors."""
    missing = [name for name in params if name not in moments]
    if missing:
        raise KeyError(f"{source}: no Adam moments for parameters {missing[:5]} ({len(missing)} missing)")
    device = next(iter(params.values())).device
    avg = torch.cat([moments[name][0].reshape(-1) for name in params]).to(device, torch.float32)
    avg_sq = torch.cat([moments[name][1].reshape(-1) for name in params]).to(device, torch.float32)
    return avg, avg_sq


# ----------------------------------------------------------------------------- projection


def rademacher_block(seed: int, block: int, rows: int, dim: int) -> torch.Tensor:
    """Block ``block`` of the projection matrix: (rows, dim) entries ±1/sqrt(dim), on the CPU.

    Drawn from a CPU generator keyed by (seed, block), so any process on any device regenerates exactly
    the same block without the other blocks. NumPy's PCG64 keyed through ``SeedSequence`` is used, not a
    ``torch.Generator``: torch's CPU generator keeps only 32 bits of its seed, so (seed, block) pairs would
    collide and a large adapter's tens of thousands of blocks would risk repeating one.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, block])))
    # one random byte gives eight signs
    bits = np.unpackbits(rng.integers(0, 256, size=(rows, (dim + 7) // 8), dtype=np.uint8), axis=1, count=dim)
    return torch.from_numpy(bits).to(torch.float32).mul_(2).sub_(1).div_(math.sqrt(dim))


class RademacherProjector:
    """x ↦ x·R for a (n_params, dim) Rademacher matrix R that never sits in memory whole.

    Blocks of ``PROJECTION_BLOCK_ROWS`` rows are generated on the CPU and moved to ``device``; blocks are
    kept on the device while their total stays within ``cache_bytes`` (every block, for small adapters),
    the rest is regenerated at each call. Scaled by 1/sqrt(dim) so inner products are preserved in expectation.
    """

    def __init__(self, n_params: int, dim: int = 8192, seed: int = 0, device: str | torch.device = "cpu",
                 cache_bytes: int = 2**30) -> None:
        if seed < 0:
            raise ValueError(f"projection seed must be non-negative, got {seed}")
        if dim < 1 or n_params < 1:
            raise ValueError(f"projection needs n_params >= 1 and dim >= 1, got {n_params}, {dim}")
        self.n_params, self.dim, self.seed = n_params, dim, seed
        self.device = torch.device(device)
        self.n_blocks = math.ceil(n_params / PROJECTION_BLOCK_ROWS)
        block_bytes = PROJECTION_BLOCK_ROWS * dim * 4
        self._cache_limit = min(self.n_blocks, cache_bytes // block_bytes)
        self._cache: dict[int, torch.Tensor] = {}

    def block(self, b: int) -> torch.Tensor:
        if b in self._cache:
            return self._cache[b]
        start = b * PROJECTION_BLOCK_ROWS
        rows = min(PROJECTION_BLOCK_ROWS, self.n_params - start)
        matrix = rademacher_block(self.seed, b, rows, self.dim).to(self.device)
        if b < self._cache_limit:
            self._cache[b] = matrix
        return matrix

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_params) → (B, dim), in float32."""
        if x.shape[-1] != self.n_params:
            raise ValueError(f"projector built for {self.n_params} parameters, got vectors of {x.shape[-1]}")
        x = x.to(self.device, torch.float32)
        out = torch.zeros(x.shape[0], self.dim, device=self.device)
        for b in range(self.n_blocks):
            start = b * PROJECTION_BLOCK_ROWS
            block = self.block(b)
            out += x[:, start : start + block.shape[0]] @ block
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


def gradient_features(
    model: torch.nn.Module,
    items: list[dict],
    kind: str,
    pad_token_id: int,
    projector: RademacherProjector,
    batch_size: int = 8,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    beta: float = 0.1,
    project_batch: int = 16,
) -> torch.Tensor:
    """(N, dim) float16 features of ``items`` (from ``encode_rows``), in item order.

    ``train`` needs ``moments`` (flattened exp_avg, exp_avg_sq, see ``flat_moments``) and ``betas``;
    ``ntp`` and ``dpo`` are plain gradients. ``beta`` is the DPO temperature. At most ``batch_size``
    examples' activations are in memory at once, and at most max(batch_size, project_batch) full gradients
    (P floats each): gradients are projected in groups of ``project_batch``, because each projection call
    streams the whole (P, dim) matrix through memory (or regenerates it), whatever the group size.
    """
    if kind == "train" and moments is None:
        raise ValueError("training features need the checkpoint's Adam moments")
    if kind != "train" and moments is not None:
        raise ValueError(f"{kind!r} features are plain gradients; Adam moments are for training features only")
    model.eval()
    params = lora_parameters(model)
    device = next(iter(params.values())).device
    example_loss = dpo_example_loss(beta) if kind == "dpo" else ntp_example_loss
    # longest first, so batches hold sequences of similar length (less padding); rows go back to item order
    order = sorted(range(len(items)), key=lambda i: -max(len(s["input_ids"]) for s in items[i]["sequences"]))
    out = torch.empty(len(items), projector.dim, dtype=torch.float16)
    pending_index: list[int] = []
    pending: list[torch.Tensor] = []

    def flush():
        projected = torch.nn.functional.normalize(projector.project(torch.cat(pending)), dim=1)
        out[pending_index] = projected.to("cpu", torch.float16)
        pending_index.clear()
        pending.clear()

    for start in progress(range(0, len(order), batch_size), f"{kind} gradient features",
                          total=math.ceil(len(order) / batch_size)):
        index = order[start : start + batch_size]
        inputs = batch_inputs([items[i] for i in index], pad_token_id, device)
        if kind == "dpo":
            inputs["ref_logps"] = reference_logps(model, inputs)
        grads = per_example_gradients(model, params, example_loss, inputs)
        if kind == "train":
            grads = adam_precondition(grads, moments[0], moments[1], betas)
        pending_index.extend(index)
        pending.append(grads)
        if len(pending_index) >= project_batch:
            flush()
    if pending:
        flush()
    return out


def save_features(path: str | Path, ids: Sequence[str], features: torch.Tensor, subtasks: Sequence[str],
                  skipped: Sequence[str], kind: str, dim: int, seed: int, n_params: int) -> None:
    if len(ids) != features.shape[0] or len(ids) != len(subtasks):
        raise ValueError(f"{path}: {len(ids)} ids, {features.shape[0]} feature rows, {len(subtasks)} subtasks")
    record = {"ids": list(ids), "features": features.to(torch.float16).contiguous(), "subtasks": list(subtasks),
              "skipped": list(skipped), "kind": kind, "dim": dim, "seed": seed, "n_params": n_params}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(record, tmp)


def load_features(path: str | Path) -> dict:
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"gradient features not found: {path}") from None
    missing = {"ids", "features", "subtasks", "skipped", "kind", "dim", "seed", "n_params"} - set(record)
    if missing:
        raise ValueError(f"{path}: not a gradient-feature file (lacks {sorted(missing)})")
    return record


def gather_features(paths: Sequence[str | Path], out: str | Path) -> None:
    """Concatenate shard files in the given (shard) order into one file; shards must agree on their settings."""
    records = [load_features(p) for p in paths]
    if not records:
        raise ValueError("no shard files to gather")
    first = records[0]
    for path, record in zip(paths, records):
        for key in ("kind", "dim", "seed", "n_params"):
            if record[key] != first[key]:
                raise ValueError(f"{path}: {key}={record[key]!r} differs from {paths[0]}: {first[key]!r}")
    ids = [i for r in records for i in r["ids"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate ids across shards {list(map(str, paths))}")
    save_features(out, ids, torch.cat([r["features"] for r in records]),
                  [s for r in records for s in r["subtasks"]], [s for r in records for s in r["skipped"]],
                  first["kind"], first["dim"], first["seed"], first["n_params"])


def load_lora_checkpoint(base_model: str | Path, checkpoint: str | Path, device: str = "cpu",
                         dtype: torch.dtype = torch.float32):
    """(peft model with a trainable adapter, eager attention, eval mode; tokenizer) for gradient features."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.data.tokenize import ensure_chat_template

    for path, what in ((base_model, "base model"), (checkpoint, "warmup checkpoint")):
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{what} directory not found: {path}")
    tokenizer = AutoTokenizer.from_pretrained(base_model)
    ensure_chat_template(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, attn_implementation="eager")
    model = PeftModel.from_pretrained(base, checkpoint, is_trainable=True).to(device)
    model.eval()
    return model, tokenizer
