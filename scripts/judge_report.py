"""Reports on the judged benchmarks: the judges table (who judged, at what cost) and the MT-Bench category figure."""

import argparse

from sftlab.logs import setup_logging
from sftlab.report.judges import judged_scores, judges_caption, judges_table, mtbench_categories
from sftlab.report.tables import write_table


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of judged benchmarks")
    ap.add_argument("--judges-table", help="output stem of the judges table (.md, .csv, .tex)")
    ap.add_argument("--mtbench-figure", help="output stem of the MT-Bench per-category figure (.png, .pdf)")
    args = ap.parse_args(argv)
    setup_logging()
    scores = judged_scores(args.scores)
    if args.judges_table:
        table = judges_table(scores)
        write_table(table, args.judges_table, judges_caption(table))
    if args.mtbench_figure:
        mtbench_categories(scores, args.mtbench_figure)


if __name__ == "__main__":
    main()
