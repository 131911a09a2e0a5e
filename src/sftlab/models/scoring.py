"""Batched per-example scores of a causal LM over encoded examples.

Shared by the confidence rule (perplexities per checkpoint), the reference log-prob rule (log πref(y|x)),
the deviation metric (m_θ during training) and the t-SNE figures (mean-pooled response hidden states).
An encoded example is ``{"input_ids": [...], "labels": [...]}`` from ``sftlab.data.tokenize.encode_example``.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from sftlab.progress import progress
from sftlab.data.tokenize import collate, encode_example, ensure_chat_template
from sftlab.io import read_jsonl
from sftlab.objectives.base import model_inputs, sequence_logps
from sftlab.objectives.sftmix import forward_with_final_hidden


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_for_scoring(path: str | Path, device: str | None = None, dtype: torch.dtype | None = None):
    """(model, tokenizer) from an HF directory, in eval mode: ``dtype``, else bf16 on a GPU that supports it, else
    float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load a causal LM from {path}: {exc}") from exc
    ensure_chat_template(tokenizer)
    return model.to(device).eval(), tokenizer


def encode_jsonl(tokenizer, path: str | Path, max_length: int, keep: set[str] | None = None):
    """(ids, encoded examples, ids left out) of a normalised JSONL file, optionally only the ids in ``keep``.

    Examples with no response token left after truncation to ``max_length`` are left out, as in training.
    """
    ids, examples, dropped = [], [], []
    for row in read_jsonl(path):
        if "id" not in row or "messages" not in row:
            raise KeyError(f"{path}: every example needs 'id' and 'messages'")
        if keep is not None and str(row["id"]) not in keep:
            continue
        encoded = encode_example(tokenizer, row["messages"], max_length)
        if encoded is None:
            dropped.append(str(row["id"]))
        else:
            ids.append(str(row["id"]))
            examples.append(encoded)
    return ids, examples, dropped


def pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("tokenizer has neither a pad nor an end-of-sequence token")
    return pad


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module):
    """No dropout and no autograd while scoring; the caller's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batches(
    examples: Sequence[dict], pad_token_id: int, batch_size: int, device: torch.device
) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(positions in ``examples``, collated batch) in order of length, so that little padding is computed."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.argsort([len(e["input_ids"]) for e in examples], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = collate([examples[i] for i in rows], pad_token_id)
        yield rows, {k: v.to(device) for k, v in batch.items()}


def score_examples(
    model: torch.nn.Module,
    examples: Sequence[dict],
    pad_token_id: int,
    batch_size: int = 8,
    pooled_hidden: bool = False,
    autocast: torch.dtype | None = None,
) -> dict[str, np.ndarray]:
    """Per-example ``logp`` = log π(y|x) (sum over response tokens, float64) and ``n_tokens`` = |y|,
    in the order of ``examples``; with ``pooled_hidden`` also ``hidden`` (N, H): the LM head's input
    averaged over the response tokens' own positions (labels ≠ −100). ``autocast``: run the forward under
    ``torch.autocast`` with that dtype (as training does, see ``sftlab.training.forward_path``)."""
    n = len(examples)
    logp = np.zeros(n, dtype=np.float64)
    n_tokens = np.zeros(n, dtype=np.int64)
    hidden = None
    device = model_device(model)
    with _eval_mode(model):
        batches = _batches(examples, pad_token_id, batch_size, device)
        for rows, batch in progress(batches, "log-probabilities", total=math.ceil(n / batch_size)):
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                logits, states = forward_with_final_hidden(model, batch)
            seq_logp, lengths = sequence_logps(logits, batch["labels"])
            logp[rows] = seq_logp.double().cpu().numpy()
            n_tokens[rows] = lengths.cpu().numpy()
            if pooled_hidden:
                mask = (batch["labels"] != -100).unsqueeze(-1).to(torch.float32)
                pooled = (states.float() * mask).sum(1) / mask.sum(1).clamp(min=1)
                if hidden is None:
                    hidden = np.zeros((n, pooled.shape[-1]), dtype=np.float32)
                hidden[rows] = pooled.cpu().numpy()
    if np.any(n_tokens == 0):
        raise ValueError(f"{int(np.sum(n_tokens == 0))} example(s) have no response token to score")
    scores = {"logp": logp, "n_tokens": n_tokens}
    if pooled_hidden:
        scores["hidden"] = hidden
    return scores


def perplexities(model, examples: Sequence[dict], pad_token_id: int, batch_size: int = 8) -> np.ndarray:
    """Perp(x, y) = exp(mean over response tokens of −log p(y_t | x, y_<t)), one per example."""
    scores = score_examples(model, examples, pad_token_id, batch_size)
    return np.exp(-scores["logp"] / scores["n_tokens"])


def length_normalised_reward(logits: torch.Tensor, labels: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per example (log πθ(y|x) − log πref(y|x)) / |y|, in float64: the terms m_θ averages."""
    logp, lengths = sequence_logps(logits, labels)
    return (logp.double() - ref_logp.double()) / lengths.double()


def deviation(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """m_θ = mean over the examples of (log πθ(y|x) − ref_logp) / |y|.

    ``batches`` are collated held-out batches carrying the ``ref_logp`` column (from ref_logprobs.parquet),
    e.g. ``collate(features, pad_id, columns=("ref_logp",))``; they are moved to the model's device.
    """
    device = model_device(model)
    total, count = 0.0, 0
    with _eval_mode(model):
        for batch in batches:
            if "ref_logp" not in batch:
                raise KeyError("deviation needs batches with a 'ref_logp' column (join ref_logprobs.parquet by id)")
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**model_inputs(batch)).logits
            reward = length_normalised_reward(logits, batch["labels"], batch["ref_logp"])
            total += float(reward.sum())
            count += len(reward)
    if count == 0:
        raise ValueError("deviation needs at least one held-out example")
    return total / count
