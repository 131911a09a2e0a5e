"""Build the Disperse-Then-Merge report: the paper-shaped table, the merge-method ablation and the K figure."""

import argparse
import json

from sftlab.logs import setup_logging
from sftlab.report.dtm import build_k_figure, build_report
from sftlab.report.tables import collapse_seed_runs, collapse_seeds, load_scores


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of the runs")
    ap.add_argument("--runs", required=True, help="JSON list of the runs (sftlab.report.dtm.dtm_runs)")
    ap.add_argument("--benchmarks", required=True, help="JSON object: benchmark name → key of the paper's numbers")
    ap.add_argument("--seeds", default="{}", help="JSON per-seed recipe → [base recipe, seed] (rows per base recipe)")
    ap.add_argument("--main-table", help="output stem of the DTM vs SFT vs seed soup table (with --merge-table)")
    ap.add_argument("--merge-table", help="output stem of the merge-method table (with --main-table)")
    ap.add_argument("--k-figure", help="output stem of the K ablation figure (drawn when the runs have two K or more)")
    args = ap.parse_args(argv)
    setup_logging()
    if not args.k_figure and not (args.main_table and args.merge_table):
        ap.error("give --main-table and --merge-table, or --k-figure")
    seeds = json.loads(args.seeds)
    scores = collapse_seeds(load_scores(args.scores), seeds)
    runs, benchmarks = collapse_seed_runs(json.loads(args.runs), seeds), json.loads(args.benchmarks)
    if args.main_table and args.merge_table:
        build_report(scores, runs, benchmarks, args.main_table, args.merge_table)
    if args.k_figure:
        build_k_figure(scores, runs, benchmarks, args.k_figure)


if __name__ == "__main__":
    main()
