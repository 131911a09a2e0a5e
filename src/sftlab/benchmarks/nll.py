"""Per-item log-likelihood of reference answers (benchmark type ``nll``): a held-out metric with statistical power.

Exact match on a few dozen items moves in steps of several points and rarely separates two recipes; the
log-likelihood of every clean answer moves with every item, and two recipes' values on the same items can be
compared pairwise. Each item is also scored under the untrained base model, so the same file gives how far a run
moved from its base on these items (MinorSFT's deviation m_θ on held-out answers, DTM's alignment tax on an exam
the runs never trained on).

The base model's log-probs of a benchmark's items are the same for every run: rule base_log_likelihood scores them
once per model × dataset (``base_scores``), and each run's scoring reads them, checking that it encoded the same tokens.

Items: ``heldout`` — the dataset's held-out examples (messages, source); ``exam`` — the correct option of each question
of a multiple-choice exam in the cais/mmlu schema (``data_dir/test.jsonl``: question, subject, choices, answer), as
a one-turn conversation question → correct option.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type

if TYPE_CHECKING:
    import pandas as pd

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


def encode_items(tokenizer, items: Sequence[dict], max_length: int) -> tuple[list[dict], list[dict]]:
    """(items kept, their encodings): items with no answer token within ``max_length`` are left out."""
    from sftlab.data.tokenize import encode_example

    kept, encoded = [], []
    for item in items:
        example = encode_example(tokenizer, item["messages"], max_length)
        if example is not None:
            kept.append(item)
            encoded.append(example)
    if not kept:
        raise ValueError(f"no item has an answer token within max_length {max_length}")
    return kept, encoded


def tokens_digest(example: dict) -> str:
    """What was scored: a hash of an encoded item's input ids and labels."""
    blob = json.dumps([list(map(int, example["input_ids"])), list(map(int, example["labels"]))]).encode()
    return hashlib.sha1(blob).hexdigest()


def base_scores(reference, tokenizer, items: Sequence[dict], max_length: int, batch_size: int) -> pd.DataFrame:
    """``id, ref_logp, n_tokens, tokens_sha1`` of the items under the untrained base model ``reference``: scored
    once per model × dataset × benchmark (rule base_log_likelihood), read by every run's scoring."""
    import pandas as pd

    from sftlab.models.scoring import pad_id, score_examples

    kept, encoded = encode_items(tokenizer, items, max_length)
    base = score_examples(reference, encoded, pad_id(tokenizer), batch_size)
    return pd.DataFrame({"id": [str(i["id"]) for i in kept], "ref_logp": base["logp"], "n_tokens": base["n_tokens"],
                         "tokens_sha1": [tokens_digest(e) for e in encoded]})


def score_nll(model, tokenizer, items: Sequence[dict], base: pd.DataFrame, max_length: int, batch_size: int,
              n_resamples: int, seed: int) -> tuple[dict, list[dict]]:
    """(Scores entry, per-item rows) of ``model`` on ``items``, beside ``base`` (``base_scores`` of the same items
    and tokens). Items with no answer token within ``max_length`` are left out and counted."""
    from sftlab.models.scoring import pad_id, score_examples

    kept, encoded = encode_items(tokenizer, items, max_length)
    ids = [str(i["id"]) for i in kept]
    digests = [tokens_digest(e) for e in encoded]
    if ids != base["id"].astype(str).tolist() or digests != base["tokens_sha1"].tolist():
        raise ValueError("the base model's log-probs were scored on other items or tokens than this run's (another "
                         "tokenizer, max_length or item file): rerun rule base_log_likelihood")
    ours = score_examples(model, encoded, pad_id(tokenizer), batch_size)
    rows = item_rows(ids, [i.get("source", "") for i in kept], ours["logp"], base["ref_logp"].to_numpy(),
                     ours["n_tokens"])
    return {**nll_score(rows, n_resamples, seed), "left_out": len(items) - len(kept)}, rows


@register_benchmark_type("nll")
class LogLikelihood(BenchmarkType):
    """Scored by rule ``log_likelihood``: the model, the items' file and the base model's log-probs of the items,
    scored once by rule ``base_log_likelihood``."""

    scored_by = "log_likelihood"
    base_scored_by = "base_log_likelihood"
    #: the settings the base model's log-probs depend on (not the bootstrap's)
    base_keys = ("items", "data_dir", "limit", "max_length", "batch_size")

    def base_settings(self, bench: dict) -> dict:
        return {k: bench[k] for k in self.base_keys if k in bench}

    def reads_heldout(self, bench):
        return bench["items"] == "heldout"

    def items_file(self, bench: dict, dataset: str) -> str:
        if bench["items"] == "exam":
            return f"{bench['data_dir']}/test.jsonl"
        return f"results/data/{dataset}/heldout.jsonl"

    def evaluate(self, model, tokenizer, bench, inputs):
        """NLL per token over the items (bootstrap interval) and one row per item: log π(y|x) of the model and of the
        base model (``inputs['base']``, the Parquet file of rule base_log_likelihood), and |y|."""
        import pandas as pd

        base = pd.read_parquet(inputs["base"])
        return score_nll(model, tokenizer, benchmark_items(bench, inputs["items"]), base, bench["max_length"],
                         bench["batch_size"], bench["n_resamples"], bench["seed"])
