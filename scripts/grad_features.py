"""LESS/ROSE gradient features of one warmup checkpoint.

compute: projected per-example gradient features of shard s of S of a JSONL file
         (--kind train: Adam-preconditioned, pool examples; ntp: validation SFT examples; dpo: validation pairs).
gather:  concatenate shard files, in the order given, into one file (pool order when given shard 0..S-1).
File format: see ``sftlab.selection.gradients``.
"""

import argparse
import logging
import time

import torch

from sftlab.io import read_jsonl
from sftlab.logs import setup_logging
from sftlab.selection.gradients import (
    FEATURE_KINDS,
    encode_rows,
    gather_features,
    gradient_features,
    load_lora_checkpoint,
    lora_parameters,
    module_moments,
    save_features,
    shard_slice,
    take_shots,
)
from sftlab.selection.projection import PROJECTIONS, build_projection
from sftlab.selection.warmup import load_epoch_info, load_moments
from sftlab.numerics import flush_denormals

log = logging.getLogger("grad_features")


def compute(args) -> None:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    rows = read_jsonl(args.data)
    if args.kind != "train":
        rows = take_shots(rows, args.shots)
    elif args.shots is not None:
        raise SystemExit("--shots applies to validation features (--kind ntp or dpo) only")
    rows = rows[shard_slice(len(rows), args.shard, args.shards)]
    model, tokenizer = load_lora_checkpoint(args.base_model, args.checkpoint, device, getattr(torch, args.dtype))
    try:
        items, skipped = encode_rows(tokenizer, rows, args.kind, args.max_length)
    except KeyError as exc:
        raise SystemExit(f"{args.data}: {exc.args[0]}") from None
    params = lora_parameters(model)
    n_params = sum(p.numel() for p in params.values())
    moments, betas = None, (0.9, 0.999)
    if args.kind == "train":
        moments = module_moments(params, load_moments(args.checkpoint), args.checkpoint)
        betas = tuple(load_epoch_info(args.checkpoint)["betas"])
    projection = build_projection(args.projection, args.dim, args.seed, device, cache_bytes=args.cache_mb * 2**20)
    start = time.perf_counter()
    try:
        features = gradient_features(model, items, args.kind, tokenizer.pad_token_id, projection, args.max_tokens,
                                     moments, betas, args.beta)
    except ValueError as exc:
        raise SystemExit(f"{args.data}: {exc}") from None
    seconds = time.perf_counter() - start
    save_features(args.out, [i["id"] for i in items], features, [i["subtask"] for i in items], skipped,
                  args.kind, projection=args.projection, dim=args.dim, seed=args.seed, n_params=n_params)
    tokens = sum(len(s["input_ids"]) for i in items for s in i["sequences"])
    log.info("%s shard %d/%d of %s at %s: %d items, %d tokens (%d skipped: no response token within %d), "
             "%d LoRA parameters -> %s dim %d, %.1f s (%.2f items/s, %.0f tokens/s)", args.kind, args.shard,
             args.shards, args.data, args.checkpoint, len(items), tokens, len(skipped), args.max_length, n_params,
             args.projection, args.dim, seconds, len(items) / max(seconds, 1e-9), tokens / max(seconds, 1e-9))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", help="log file (default: stderr)")
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compute", help="features of one shard")
    c.add_argument("--base-model", required=True, help="HF directory of the base model")
    c.add_argument("--checkpoint", required=True, help="warmup checkpoint directory (adapter, Adam moments, lr)")
    c.add_argument("--data", required=True, help="JSONL: normalised examples (train, ntp) or preference pairs (dpo)")
    c.add_argument("--kind", required=True, choices=FEATURE_KINDS)
    c.add_argument("--out", required=True, help="feature file to write (.pt)")
    c.add_argument("--shard", type=int, default=0)
    c.add_argument("--shards", type=int, default=1)
    c.add_argument("--shots", type=int, help="validation items kept per subtask (first in file order); default all")
    c.add_argument("--dim", type=int, default=8192, help="projection dimension")
    c.add_argument("--seed", type=int, default=0, help="projection seed (must match across train and validation)")
    c.add_argument("--beta", type=float, default=0.1, help="DPO temperature (--kind dpo)")
    c.add_argument("--projection", default="sjlt", choices=sorted(PROJECTIONS),
                   help="random projection (must match across train and validation)")
    c.add_argument("--max-tokens", type=int, default=4096,
                   help="padded tokens per batched backward (bounds memory); a longer item is refused")
    c.add_argument("--max-length", type=int, default=1024)
    c.add_argument("--cache-mb", type=int, default=1024, help="device memory for caching generated projection rows")
    c.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    c.add_argument("--device", default="auto", help="auto, cpu or cuda")

    g = sub.add_parser("gather", help="concatenate shard files in the order given")
    g.add_argument("--inputs", nargs="+", required=True)
    g.add_argument("--out", required=True)

    args = ap.parse_args(argv)
    flush_denormals()
    setup_logging(args.log)
    if args.command == "compute":
        compute(args)
    else:
        gather_features(args.inputs, args.out)
        log.info("gathered %d shard files into %s", len(args.inputs), args.out)


if __name__ == "__main__":
    main()
