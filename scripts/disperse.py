"""Disperse a recipe's pool into K shards (Disperse-Then-Merge): writes {out-dir}/shard-{k}.ids, k = 0..K-1."""

import argparse
import logging

from sftlab.compose.disperse import (
    DISPERSE_METHODS,
    kmeans_shards,
    random_shards,
    response_embeddings,
    sentence_transformer_embeddings,
    shard_summary,
    write_shards,
)
from sftlab.io import atomic_path, read_ids, read_jsonl
from sftlab.logs import setup_logging

log = logging.getLogger("disperse")


def embed(args, examples):
    if args.embedder:
        return sentence_transformer_embeddings(args.embedder, examples, args.batch_size, device=args.device)
    if not args.base_model:
        raise SystemExit("--method kmeans needs --base-model (the default embedder) or --embedder")
    import torch
    from transformers import AutoModel, AutoTokenizer

    from sftlab.data.tokenize import ensure_chat_template

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tokenizer = AutoTokenizer.from_pretrained(args.base_model)
    ensure_chat_template(tokenizer)
    # the backbone alone: embeddings need no vocabulary projection
    model = AutoModel.from_pretrained(args.base_model).to(device)
    return response_embeddings(model, tokenizer, examples, args.batch_size, args.max_length)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--ids", required=True, help="the pool: the recipe's selected ids, one a line")
    ap.add_argument("--examples", help="normalised training pool (JSONL); needed by kmeans, adds cluster summaries")
    ap.add_argument("--k", type=int, default=4, help="number of shards")
    ap.add_argument("--method", choices=DISPERSE_METHODS, default="random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--base-model", help="model directory whose response embeddings k-means clusters")
    ap.add_argument("--embedder", help="a sentence-transformers model (name or directory) to embed with instead")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)
    setup_logging(args.log)

    ids = read_ids(args.ids)
    examples = None
    if args.examples:
        by_id = {e["id"]: e for e in read_jsonl(args.examples)}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise SystemExit(f"{args.ids}: {len(missing)} ids not in {args.examples}, e.g. {missing[:3]}")
        examples = {i: by_id[i] for i in ids}
    if args.method == "random":
        shards = random_shards(ids, args.k, args.seed)
    else:
        if examples is None:
            raise SystemExit("--method kmeans needs --examples (the responses to embed)")
        shards = kmeans_shards(ids, embed(args, [examples[i] for i in ids]), args.k, args.seed)
    # the shard files appear together or not at all (the workflow treats the directory as one output)
    with atomic_path(args.out_dir) as tmp:
        write_shards(tmp, shards)
    log.info("%s split of %s (seed %d):\n%s", args.method, args.ids, args.seed, shard_summary(shards, examples))


if __name__ == "__main__":
    main()
