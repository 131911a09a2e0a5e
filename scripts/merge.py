"""Merge a composed recipe's member runs (DTM sub-models, seed-soup members) into one model directory (mergekit;
see sftlab.compose.merge), and write the merged run's training log (the members' step-wise mean)."""

import argparse
import json
import logging

import pandas as pd

from sftlab.compose.members import mean_train_log
from sftlab.compose.merge import MERGE_METHODS, MERGE_SPACES, merge, merge_grouped
from sftlab.io import atomic_path, read_ids, read_jsonl
from sftlab.logs import setup_logging


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", nargs="+", required=True,
                    help="sub-model directories (merge space delta) or their peft adapter directories (adapter)")
    ap.add_argument("--out", required=True, help="merged model directory")
    ap.add_argument("--method", choices=sorted(MERGE_METHODS), default="average")
    ap.add_argument("--merge-space", choices=MERGE_SPACES, default="delta")
    ap.add_argument("--base-model", help="base model directory (needed by all methods but average, and by adapter)")
    ap.add_argument("--params", default="{}", help='method parameters as JSON, e.g. {"density": 0.5, "lambda": 1.0}')
    ap.add_argument("--seed", type=int, default=0, help="seed of DARE's random drops")
    ap.add_argument("--device", default="cpu", help="where the arithmetic runs: cpu, cuda or auto")
    ap.add_argument("--fisher-examples", help="fisher: the training pool (JSONL) the members' ids refer to")
    ap.add_argument("--fisher-ids", nargs="*", default=[], help="fisher: each member's training ids, in --inputs order")
    ap.add_argument("--max-length", type=int, default=1024, help="fisher: token limit of an example, as in training")
    ap.add_argument("--groups", help="JSON list of group sizes: average each group of consecutive inputs first, "
                    "then merge the group averages")
    ap.add_argument("--member-logs", nargs="*", default=[], help="the member runs' train_log.csv files")
    ap.add_argument("--train-log", help="the merged run's train_log.csv: the step-wise mean of --member-logs")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    if args.train_log and not args.member_logs:
        ap.error("--train-log needs --member-logs")
    member_examples = None
    if args.method == "fisher":
        if not args.fisher_examples or len(args.fisher_ids) != len(args.inputs):
            ap.error("--method fisher needs --fisher-examples and one --fisher-ids file per input")
        pool = {e["id"]: e for e in read_jsonl(args.fisher_examples)}
        member_examples = [[pool[i] for i in read_ids(path)] for path in args.fisher_ids]
    if args.groups:
        merge_grouped(args.inputs, json.loads(args.groups), args.out, args.method, args.merge_space, args.base_model,
                      json.loads(args.params), seed=args.seed, device=args.device)
    else:
        merge(args.inputs, args.out, args.method, args.merge_space, args.base_model, json.loads(args.params),
              seed=args.seed, device=args.device, member_examples=member_examples, max_length=args.max_length)
    if args.train_log:
        with atomic_path(args.train_log, suffix=".csv") as tmp:
            mean_train_log([pd.read_csv(p) for p in args.member_logs]).to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
