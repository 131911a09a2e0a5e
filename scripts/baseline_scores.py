"""Score tables of the targeted baselines against a validation set (see ``sftlab.selection.baselines``).

lexical:         bm25 (BM25 of each pool example per validation item, LESS's aggregation) or dsir (log importance
                 weights of hashed n-grams), on the CPU.
pool-features:   the pool's final-layer hidden states pooled at the last token (rds) or by weighted mean (rds_plus),
                 a forward pass of the model given; one file serves every validation set (Ivison et al.'s index).
representations: rds (last-token cosines, LESS's aggregation) or rds_plus (weighted-mean cosines to each validation
                 item) of the pool's features against the validation items' (a forward pass of those only).
"""

import argparse
import logging
import time

import numpy as np
import pandas as pd

from sftlab.io import read_jsonl, write_parquet
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals
from sftlab.selection import selectors_prepared_by
from sftlab.selection.baselines import score_table
from sftlab.selection.gradients import row_subtask, take_shots

log = logging.getLogger("baseline_scores")

#: the selectors each kind of score table is for: those whose ranking its rule prepares (Selector.cost_stages)
METHODS = {"lexical": selectors_prepared_by("lexical_scores"),
           "representations": selectors_prepared_by("representation_scores")}


def lexical(args, pool: list[dict], val: list[dict]) -> pd.DataFrame:
    from sftlab.selection.lexical import bm25_scores, dsir_log_weights, example_text, ngram_matrix, word_count

    pool_texts, val_texts = [example_text(r) for r in pool], [example_text(r) for r in val]
    ids = [str(r["id"]) for r in pool]
    if args.method == "bm25":
        return score_table(ids, bm25_scores(pool_texts, val_texts), [row_subtask(r) for r in val])
    raw, target = ngram_matrix(pool_texts), ngram_matrix(val_texts)
    weights, _ = dsir_log_weights(raw, target)
    short = np.array([word_count(c) < args.min_words for c in np.asarray(raw.sum(axis=1)).ravel()])
    if short.any():
        log.info("%d of %d examples have fewer than %d words: never selected", short.sum(), len(ids), args.min_words)
    return pd.DataFrame({"id": ids, "score": np.where(short, np.nan, weights)})


def _encode_and_pool(args, rows: list[dict], pooling: str, what: str):
    """(model's pooled hidden states, encoded items, skipped ids) of ``rows``."""
    import torch

    from sftlab.models.scoring import load_for_scoring, pad_id
    from sftlab.selection.gradients import encode_rows
    from sftlab.selection.representations import hidden_state_features

    model, tokenizer = load_for_scoring(args.model, dtype=getattr(torch, args.dtype) if args.dtype else None)
    items, skipped = encode_rows(tokenizer, rows, "ntp", args.max_length)
    start = time.perf_counter()
    features = hidden_state_features(model, items, pooling, pad_id(tokenizer), args.max_tokens)
    tokens = sum(len(i["sequences"][0]["input_ids"]) for i in items)
    log.info("%s: %d sequences, %d tokens, %s pooling, %.1f s (%d skipped: no answer token within %d)", what,
             len(items), tokens, pooling, time.perf_counter() - start, len(skipped), args.max_length)
    return features, items, skipped


def pool_features(args) -> None:
    """The pool's pooled hidden states (fp16), shared by every validation set's rds / rds_plus selection."""
    import torch

    from sftlab.io import atomic_path

    features, items, skipped = _encode_and_pool(args, read_jsonl(args.train), args.pooling, "pool")
    record = {"ids": [i["id"] for i in items], "skipped": skipped, "features": features.half(),
              "pooling": args.pooling, "max_length": args.max_length, "model": args.model}
    with atomic_path(args.out, suffix=".pt") as tmp:
        torch.save(record, tmp)


def representations(args, val: list[dict]) -> pd.DataFrame:
    import torch

    from sftlab.selection.representations import cosine_matrix, similarity_columns

    pooling = "last" if args.method == "rds" else "weighted_mean"
    pool = torch.load(args.pool_features, weights_only=True)
    for key, want in (("pooling", pooling), ("max_length", args.max_length)):
        if pool[key] != want:
            raise SystemExit(f"{args.pool_features}: {key} {pool[key]!r}, but {args.method} needs {want!r}")
    features, items, skipped = _encode_and_pool(args, val, pooling, f"{args.method} validation")
    if skipped:
        raise SystemExit(f"{args.validation}: validation items {skipped[:3]} keep no answer token within "
                         f"max_length {args.max_length}")
    cos = cosine_matrix(pool["features"], features).numpy()
    if args.method == "rds":
        table = score_table(pool["ids"], cos, [i["subtask"] for i in items])
    else:
        table = pd.DataFrame(cos.astype(np.float32), columns=similarity_columns(cos.shape[1])).assign(id=pool["ids"])
    # examples without features (no answer token left) rank last: NaN scores
    return pd.concat([table, pd.DataFrame({"id": pool["skipped"]})], ignore_index=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["lexical", "pool-features", "representations"])
    ap.add_argument("--method", choices=[m for methods in METHODS.values() for m in methods])
    ap.add_argument("--train", help="normalised training pool (JSONL): lexical, pool-features")
    ap.add_argument("--pool-features", help="representations: the pool's hidden states (pool-features' output)")
    ap.add_argument("--pooling", choices=["last", "weighted_mean"],
                    help="pool-features: rds last, rds_plus weighted_mean")
    ap.add_argument("--validation", help="validation set (JSONL)")
    ap.add_argument("--shots", type=int, help="validation items kept per subtask (first in file order)")
    ap.add_argument("--min-words", type=int, default=0, help="dsir: examples of fewer words are never selected")
    ap.add_argument("--model", help="representations: HF directory of the model whose hidden states are compared")
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--max-tokens", type=int, default=4096, help="padded tokens per batched forward")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                    help="model dtype (default: bf16 on a GPU that has it, else float32)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    flush_denormals()
    setup_logging()
    needs = {"lexical": ("method", "train", "validation", "shots"), "pool-features": ("model", "train", "pooling"),
             "representations": ("method", "model", "pool_features", "validation", "shots")}[args.kind]
    missing = [f"--{k.replace('_', '-')}" for k in needs if getattr(args, k) is None]
    if missing:
        raise SystemExit(f"{args.kind} needs {', '.join(missing)}")
    expected = METHODS.get(args.kind)
    if expected and args.method not in expected:
        raise SystemExit(f"{args.kind} scores are for {expected}, not {args.method!r}")
    start = time.perf_counter()
    if args.kind == "pool-features":
        pool_features(args)
        log.info("pool features (%s) -> %s: %.1f s", args.pooling, args.out, time.perf_counter() - start)
        return
    val = take_shots(read_jsonl(args.validation), args.shots)
    table = lexical(args, read_jsonl(args.train), val) if args.kind == "lexical" else representations(args, val)
    write_parquet(args.out, table)
    log.info("%s scores of %d pool examples against %d validation items: %.1f s -> %s", args.method, len(table),
             len(val), time.perf_counter() - start, args.out)


if __name__ == "__main__":
    main()
