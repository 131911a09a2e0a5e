rule select_data:
    """Rank the pool with a selector and keep a fraction of it (ids in order of selection score)."""
    input:
        script=f"{SCRIPTS}/select_data.py",
        train="results/data/{dataset}/train.jsonl",
        tables=lambda w: list(selector_tables(w).values()),
    output:
        "results/{model}/{dataset}/selection/{selector}/{fraction}.ids",
    params:
        selection=lambda w: as_json(selection_config(w)),
        tables=lambda w: table_args("--table", selector_tables(w)),
    conda:
        CONDA_ENV
    log:
        "logs/select_data/{model}/{dataset}/{selector}/{fraction}.log",
    benchmark:
        "benchmarks/select_data/{model}/{dataset}/{selector}/{fraction}.tsv"
    threads: threads_of("select")
    resources:
        **res("select"),
    shell:
        "python {input.script:q} --train {input.train:q} --selection {params.selection:q} {params.tables:q} "
        "--out {output:q} 2> {log:q}"
