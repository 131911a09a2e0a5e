rule build_report:
    """Tables and figures from every score and training log of the experiments."""
    input:
        **PLAN.code("report"),
        scores=PLAN.score_files(),
        logs=PLAN.train_logs(),
    output:
        table_md="reports/tables/main.md",
        table_csv=report("reports/tables/main.csv", caption="../report/main_table.rst", category="Main",
                         subcategory="Tables"),
        table_tex="reports/tables/main.tex",
        figure_png=report("reports/figures/loss_curves.png", caption="../report/loss_curves.rst",
                          category="Main", subcategory="Figures"),
        figure_pdf="reports/figures/loss_curves.pdf",
        scores_png=report("reports/figures/scores.png", caption="../report/scores.rst", category="Main",
                          subcategory="Figures"),
        scores_pdf="reports/figures/scores.pdf",
    params:
        runs=PLAN.as_json([list(k) for k in PLAN.experiment_runs()]),
        benchmarks=PLAN.as_json(PLAN.report_benchmarks()),
        seeds=PLAN.as_json(CFG["_seeds"]),
        baseline=CFG["report"]["baseline"],
    conda:
        CONDA_ENV
    log:
        "logs/report.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --train-logs {input.logs:q} --runs {params.runs:q} "
        "--benchmarks {params.benchmarks:q} --table reports/tables/main --loss-figure reports/figures/loss_curves "
        "--scores-figure reports/figures/scores --seeds {params.seeds:q} --baseline {params.baseline:q} "
        "2> {log:q}"
