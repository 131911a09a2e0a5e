"""Build a LESS/ROSE validation set: the chosen subtasks of a normalised file, seeded order within each subtask."""

import argparse
import logging

from sftlab.io import read_jsonl, write_jsonl
from sftlab.logs import setup_logging
from sftlab.selection.validation import validation_items

log = logging.getLogger("validation_set")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True, help="pairs.jsonl (preference pairs) or train/heldout.jsonl (SFT examples)")
    ap.add_argument("--subtasks", nargs="*", help="keep only these subtasks (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    try:
        items = validation_items(read_jsonl(args.data), args.subtasks or None, args.seed)
    except ValueError as exc:
        raise SystemExit(f"{args.data}: {exc}") from None
    write_jsonl(args.out, items)
    counts = {}
    for item in items:
        counts[item["subtask"]] = counts.get(item["subtask"], 0) + 1
    log.info("%d validation items from %s, per subtask %s -> %s", len(items), args.data, counts, args.out)


if __name__ == "__main__":
    main()
