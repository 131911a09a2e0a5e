# Paper-shaped reports of SFTMix and MinorSFT (their tables, ablations and figures), built when the config has such runs.

PLAN.PAPER_REPORTS.append(PLAN.method_reports)


for _paper in PLAN.method_report_files:

    rule:
        """A paper's own tables and figures (SFTMix: main table beside the paper's numbers, ablations; MinorSFT:
        accuracy at the best β × lr, the whole grid as a heat-map, the deviation curves)."""
        name:
            f"report_{_paper}"
        input:
            **PLAN.code("report_methods", registries=["sftlab.benchmarks"]),
            scores=PLAN.method_report_inputs(_paper)["scores"],
            logs=PLAN.method_report_inputs(_paper)["logs"],
            # the SFTMix main table puts our judged scores beside the paper's: with our judge's calibration
            calibrations=PLAN.calibration_summaries() if _paper == "sftmix" else [],
        output:
            PLAN.method_report_outputs(_paper),
        params:
            paper=_paper,
            runs=PLAN.as_json(PLAN.method_report_runs(_paper)),
            benchmarks=PLAN.as_json(PLAN.report_benchmarks()),
            types=PLAN.as_json({name: b["type"] for name, b in CFG["benchmarks"].items()}),
            seeds=PLAN.as_json(CFG["_seeds"]),
        conda:
            CONDA_ENV
        log:
            f"logs/report/{_paper}.log",
        threads: PLAN.threads_of("report")
        resources:
            **PLAN.res("report"),
        shell:
            "python {input.script:q} {params.paper:q} --scores {input.scores:q} --train-logs {input.logs:q} "
            "--calibrations {input.calibrations:q} "
            "--runs {params.runs:q} --benchmarks {params.benchmarks:q} --benchmark-types {params.types:q} "
            "--seeds {params.seeds:q} 2> {log:q}"
