# Paper-shaped reports of SFTMix and MinorSFT (their tables, ablations and figures), built when the config has such runs.

METHOD_REPORT_FILES = {
    "sftmix": [f"reports/tables/sftmix_{t}.{ext}" for t in ("main", "ablation") for ext in ("md", "csv", "tex")],
    "minorsft": [f"reports/tables/minorsft_accuracy.{ext}" for ext in ("md", "csv", "tex")]
    + [f"reports/figures/minorsft_{f}.{ext}" for f in ("grid", "deviation") for ext in ("png", "pdf")],
}


METHOD_REPORT_CATEGORY = {"sftmix": "SFTMix", "minorsft": "MinorSFT"}


def method_report_outputs(paper):
    """The paper's files; its tables (CSV) and figures (PNG) shown in reports/report.html under the paper's category,
    each with its caption workflow/report/<file stem>.rst."""
    subcategory = {".csv": "Tables", ".png": "Figures"}
    return [report(f, caption=f"../report/{Path(f).stem}.rst", category=METHOD_REPORT_CATEGORY[paper],
                   subcategory=subcategory[Path(f).suffix]) if Path(f).suffix in subcategory else f
            for f in METHOD_REPORT_FILES[paper]]


def method_report_runs(paper):
    """Single-model runs of the model × dataset pairs where some recipe uses the paper's objective, with their settings
    (composed runs — merged shards, seed soups — belong to the DTM report, not to these papers' tables)."""
    runs = {k: v for k, v in experiment_runs().items() if CFG["recipes"][k[2]]["composition"]["name"] == "single"}
    pairs = {(m, d) for (m, d, r) in runs if CFG["recipes"][r]["objective"]["name"] in paper_objectives(METHOD_REPORT_CATEGORY[paper])}
    return [{"model": m, "dataset": d, "recipe": r, "objective": CFG["recipes"][r]["objective"],
             "selection": CFG["recipes"][r]["selection"],
             "learning_rate": CFG["recipes"][r]["training"]["learning_rate"]}
            for (m, d, r) in runs if (m, d) in pairs]


def method_report_inputs(paper):
    runs = method_report_runs(paper)
    keys = {(r["model"], r["dataset"], r["recipe"]) for r in runs}
    scores = run_score_files({k: v for k, v in experiment_runs().items() if k in keys})
    logs = [f"{run_dir(m, d, r)}/train_log.csv" for (m, d, r) in sorted(keys)]
    return {"scores": scores, "logs": logs}


for _paper in METHOD_REPORT_FILES:
    PAPER_REPORTS.append(lambda paper=_paper: METHOD_REPORT_FILES[paper] if method_report_runs(paper) else [])


for _paper in METHOD_REPORT_FILES:

    rule:
        """A paper's own tables and figures (SFTMix: main table beside the paper's numbers, ablations; MinorSFT:
        accuracy at the best β × lr, the whole grid as a heat-map, the deviation curves)."""
        name:
            f"report_{_paper}"
        input:
            **code("report_methods", registries=["sftlab.benchmarks"]),
            scores=method_report_inputs(_paper)["scores"],
            logs=method_report_inputs(_paper)["logs"],
            # the SFTMix main table puts our judged scores beside the paper's: with our judge's calibration
            calibrations=PLAN.calibration_summaries() if _paper == "sftmix" else [],
        output:
            method_report_outputs(_paper),
        params:
            paper=_paper,
            runs=as_json(method_report_runs(_paper)),
            benchmarks=as_json(report_benchmarks()),
            types=as_json({name: b["type"] for name, b in CFG["benchmarks"].items()}),
            seeds=as_json(CFG["_seeds"]),
        conda:
            CONDA_ENV
        log:
            f"logs/report/{_paper}.log",
        threads: threads_of("report")
        resources:
            **res("report"),
        shell:
            "python {input.script:q} {params.paper:q} --scores {input.scores:q} --train-logs {input.logs:q} "
            "--calibrations {input.calibrations:q} "
            "--runs {params.runs:q} --benchmarks {params.benchmarks:q} --benchmark-types {params.types:q} "
            "--seeds {params.seeds:q} 2> {log:q}"
