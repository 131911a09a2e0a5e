"""The LESS paper's lexical baselines, BM25 and DSIR: scores of every pool example against a validation set's text.

An example's text is its conversation's contents, one message a line (a preference pair: its prompt and chosen
answer, as LESS uses it). Both write a score table (``sftlab.selection.scored``): ``id, score, score_{subtask}...``.

BM25 (Robertson & Zaragoza 2009) through the ``bm25s`` package: the pool is the corpus, each validation item a
query (bm25s' defaults: Lucene's BM25 with k1 = 1.5, b = 0.75; lower-cased words of two or more characters,
English stop words dropped). An example's score is the LESS aggregation of its (N, M) query scores: the mean over
each subtask's items, the max over subtasks.

DSIR (Xie et al. 2023; the ``data-selection`` package, p-lambda/dsir, ``HashedNgramDSIR``): an example's features
are the counts of its lower-cased WordPunct unigrams and bigrams hashed (sha256) into ``buckets`` buckets; the
target (validation text) and raw (pool) bag-of-n-gram distributions p_t, p_r give each example the log importance
weight Σ_b count_b · (log(p_t[b] + 1e-8) − log(p_r[b] + 1e-8)); the ``dsir`` selector resamples by Gumbel top-k
(sampling without replacement ∝ the weights). The package's ``min_example_length`` filter (100 words, for web
documents) is the ``min_words`` setting here, off by default: most instruction examples are shorter.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import numpy as np


def example_text(row: dict) -> str:
    """The contents of an example's messages (a pair: prompt and chosen answer), one message a line."""
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row and "chosen" in row:
        messages = list(row["prompt"]) + [{"role": "assistant", "content": row["chosen"]}]
    else:
        raise KeyError(f"example {row.get('id', '?')!r} has neither 'messages' nor 'prompt' and 'chosen'")
    return "\n".join(str(m["content"]) for m in messages)


# ----------------------------------------------------------------------------- BM25


def bm25_scores(corpus: Sequence[str], queries: Sequence[str], k1: float = 1.5, b: float = 0.75) -> np.ndarray:
    """(N, M) BM25 score of each corpus document for each query (bm25s, Lucene variant)."""
    import bm25s  # noqa: PLC0415  (only the jobs that score need it, not planning)

    if not corpus or not queries:
        raise ValueError(f"BM25 needs documents and queries, got {len(corpus)} and {len(queries)}")
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index(bm25s.tokenize(list(corpus), stopwords="en", show_progress=False), show_progress=False)
    query_tokens = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    return np.stack([retriever.get_scores(q) for q in query_tokens], axis=1).astype(np.float64)


# ----------------------------------------------------------------------------- DSIR


def _words(text: str) -> list[str]:
    from nltk.tokenize import WordPunctTokenizer  # noqa: PLC0415

    return WordPunctTokenizer().tokenize(text.lower())


@functools.lru_cache(maxsize=1 << 20)
def hash_bucket(gram: str, buckets: int) -> int:
    return int(hashlib.sha256(gram.encode("utf-8")).hexdigest(), 16) % buckets


def ngram_counts(text: str, buckets: int = 10000, n: int = 2) -> np.ndarray:
    """Hashed counts of the text's lower-cased WordPunct 1..n-grams (n-grams joined by a space)."""
    words = _words(text)
    counts = np.zeros(buckets, dtype=np.int64)
    for size in range(1, n + 1):
        for start in range(len(words) - size + 1):
            counts[hash_bucket(" ".join(words[start:start + size]), buckets)] += 1
    return counts


def ngram_matrix(texts: Sequence[str], buckets: int = 10000, n: int = 2):
    """(len(texts), buckets) sparse (CSR) hashed n-gram counts: a pool of 270k examples would take 22 GB dense."""
    from scipy import sparse

    rows = []
    for text in texts:
        counts = ngram_counts(text, buckets, n)
        rows.append(sparse.csr_matrix(counts))
    return sparse.vstack(rows, format="csr") if rows else sparse.csr_matrix((0, buckets), dtype=np.int64)


def word_count(counts: np.ndarray, n: int = 2) -> int:
    """Words of a text from its 1..n-gram counts (the package's per-example length)."""
    return int((counts.sum() + n * (n - 1) / 2) // n)


def dsir_log_weights(raw: np.ndarray, target: np.ndarray, smoothing: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(log importance weight of each raw example, log p_target − log p_raw per bucket) from (N, B) raw and (M, B)
    target n-gram counts (dense or scipy sparse); ``smoothing`` is a pseudo-count added to every target bucket."""
    p_raw = np.asarray(raw.sum(axis=0), dtype=np.float64).ravel()
    p_raw /= p_raw.sum()
    p_target = np.asarray(target.sum(axis=0), dtype=np.float64).ravel() + smoothing
    p_target /= p_target.sum()
    log_diff = np.log(p_target + 1e-8) - np.log(p_raw + 1e-8)
    return np.asarray(raw @ log_diff, dtype=np.float64).ravel(), log_diff


def gumbel_top_k_order(log_weights: Sequence[float], seed: int) -> np.ndarray:
    """Indices by log weight + Gumbel(0, 1) noise, highest first: every prefix of k is a sample of k without
    replacement with probabilities ∝ the weights (DSIR's resampling); ties by index. NaN (filtered) last."""
    w = np.asarray(log_weights, dtype=np.float64)
    noisy = w + np.random.default_rng(seed).gumbel(size=w.shape)
    noisy = np.where(np.isnan(noisy), -np.inf, noisy)
    return np.lexsort((np.arange(len(w)), -noisy))
