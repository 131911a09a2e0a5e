"""Normalise one dataset: train.jsonl, heldout.jsonl and pairs.jsonl (preference pairs; empty for SFT-only formats)."""

import argparse
import json

from sftlab.data.prepare import prepare_dataset
from sftlab.io import write_jsonl
from sftlab.logs import setup_logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset-config", required=True, help="the dataset's config entry as JSON")
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--pairs", required=True)
    args = ap.parse_args()
    setup_logging()
    train, heldout, pairs = prepare_dataset(args.name, json.loads(args.dataset_config))
    write_jsonl(args.train, train)
    write_jsonl(args.heldout, heldout)
    write_jsonl(args.pairs, pairs)


if __name__ == "__main__":
    main()
