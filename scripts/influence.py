"""LESS/ROSE influence table: lr-weighted cosine over warmup checkpoints, mean within subtask, max over subtasks.

Writes Parquet ``id, influence, influence_{subtask}...`` (one row per pool example, pool order). The lists
--train, --val and --checkpoints are aligned by checkpoint.
"""

import argparse
import logging

from sftlab.io import write_parquet
from sftlab.logs import setup_logging
from sftlab.selection.influence import influence_table

log = logging.getLogger("influence")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", nargs="+", required=True, help="gathered training feature file per checkpoint")
    ap.add_argument("--val", nargs="+", required=True, help="validation feature file per checkpoint")
    ap.add_argument("--checkpoints", nargs="+", required=True, help="warmup checkpoint directories (mean lr)")
    ap.add_argument("--out", required=True, help="influence table (Parquet)")
    ap.add_argument("--log", help="log file (default: stderr)")
    args = ap.parse_args(argv)
    setup_logging(args.log)
    if not len(args.train) == len(args.val) == len(args.checkpoints):
        raise SystemExit(f"--train, --val and --checkpoints need one entry per checkpoint, got "
                         f"{len(args.train)}, {len(args.val)}, {len(args.checkpoints)}")
    table = influence_table(args.train, args.val, args.checkpoints)
    write_parquet(args.out, table)
    log.info("influence of %d examples (%d without a gradient) over subtasks %s -> %s", len(table),
             int(table["influence"].isna().sum()), [c.removeprefix("influence_") for c in table.columns[2:]], args.out)


if __name__ == "__main__":
    main()
