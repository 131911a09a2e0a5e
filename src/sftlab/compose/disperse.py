"""Disperse a recipe's training pool into K portions, one per sub-model (Disperse-Then-Merge, step 1).

``random`` (the paper's default) deals a seeded shuffle round-robin: the shards are disjoint, cover the pool,
and their sizes differ by at most one. ``kmeans`` clusters response embeddings with scikit-learn's KMeans;
the default embedder is the base model's last hidden state mean-pooled over the response tokens, a
sentence-transformers model when the config names one. Within a shard, ids keep their pool order.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from sftlab.io import atomic_path
from sftlab.progress import progress

log = logging.getLogger(__name__)

DISPERSE_METHODS = ("random", "kmeans")


def _check_k(n: int, k: int) -> None:
    if k < 1:
        raise ValueError(f"the number of shards must be at least 1, got {k}")
    if n < k:
        raise ValueError(f"cannot split {n} examples into {k} non-empty shards")


def random_shards(ids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """K disjoint shards covering ``ids``: a seeded shuffle dealt round-robin (sizes differ by at most one)."""
    _check_k(len(ids), k)
    if len(set(ids)) != len(ids):
        raise ValueError("the pool has duplicate ids")
    order = list(range(len(ids)))
    random.Random(seed).shuffle(order)
    return [[ids[i] for i in sorted(order[shard::k])] for shard in range(k)]


def kmeans_shards(ids: Sequence[str], embeddings: np.ndarray, k: int, seed: int) -> list[list[str]]:
    """K shards by k-means on ``embeddings`` (one row per id), numbered by each cluster's first id in pool order."""
    from sklearn.cluster import KMeans

    _check_k(len(ids), k)
    if len(embeddings) != len(ids):
        raise ValueError(f"{len(embeddings)} embeddings for {len(ids)} ids")
    labels = KMeans(n_clusters=k, random_state=seed, n_init=10).fit_predict(np.asarray(embeddings, dtype=np.float64))
    # KMeans's own label numbers are arbitrary; number the shards canonically
    first_seen = list(dict.fromkeys(labels.tolist()))
    shards: list[list[str]] = [[] for _ in first_seen]
    for example_id, label in zip(ids, labels):
        shards[first_seen.index(label)].append(example_id)
    if len(shards) < k:
        raise ValueError(f"k-means found only {len(shards)} distinct clusters for k={k} (duplicate embeddings?)")
    return shards


def response_text(example: dict) -> str:
    """The assistant turns of a normalised example, joined by blank lines."""
    return "\n\n".join(m["content"] for m in example["messages"] if m["role"] == "assistant")


def response_embeddings(model, tokenizer, examples: Sequence[dict], batch_size: int = 16, max_length: int = 512):
    """(N, hidden) float32 array: the model's last hidden state mean-pooled over each example's response tokens.

    ``model`` is a Hugging Face causal LM or its backbone; only the backbone runs (no vocabulary projection).
    Conversations longer than ``max_length`` keep their last ``max_length`` tokens, where the response is.
    """
    import torch

    from sftlab.data.tokenize import collate, encode_example

    features = []
    for example in examples:
        encoded = encode_example(tokenizer, example["messages"], max_length=10**9)
        if encoded is None:
            raise ValueError(f"example {example.get('id')!r} has no assistant turn to embed")
        kept = {key: value[-max_length:] for key, value in encoded.items()}
        if all(label == -100 for label in kept["labels"]):
            raise ValueError(f"example {example.get('id')!r}: no response token in its last {max_length} tokens")
        features.append(kept)
    backbone = model.base_model
    device = next(backbone.parameters()).device
    rows = []
    backbone.eval()
    with torch.no_grad():
        for start in progress(range(0, len(features), batch_size), "response embeddings",
                              total=math.ceil(len(features) / batch_size)):
            batch = collate(features[start : start + batch_size], pad_token_id=tokenizer.pad_token_id or 0)
            hidden = backbone(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).last_hidden_state.float()
            mask = (batch["labels"] != -100).to(device).unsqueeze(-1).float()
            rows.append(((hidden * mask).sum(1) / mask.sum(1)).cpu())
    return torch.cat(rows).numpy()


def sentence_transformer_embeddings(name: str, examples: Sequence[dict], batch_size: int = 16, device=None):
    """(N, dim) array of a sentence-transformers model's embeddings of each example's response text."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            f"the disperse config names the sentence-transformers embedder {name!r}, but the package "
            "sentence-transformers is not installed; install it or leave the embedder unset to use the base model"
        ) from None
    encoder = SentenceTransformer(name, device=device)
    return np.asarray(encoder.encode([response_text(e) for e in examples], batch_size=batch_size,
                                     show_progress_bar=True))


def write_shards(out_dir: str | Path, shards: Sequence[Sequence[str]]) -> list[Path]:
    """Write ``shard-{k}.ids`` (one id a line) for each shard, each file atomically; returns the paths."""
    paths = []
    for k, shard in enumerate(shards):
        path = Path(out_dir) / f"shard-{k}.ids"
        with atomic_path(path) as tmp:
            tmp.write_text("".join(f"{i}\n" for i in shard))
        paths.append(path)
    return paths


def _first_word(example: dict) -> str:
    words = response_text(example).split()
    return words[0].lower().strip(".,:;!?\"'") if words else ""


def shard_summary(shards: Sequence[Sequence[str]], examples: dict[str, dict] | None = None, top: int = 3) -> str:
    """A readable summary for the log: shard sizes and, given the examples by id, each shard's most frequent
    ``source`` values and first response words (what a k-means cluster is about)."""
    sizes = [len(s) for s in shards]
    lines = [f"{len(shards)} shards, {sum(sizes)} examples, sizes {sizes}"]
    if examples is not None:
        for k, shard in enumerate(shards):
            rows = [examples[i] for i in shard]
            sources = Counter(r.get("source", "") for r in rows).most_common(top)
            words = Counter(_first_word(r) for r in rows).most_common(top)
            lines.append(
                f"shard {k}: {len(shard)} examples; sources "
                + ", ".join(f"{s!r}×{n}" for s, n in sources)
                + "; first words "
                + ", ".join(f"{w!r}×{n}" for w, n in words)
            )
    return "\n".join(lines)
