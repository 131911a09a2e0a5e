"""Cost of the whole pipeline from Snakemake's benchmark files: one row per model × dataset × stage (rule), and
the cost of each paper's recipes by phase (tables: Markdown, CSV, LaTeX)."""

import argparse
import json
import tempfile

from sftlab.logs import setup_logging
from sftlab.report.cost import (
    cost_jobs,
    cost_table,
    format_cost,
    paper_groups,
    pipeline_groups,
    rule_order,
    with_grand_total,
)
from sftlab.report.dag import PHASES, WORKFLOW_HELP, run_jobs, workflow_jobs
from sftlab.run_config import describe, read_snapshot, rebuild_arguments
from sftlab.report.tables import write_table

MEASURES = ("wall time summed over the jobs, the largest resident memory of a job, GPU-hours (wall time x GPUs "
            "the rule requests; n/a where its jobs have no GPU), bytes its outputs keep on disk (n/a where they are "
            "temporary or gone)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-config", help="the snapshot of the config that ran (sftlab.run_config): the DAG is "
                                             "rebuilt from it and the tables say which config it was")
    source.add_argument("--workflow", help=WORKFLOW_HELP)
    ap.add_argument("--recipe-papers", required=True, help="JSON: recipe -> the papers it draws on")
    ap.add_argument("--papers", required=True, help="JSON: the papers in report order")
    ap.add_argument("--table", required=True, help="output stem of the per-stage table")
    ap.add_argument("--papers-table", required=True, help="output stem of the per-paper table")
    args = ap.parse_args(argv)
    setup_logging()
    note = None
    if args.run_config:
        snap = read_snapshot(args.run_config)
        note = describe(snap)
        with tempfile.TemporaryDirectory() as tmp:
            dag = workflow_jobs(**rebuild_arguments(snap, tmp))
    else:
        dag = run_jobs(args.workflow)
    jobs = cost_jobs(dag, json.loads(args.recipe_papers))

    stages = with_grand_total(cost_table(pipeline_groups(jobs, rule_order(jobs))))
    write_table(format_cost(stages).rename(columns={"item": "phase"}), args.table,
                f"Cost of every stage, one row per model x dataset x rule (— where the rule has no such wildcard), "
                f"from Snakemake's benchmark files: {MEASURES}; last row: the whole pipeline.", note=note)
    papers = cost_table(paper_groups(jobs, json.loads(args.papers), list(PHASES)))
    write_table(format_cost(papers).drop(columns=["model", "dataset"]).rename(columns={"stage": "paper",
                                                                                       "item": "phase"}),
                args.papers_table,
                f"Cost of each paper's recipes by phase, from the same benchmark files: {MEASURES}. A job serving "
                f"recipes of several papers (base model, data, reference log-probs, combined recipes) counts under "
                f"each, so the papers' totals add up to more than the pipeline's.", note=note)


if __name__ == "__main__":
    main()
