rule select_data:
    """Rank the pool with a selector and keep a fraction of it (ids in order of selection score)."""
    input:
        **PLAN.code("select_data", registries=["sftlab.selection"]),
        train="results/data/{dataset}/train.jsonl",
        tables=PLAN.selector_table_files,
    output:
        "results/{model}/{dataset}/selection/{selector}/{fraction}.ids",
    params:
        selection=PLAN.selection_settings,
        tables=PLAN.selector_table_args,
    conda:
        CONDA_ENV
    log:
        "logs/select_data/{model}/{dataset}/{selector}/{fraction}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/select_data/{model}/{dataset}/{selector}/{fraction}.tsv")
    threads: PLAN.threads_of("select")
    resources:
        **PLAN.res("select"),
    shell:
        "python {input.script:q} --train {input.train:q} --selection {params.selection:q} {params.tables:q} "
        "--out {output:q} 2> {log:q}"
