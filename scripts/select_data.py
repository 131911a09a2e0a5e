"""Select training examples: rank the pool with a selector, keep the first fraction → {fraction}.ids."""

import argparse
import json
import logging

import pandas as pd

from sftlab.io import read_jsonl, write_ids
from sftlab.logs import setup_logging
from sftlab.selection import build_selector, take_fraction

log = logging.getLogger("select_data")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", required=True, help="normalised training pool (JSONL)")
    ap.add_argument("--selection", required=True, help="the recipe's selection config (JSON)")
    ap.add_argument("--table", action="append", default=[], help="NAME=PATH of a per-example Parquet table")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    setup_logging()
    cfg = json.loads(args.selection)
    params = {k: v for k, v in cfg.items() if k not in ("name", "fraction")}
    selector = build_selector(cfg["name"], params)
    tables = {}
    for spec in args.table:
        name, _, path = spec.partition("=")
        tables[name] = pd.read_parquet(path)
    missing = [t for t in selector.tables if t not in tables]
    if missing:
        raise SystemExit(f"selector {cfg['name']!r} needs tables {missing}")
    ids = [e["id"] for e in read_jsonl(args.train)]
    chosen = take_fraction(selector.rank(ids, tables), cfg["fraction"], len(ids), selector.max_fraction)
    log.info("selected %d of %d examples with %s", len(chosen), len(ids), cfg["name"])
    write_ids(args.out, chosen)


if __name__ == "__main__":
    main()
