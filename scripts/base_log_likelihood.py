"""Log-probs of a log-likelihood benchmark's items under the untrained base model, once for every run that is scored
on them → Parquet ``id, ref_logp, n_tokens, tokens_sha1`` (sftlab.benchmarks.nll.base_scores)."""

import argparse
import json
import logging

from sftlab.benchmarks.nll import base_scores, benchmark_items
from sftlab.io import write_parquet
from sftlab.logs import setup_logging
from sftlab.models.scoring import load_for_scoring
from sftlab.numerics import flush_denormals

log = logging.getLogger("base_log_likelihood")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True, help="HF directory of the base model")
    ap.add_argument("--benchmark-config", required=True, help="the benchmark's scoring settings as JSON")
    ap.add_argument("--items", required=True, help="the items' file (held-out JSONL, or the exam's test.jsonl)")
    ap.add_argument("--out", required=True, help="output Parquet file")
    args = ap.parse_args()
    flush_denormals()
    setup_logging()
    cfg = json.loads(args.benchmark_config)
    # the device and dtype rule evaluate.py loads the runs with: their log-probs are compared item by item
    model, tokenizer = load_for_scoring(args.model_dir)
    table = base_scores(model, tokenizer, benchmark_items(cfg, args.items), cfg["max_length"], cfg["batch_size"])
    write_parquet(args.out, table)
    log.info("wrote the base model's log-probs of %d items to %s", len(table), args.out)


if __name__ == "__main__":
    main()
