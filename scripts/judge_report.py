"""Reports on the judged benchmarks: the judges table (who judged, at what cost), each judged run against the baseline
recipe (paired over items, under one judge) and the MT-Bench category figure."""

import argparse

from sftlab.logs import setup_logging
from sftlab.report.judges import judged_comparisons, judged_scores, judges_caption, judges_table, mtbench_categories
from sftlab.report.tables import judged_columns_note, load_scores, write_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of judged benchmarks")
    ap.add_argument("--judges-table", help="output stem of the judges table (.md, .csv, .tex)")
    ap.add_argument("--comparisons", help="output stem of the judged runs against --baseline (.md, .csv, .tex)")
    ap.add_argument("--baseline", default="sft", help="the recipe every judged run is compared with")
    ap.add_argument("--mtbench-figure", help="output stem of the MT-Bench per-category figure (.png, .pdf)")
    args = ap.parse_args(argv)
    setup_logging()
    scores = judged_scores(args.scores)
    if args.judges_table:
        table = judges_table(scores)
        write_table(table, args.judges_table, judges_caption(table))
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
