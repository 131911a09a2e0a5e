"""Build the Disperse-Then-Merge report: the paper-shaped table, the merge-method ablation and the K figure."""

import argparse
import json

from sftlab.logs import setup_logging
from sftlab.report.dtm import build_report
from sftlab.report.tables import collapse_seed_runs, collapse_seeds, load_scores


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of the runs")
    ap.add_argument("--runs", required=True, help="JSON list of the runs (sftlab.report.dtm.dtm_runs)")
    ap.add_argument("--benchmarks", required=True, help="JSON object: benchmark name → key of the paper's numbers")
    ap.add_argument("--seeds", default="{}", help="JSON per-seed recipe → [base recipe, seed] (rows per base recipe)")
    ap.add_argument("--main-table", required=True, help="output stem of the DTM vs SFT vs seed soup table")
    ap.add_argument("--merge-table", required=True, help="output stem of the merge-method table")
    ap.add_argument("--k-figure", required=True, help="output stem of the K ablation figure")
    args = ap.parse_args(argv)
    setup_logging()
    seeds = json.loads(args.seeds)
    build_report(collapse_seeds(load_scores(args.scores), seeds), collapse_seed_runs(json.loads(args.runs), seeds),
                 json.loads(args.benchmarks), args.main_table,
                 args.merge_table, args.k_figure)


if __name__ == "__main__":
    main()
