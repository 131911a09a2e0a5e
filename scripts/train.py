"""Train one run of a recipe: the selected examples, the recipe's objective and training settings.

Run directly or under `accelerate launch` (one process per GPU).
"""

import argparse
import json

import pandas as pd

from sftlab.io import read_ids, read_jsonl
from sftlab.logs import setup_logging
from sftlab.objectives import OBJECTIVES
from sftlab.registry import lookup
from sftlab.selection.warmup import WarmupCheckpointCallback
from sftlab.training.trainer import train
from sftlab.numerics import flush_denormals


def load_tables(specs: list[str], objective: str | None = None) -> dict[str, dict[str, object]]:
    """``path.parquet`` files keyed by id → column name → {id → value}, with the columns ``objective`` derives
    from them (``Objective.derived_columns``: SFTMix's ``confident`` flag from confidence.parquet's split)."""
    derive = lookup(OBJECTIVES, "objective", objective).derived_columns if objective else (lambda frame: {})
    tables: dict[str, dict[str, object]] = {}
    for path in specs:
        frame = pd.read_parquet(path)
        if "id" not in frame.columns:
            raise ValueError(f"{path}: a per-example table needs an 'id' column")
        ids = frame["id"].astype(str)
        for column, values in {**{c: frame[c] for c in frame.columns if c != "id"}, **derive(frame)}.items():
            tables[column] = dict(zip(ids, values))
    return tables


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--train", required=True, help="normalised training pool (JSONL)")
    ap.add_argument("--ids", required=True, help="selected ids, one a line")
    ap.add_argument("--heldout", required=True, help="held-out examples (JSONL) for evaluation during training")
    ap.add_argument("--training", required=True, help="effective training settings (JSON)")
    ap.add_argument("--objective", required=True, help="objective config (JSON)")
    ap.add_argument("--table", action="append", default=[], help="per-example Parquet table joined by id")
    ap.add_argument("--heldout-ref", help="ref_logprobs.parquet: adds the deviation metric to held-out evaluations")
    ap.add_argument("--epoch-models", help="directory for loadable models saved at the end of --save-epochs")
    ap.add_argument("--save-epochs", type=int, nargs="*", default=[])
    ap.add_argument("--warmup-dir", help="LESS/ROSE warmup: write checkpoint-{epoch}/ (adapter, Adam moments by "
                                         "name, mean lr) here at the end of every epoch")
    ap.add_argument("--out", help="final model directory (omit for runs that keep only epoch checkpoints)")
    ap.add_argument("--train-log", required=True)
    ap.add_argument("--checkpoints", required=True)
    args = ap.parse_args()
    flush_denormals()
    setup_logging()

    pool = {e["id"]: e for e in read_jsonl(args.train)}
    ids = read_ids(args.ids)
    missing = [i for i in ids if i not in pool]
    if missing:
        raise SystemExit(f"{args.ids}: {len(missing)} ids not in {args.train}, e.g. {missing[:3]}")
    heldout_ref = load_tables([args.heldout_ref])["ref_logp"] if args.heldout_ref else None
    epoch_models = (args.epoch_models, args.save_epochs) if args.epoch_models else None
    callbacks = [WarmupCheckpointCallback(args.warmup_dir)] if args.warmup_dir else []
    objective = json.loads(args.objective)
    train(args.model_dir, [pool[i] for i in ids], read_jsonl(args.heldout), json.loads(args.training),
          objective, args.out, args.train_log, args.checkpoints, tables=load_tables(args.table, objective["name"]),
          heldout_ref_logps=heldout_ref, epoch_models=epoch_models, callbacks=callbacks)


if __name__ == "__main__":
    main()
