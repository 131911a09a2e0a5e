"""Per-item log-likelihood of reference answers (benchmark type ``nll``): a held-out metric with statistical power.

Exact match on a few dozen items moves in steps of several points and rarely separates two recipes; the
log-likelihood of every clean answer moves with every item, and two recipes' values on the same items can be
compared pairwise. Each item is also scored under the untrained base model, so the same file gives how far a run
moved from its base on these items (MinorSFT's deviation m_θ on held-out answers, DTM's alignment tax on an exam
the runs never trained on).

Items: ``heldout`` — the dataset's held-out examples (messages, source); ``exam`` — the correct option of each question
of a multiple-choice exam in the cais/mmlu schema (``data_dir/test.jsonl``: question, subject, choices, answer), as
a one-turn conversation question → correct option.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import read_jsonl

METRIC = "nll_per_token"


def exam_items(data_dir: str | Path) -> list[dict]:
    """The questions of ``data_dir/test.jsonl`` as normalised examples whose answer is the correct option."""
    path = Path(data_dir) / "test.jsonl"
    items = []
    for i, row in enumerate(read_jsonl(path)):
        missing = {"question", "choices", "answer"} - set(row)
        if missing:
            raise KeyError(f"{path}:{i + 1}: exam item lacks {sorted(missing)}")
        items.append({"id": f"exam-{i:04d}", "source": f"exam/{row.get('subject', 'exam')}",
                      "messages": [{"role": "user", "content": row["question"]},
                                   {"role": "assistant", "content": str(row["choices"][int(row["answer"])])}]})
    return items


def benchmark_items(cfg: dict, path: str | Path) -> list[dict]:
    """The items a ``nll`` benchmark scores from ``path`` (held-out JSONL, or the exam's test.jsonl), ``limit`` applied."""
    items = exam_items(Path(path).parent) if cfg["items"] == "exam" else read_jsonl(path)
    return items[: cfg.get("limit")]


def item_rows(ids: Sequence[str], sources: Sequence[str], logp: np.ndarray, ref_logp: np.ndarray,
              n_tokens: np.ndarray) -> list[dict]:
    """One record per item: log π(y|x) of the run and of the base (sums over the answer's tokens) and |y|."""
    return [{"id": i, "source": s, "logp": float(lp), "ref_logp": float(rp), "n_tokens": int(n)}
            for i, s, lp, rp, n in zip(ids, sources, logp, ref_logp, n_tokens)]


def nll_score(rows: Sequence[dict], n_resamples: int, seed: int) -> dict:
    """Mean over items of the answer's NLL per token, −log π(y|x)/|y|, with a bootstrap interval over items."""
    return {"metric": METRIC, **mean_with_ci([-r["logp"] / r["n_tokens"] for r in rows], n_resamples=n_resamples,
                                             seed=seed)}


def score_nll(model, reference, tokenizer, items: Sequence[dict], max_length: int, batch_size: int,
              n_resamples: int, seed: int) -> tuple[dict, list[dict]]:
    """(Scores entry, per-item rows) of ``model`` on ``items``; ``reference`` (the base model) scores the same
    tokens. Items with no answer token within ``max_length`` are left out and counted."""
    from sftlab.data.tokenize import encode_example
    from sftlab.models.scoring import pad_id, score_examples

    kept, encoded = [], []
    for item in items:
        example = encode_example(tokenizer, item["messages"], max_length)
        if example is not None:
            kept.append(item)
            encoded.append(example)
    if not kept:
        raise ValueError(f"no item has an answer token within max_length {max_length}")
    ours = score_examples(model, encoded, pad_id(tokenizer), batch_size)
    base = score_examples(reference, encoded, pad_id(tokenizer), batch_size)
    rows = item_rows([str(i["id"]) for i in kept], [i.get("source", "") for i in kept], ours["logp"], base["logp"],
                     ours["n_tokens"])
    return {**nll_score(rows, n_resamples, seed), "left_out": len(items) - len(kept)}, rows
