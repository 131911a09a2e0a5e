"""Score tables of the targeted baselines against a validation set (see ``sftlab.selection.baselines``).

lexical:         bm25 (BM25 of each pool example per validation item, LESS's aggregation) or dsir (log importance
                 weights of hashed n-grams), on the CPU.
representations: rds (last-token final-layer cosines, LESS's aggregation) or rds_plus (weighted-mean final-layer
                 cosines to each validation item), a forward pass of the model given.
"""

import argparse
import logging
import time

import numpy as np
import pandas as pd

from sftlab.io import read_jsonl, write_parquet
from sftlab.logs import setup_logging
from sftlab.numerics import flush_denormals
from sftlab.selection.baselines import score_table
from sftlab.selection.gradients import row_subtask, take_shots

log = logging.getLogger("baseline_scores")


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


def representations(args, pool: list[dict], val: list[dict]) -> pd.DataFrame:
    import torch

    from sftlab.models.scoring import load_for_scoring, pad_id
    from sftlab.selection.gradients import encode_rows
    from sftlab.selection.representations import cosine_matrix, hidden_state_features, similarity_columns

    model, tokenizer = load_for_scoring(args.model, dtype=getattr(torch, args.dtype) if args.dtype else None)
    pooling = "last" if args.method == "rds" else "weighted_mean"
    train_items, skipped = encode_rows(tokenizer, pool, "ntp", args.max_length)
    val_items, val_skipped = encode_rows(tokenizer, val, "ntp", args.max_length)
    if val_skipped:
        raise SystemExit(f"{args.validation}: validation items {val_skipped[:3]} keep no answer token within "
                         f"max_length {args.max_length}")
    start = time.perf_counter()
    train = hidden_state_features(model, train_items, pooling, pad_id(tokenizer), args.max_tokens)
    features = hidden_state_features(model, val_items, pooling, pad_id(tokenizer), args.max_tokens)
    tokens = sum(len(i["sequences"][0]["input_ids"]) for i in train_items + val_items)
    log.info("%s: %d pool and %d validation sequences, %d tokens, %s pooling, %.1f s (%d skipped: no answer token "
             "within %d)", args.method, len(train_items), len(val_items), tokens, pooling,
             time.perf_counter() - start, len(skipped), args.max_length)
    cos = cosine_matrix(train, features).numpy()
    ids = [i["id"] for i in train_items]
    if args.method == "rds":
        table = score_table(ids, cos, [i["subtask"] for i in val_items])
    else:
        table = pd.DataFrame(cos.astype(np.float32), columns=similarity_columns(cos.shape[1])).assign(id=ids)
    # examples without features (no answer token left) rank last: NaN scores
    return pd.concat([table, pd.DataFrame({"id": skipped})], ignore_index=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["lexical", "representations"])
    ap.add_argument("--method", required=True, choices=["bm25", "dsir", "rds", "rds_plus"])
    ap.add_argument("--train", required=True, help="normalised training pool (JSONL)")
    ap.add_argument("--validation", required=True, help="validation set (JSONL)")
    ap.add_argument("--shots", type=int, required=True, help="validation items kept per subtask (first in file order)")
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
    expected = {"lexical": ("bm25", "dsir"), "representations": ("rds", "rds_plus")}[args.kind]
    if args.method not in expected:
        raise SystemExit(f"{args.kind} scores are for {expected}, not {args.method!r}")
    if args.kind == "representations" and not args.model:
        raise SystemExit("representations need --model")
    pool = read_jsonl(args.train)
    val = take_shots(read_jsonl(args.validation), args.shots)
    start = time.perf_counter()
    table = (lexical if args.kind == "lexical" else representations)(args, pool, val)
    write_parquet(args.out, table)
    log.info("%s scores of %d pool examples against %d validation items: %.1f s -> %s", args.method, len(pool),
             len(val), time.perf_counter() - start, args.out)


if __name__ == "__main__":
    main()
