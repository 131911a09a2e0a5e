"""Reports on the judged benchmarks: the judges table (who judged, at what cost), each judged run against the baseline
recipe (paired over items, under one judge) and the MT-Bench category figure."""

import argparse

from sftlab.logs import setup_logging
from sftlab.report.judges import (calibration_table, judged_comparisons, judged_scores, judges_caption, judges_table,
                                  mtbench_categories, with_calibration)
from sftlab.report.tables import judged_columns_note, load_scores, write_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of judged benchmarks")
    ap.add_argument("--judges-table", help="output stem of the judges table (.md, .csv, .tex)")
    ap.add_argument("--comparisons", help="output stem of the judged runs against --baseline (.md, .csv, .tex)")
    ap.add_argument("--baseline", default="sft", help="the recipe every judged run is compared with")
    ap.add_argument("--calibrations", nargs="*", default=[], help="judge_calibration summaries (JSON)")
    ap.add_argument("--calibration-table", help="output stem of the calibration table (.md, .csv, .tex)")
    ap.add_argument("--mtbench-figure", help="output stem of the MT-Bench per-category figure (.png, .pdf)")
    args = ap.parse_args(argv)
    setup_logging()
    scores = judged_scores(args.scores)
    calibration = calibration_table(args.calibrations)
    if args.judges_table:
        table = judges_table(scores)
        write_table(with_calibration(table, calibration), args.judges_table, judges_caption(table))
    if args.calibration_table:
        write_table(calibration, args.calibration_table,
                    "Our judges against the original judges on a pinned sample of their published judgments "
                    "(rule judge_calibration): Spearman's ρ and Kendall's τ of the models' mean scores, per-item "
                    "agreement, and the least-squares line reading our scores on the original judge's scale.")
    if args.comparisons:
        plain = load_scores(args.scores)
        write_table(judged_comparisons(plain, args.baseline), args.comparisons,
                    f"Judged runs against {args.baseline} (same model × dataset and benchmark): difference under one "
                    "judge [paired 95% bootstrap interval over the items both were judged on]; judge sd: the judge's "
                    "own spread over its repeats; n/a (judges differ) where another judge scored the baseline.",
                    note=judged_columns_note(plain))
    if args.mtbench_figure:
        mtbench_categories(scores, args.mtbench_figure)


if __name__ == "__main__":
    main()
