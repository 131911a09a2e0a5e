"""The cost of every stage: one row per model × dataset × rule from the rules' own `benchmark:` files, and the cost
of each paper's recipes (setup, method preparation, training, evaluation). Included after every other rule file:
the plan reads the rules' benchmark and output patterns and their GPU requests from the rules themselves."""

include: "cost_common.smk"


COST_PLAN = cost_plan()
PAPER_REPORTS.append(cost_report_files)


rule cost_report:
    """Cost of every stage (wall time, peak memory, GPU-hours, bytes stored) per model × dataset × rule, and per paper."""
    input:
        script=f"{SCRIPTS}/cost_report.py",
        benchmarks=[job["benchmark"]["path"] for job in planned_jobs(COST_PLAN)],
    output:
        md=f"{COST_TABLES['pipeline']}.md",
        csv=report(f"{COST_TABLES['pipeline']}.csv", caption="../report/cost.rst", category="Main",
                   subcategory="Cost"),
        tex=f"{COST_TABLES['pipeline']}.tex",
        papers_md=f"{COST_TABLES['papers']}.md",
        papers_csv=report(f"{COST_TABLES['papers']}.csv", caption="../report/cost_papers.rst", category="Main",
                          subcategory="Cost"),
        papers_tex=f"{COST_TABLES['papers']}.tex",
    params:
        plan=cost_plan_json,  # a function: its {wildcard} patterns are not this rule's wildcards
        table=output_stem("md"),
        papers=output_stem("papers_md"),
    conda:
        CONDA_ENV
    log:
        "logs/cost_report.log",
    threads: threads_of("report")
    resources:
        **res("report"),
    shell:
        "python {input.script:q} --plan {params.plan:q} --table {params.table:q} --papers-table {params.papers:q} "
        "2> {log:q}"
