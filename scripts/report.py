"""Build reports/: the main table (Markdown, CSV, LaTeX) and the training-loss figure from results/."""

import argparse
import json
from pathlib import Path

import pandas as pd

from sftlab.logs import setup_logging
from sftlab.report.figures import loss_curves, score_spread
from sftlab.report.judges import judged_scores, judges_caption, judges_table
from sftlab.report.tables import MISSING, judged_columns_note, load_scores, main_table, run_of, seed_table, write_table


def judges_note(paths: list[str], scores: pd.DataFrame) -> str | None:
    """The judges lines under the main table (who judged each judged column, demo-quality or not, at what cost), if
    any column is."""
    if not paths:
        return None
    judged = judged_scores(paths)
    judged = judged[judged["judge_id"] != MISSING]
    return f"{judged_columns_note(scores)}\n\n{judges_caption(judges_table(judged))}" if len(judged) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files")
    ap.add_argument("--train-logs", nargs="*", default=[], help="train_log.csv files")
    ap.add_argument("--runs", required=True, help="JSON list of [model, dataset, recipe] planned")
    ap.add_argument("--benchmarks", required=True, help="JSON list of benchmark names (table columns)")
    ap.add_argument("--table", required=True, help="output stem of the main table")
    ap.add_argument("--loss-figure", required=True, help="output stem of the loss figure")
    ap.add_argument("--scores-figure", required=True, help="output stem of the score-spread figure")
    ap.add_argument("--seeds", default="{}", help="JSON per-seed recipe → [base recipe, seed] (config seeds)")
    ap.add_argument("--baseline", default="sft", help="recipe the paired tests compare against")
    args = ap.parse_args()
    setup_logging()

    scores, runs, benchmarks = load_scores(args.scores), [tuple(r) for r in json.loads(args.runs)], json.loads(args.benchmarks)
    seeds = {k: tuple(v) for k, v in json.loads(args.seeds).items()}
    if seeds:
        table = seed_table(scores, runs, benchmarks, seeds, args.baseline)
        caption = (f"Main results over {max(t.seeds for t in table.itertuples()) if len(table) else 0} training seeds: "
                   f"mean ± std (n = seeds with a score); '<benchmark> p': two-sided paired t-test against "
                   f"{args.baseline} over the seeds (— for {args.baseline} itself); n/a = no result for that cell.")
    else:
        table = main_table(scores, runs, benchmarks)
        caption = "Main results: one row per model × dataset × recipe; value [95% CI]; n/a = no result for that cell."
    write_table(table, args.table, caption, note=judges_note(args.scores, scores))
    score_spread(scores, runs, benchmarks, seeds, args.scores_figure)
    logs = {}
    for path in args.train_logs:
        logs["/".join(run_of(Path(path).parent))] = pd.read_csv(path)
    loss_curves(logs, args.loss_figure)


if __name__ == "__main__":
    main()
