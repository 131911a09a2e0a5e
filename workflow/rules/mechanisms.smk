# Mechanism tables: each paper's claim about what its method does, measured on the run's own files (ground-truth
# quality of the demo corpus, selections, confidence, per-item log-likelihoods), with intervals and a verdict.


PLAN.PAPER_REPORTS.append(PLAN.mechanism_reports)


for _paper in PLAN.mechanism_papers:

    rule:
        """A paper's mechanism table (md, csv, tex) and figure (png, pdf); `nll`: every recipe's held-out NLL with a
        paired test against the baseline."""
        name:
            f"mechanism_{_paper}"
        input:
            **PLAN.code("mechanisms"),
            files=PLAN.mechanism_inputs(_paper),
        output:
            **PLAN.mechanism_outputs(_paper),
        params:
            paper=_paper,
            spec=PLAN.as_json(PLAN.mechanism_spec(_paper)),
        conda:
            CONDA_ENV
        log:
            f"logs/mechanism/{_paper}.log",
        threads: PLAN.threads_of("report")
        resources:
            **PLAN.res("report"),
        shell:
            "python {input.script:q} {params.paper:q} --spec {params.spec:q} --table {output.table:q} "
            "--figure {output.figure:q} 2> {log:q}"
