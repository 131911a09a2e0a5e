"""The cost of every stage: one row per model × dataset × rule from the rules' own `benchmark:` files, and the cost
of each paper's recipes (setup, method preparation, training, evaluation, figures). The jobs, their benchmark files,
outputs, GPU requests and dependencies are read from Snakemake's DAG, rebuilt in the job from the snapshot of the
config that ran (sftlab.run_config, written at the run's start); each rule's phase is tagged on its
`benchmark:` (phase_benchmark)."""

PLAN.PAPER_REPORTS.append(PLAN.cost_report_files)


rule cost_report:
    """Cost of every stage (wall time, peak memory, GPU-hours, bytes stored) per model × dataset × rule, and per paper."""
    input:
        **PLAN.code("cost_report"),
        reports=PLAN.reports_before_cost,
    output:
        md=f"{PLAN.cost_tables['pipeline']}.md",
        csv=report(f"{PLAN.cost_tables['pipeline']}.csv", caption="../report/cost.rst", category="Main",
                   subcategory="Cost"),
        tex=f"{PLAN.cost_tables['pipeline']}.tex",
        papers_md=f"{PLAN.cost_tables['papers']}.md",
        papers_csv=report(f"{PLAN.cost_tables['papers']}.csv", caption="../report/cost_papers.rst", category="Main",
                          subcategory="Cost"),
        papers_tex=f"{PLAN.cost_tables['papers']}.tex",
    params:
        run_config=run_config.RUN_CONFIG,
        config_digest=PLAN.run_config_digest,
        recipe_papers=PLAN.cost_recipe_papers,
        papers=PLAN.as_json(PLAN.cost_papers),
        table=PLAN.output_stem("md"),
        papers_table=PLAN.output_stem("papers_md"),
    conda:
        CONDA_ENV
    log:
        "logs/cost_report.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --run-config {params.run_config:q} --recipe-papers {params.recipe_papers:q} "
        "--papers {params.papers:q} --table {params.table:q} --papers-table {params.papers_table:q} 2> {log:q}"
