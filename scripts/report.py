"""Build reports/: the main table (Markdown, CSV, LaTeX) and the training-loss figure from results/."""

import argparse
import json
from pathlib import Path

import pandas as pd

from sftlab.report.figures import loss_curves
from sftlab.report.tables import load_scores, main_table, write_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files")
    ap.add_argument("--train-logs", nargs="*", default=[], help="train_log.csv files")
    ap.add_argument("--runs", required=True, help="JSON list of [model, dataset, recipe] planned")
    ap.add_argument("--benchmarks", required=True, help="JSON list of benchmark names (table columns)")
    ap.add_argument("--table", required=True, help="output stem of the main table")
    ap.add_argument("--loss-figure", required=True, help="output stem of the loss figure")
    args = ap.parse_args()

    table = main_table(load_scores(args.scores), [tuple(r) for r in json.loads(args.runs)], json.loads(args.benchmarks))
    write_table(table, args.table, "Main results: one row per model × dataset × recipe; value [95% CI]; "
                                   "n/a = no result for that cell.")
    logs = {}
    for path in args.train_logs:
        recipe_dir = Path(path).parent
        label = f"{recipe_dir.parent.parent.parent.name}/{recipe_dir.parent.parent.name}/{recipe_dir.name}"
        logs[label] = pd.read_csv(path)
    loss_curves(logs, args.loss_figure)


if __name__ == "__main__":
    main()
