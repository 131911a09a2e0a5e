"""Normalise one dataset: train.jsonl, heldout.jsonl and pairs.jsonl (preference pairs; empty for SFT-only formats)."""

import argparse
import json
import logging
import sys

from sftlab.data.prepare import prepare_dataset
from sftlab.io import write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--dataset-config", required=True, help="the dataset's config entry as JSON")
    ap.add_argument("--train", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--pairs", required=True)
    args = ap.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = logging.getLogger("prepare_data").info
    train, heldout, pairs = prepare_dataset(args.name, json.loads(args.dataset_config), log=log)
    write_jsonl(args.train, train)
    write_jsonl(args.heldout, heldout)
    write_jsonl(args.pairs, pairs)


if __name__ == "__main__":
    main()
