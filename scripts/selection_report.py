"""LESS / ROSE report: the fraction curve (figure), the main table beside the LESS paper's numbers, the shots
ablation and the cost per stage (tables)."""

import argparse
import json

from sftlab.logs import setup_logging
from sftlab.report.cost import cost_table, format_cost
from sftlab.report.papers import paper_numbers
from sftlab.report.dag import WORKFLOW_HELP, run_jobs
from sftlab.report.selection import (
    curve_frame,
    fraction_curve,
    fraction_curve_note,
    selection_cost_groups,
    selection_main_table,
    shots_table,
    targeted,
)
from sftlab.report.tables import collapse_seeds, judged_columns_note, load_scores, write_table


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scores", nargs="*", default=[], help="Scores JSON files of the compared runs")
    ap.add_argument("--recipes", required=True, help="JSON: recipe → selector, name, fraction, shots, validation, "
                                                     "objective, group")
    ap.add_argument("--benchmarks", required=True, help="JSON list of benchmark names, in report order")
    ap.add_argument("--paper-keys", default="{}", help="JSON: benchmark name → the LESS paper's key for it (lm-eval "
                                                       "task or name); default: the name")
    ap.add_argument("--seeds", default="{}", help="JSON per-seed recipe → [base recipe, seed] (points per base recipe)")
    ap.add_argument("--runs", required=True, help="JSON list of the curve's runs [model, dataset, recipe]")
    ap.add_argument("--workflow", required=True, help=WORKFLOW_HELP)
    ap.add_argument("--stems", required=True,
                    help='JSON {"curve" (when drawn), "shots", "cost", "main"}: output paths without suffix')
    args = ap.parse_args(argv)
    setup_logging()
    stems, benchmarks = json.loads(args.stems), json.loads(args.benchmarks)

    seeds = json.loads(args.seeds)
    recipes = {seeds.get(name, (name, None))[0]: settings for name, settings in json.loads(args.recipes).items()}
    frame = curve_frame(collapse_seeds(load_scores(args.scores), seeds), recipes)
    if "curve" in stems:  # the workflow asks for it when its axis has two fractions or more
        fraction_curve(frame, benchmarks, stems["curve"])
    paper_keys = json.loads(args.paper_keys)
    # the benchmarks the LESS / ROSE runs are scored on (the full-data run may have more, from other experiments)
    scored = [b for b in benchmarks if b in set(frame.loc[frame.name.isin(targeted()), "benchmark"])]
    write_table(selection_main_table(frame, {b: paper_keys.get(b, b) for b in scored}, paper_numbers("less")),
                stems["main"], "LESS / ROSE and the baselines (BM25, DSIR, RDS, RDS+) against random subsets and the full "
                "data, per benchmark: value [95% CI]; the LESS paper's reported numbers below ours with their source "
                "label; n/a = no result." + ("" if "curve" in stems else fraction_curve_note(recipes)),
                note=judged_columns_note(frame))
    write_table(shots_table(frame, benchmarks), stems["shots"],
                "LESS / ROSE shots ablation: score with k validation items per subtask; value [95% CI]; "
                "n/a = no run with that number of shots.", note=judged_columns_note(frame))
    jobs = run_jobs(args.workflow)
    write_table(format_cost(cost_table(selection_cost_groups(jobs, json.loads(args.runs)))), stems["cost"],
                "Cost per stage from Snakemake benchmark files: wall time summed over the jobs, largest resident "
                "memory of a job, GPU-hours (wall time x GPUs requested; n/a without GPUs), bytes stored by the "
                "outputs; total = the stage's rows together.")


if __name__ == "__main__":
    main()
