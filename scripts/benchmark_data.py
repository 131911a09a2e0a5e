"""Gather a judged benchmark's input files into one directory (copied fixtures, official downloads or a dataset's pairs)."""

import argparse
import json
import logging

from sftlab.benchmarks import prepare_benchmark_files
from sftlab.io import atomic_path
from sftlab.logs import setup_logging

log = logging.getLogger("benchmark_data")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--benchmark-config", required=True, help="the benchmark's config entry as JSON")
    ap.add_argument("--pairs", help="preference / implicit_reward: the dataset's pairs.jsonl")
    ap.add_argument("--out", required=True, help="output directory")
    args = ap.parse_args(argv)
    setup_logging()
    with atomic_path(args.out) as tmp:
        source = prepare_benchmark_files(json.loads(args.benchmark_config), tmp, pairs_path=args.pairs)
    log.info("%s: %s", args.out, json.dumps(source, sort_keys=True))


if __name__ == "__main__":
    main()
