# The LESS table's selection baselines and RDS+: score tables of the pool against a selection's validation set.
#
# train.jsonl + validation set ─► similarity/{bm25|dsir}-….parquet                (CPU: BM25, DSIR n-gram weights)
# train.jsonl + model ─► hidden_states/{last|weighted_mean}.pt ─┐                  (GPU: a forward pass, no warmup)
# validation set + model ──────────────────────────────────────┴► similarity/{rds|rds_plus}-….parquet
# The selection itself is the shared `select_data` rule, which reads the table (SELECTOR_TABLES).


rule lexical_scores:
    """BM25 scores (LESS's aggregation over the validation items) or DSIR log importance weights of the pool."""
    input:
        **PLAN.code("baseline_scores"),
        train="results/data/{dataset}/train.jsonl",
        validation=PLAN.baseline_validation_file,
    output:
        "results/{model}/{dataset}/similarity/{selector}.parquet",
    wildcard_constraints:
        selector=PLAN.selector_id_pattern(features="lexical"),
    params:
        flags=PLAN.baseline_flags,
    conda:
        CONDA_ENV
    log:
        "logs/lexical_scores/{model}/{dataset}/{selector}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/lexical_scores/{model}/{dataset}/{selector}.tsv")
    threads: PLAN.threads_of("select")
    resources:
        **PLAN.res("select"),
    shell:
        "python {input.script:q} lexical --train {input.train:q} --validation {input.validation:q} {params.flags:q} "
        "--out {output:q} 2> {log:q}"


rule pool_hidden_states:
    """The pool's final-layer hidden states, pooled (rds: last token; rds_plus: weighted mean over positions); one
    forward pass shared by every validation set."""
    input:
        **PLAN.code("baseline_scores"),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
    output:
        "results/{model}/{dataset}/hidden_states/{pooling}.pt",
    wildcard_constraints:
        pooling="last|weighted_mean",
    params:
        forward=PLAN.representation_flags(),
    conda:
        CONDA_ENV
    log:
        "logs/pool_hidden_states/{model}/{dataset}/{pooling}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/pool_hidden_states/{model}/{dataset}/{pooling}.tsv")
    threads: PLAN.threads_of("score")
    resources:
        **PLAN.res("score", model=True),
    shell:
        "python {input.script:q} pool-features --model {input.model:q} --train {input.train:q} "
        "--pooling {wildcards.pooling:q} {params.forward:q} --out {output:q} 2> {log:q}"


rule representation_scores:
    """Cosines of the pool's hidden states with the validation items' (a forward pass of those only): rds with LESS's
    aggregation, rds_plus one column per validation item."""
    input:
        **PLAN.code("baseline_scores"),
        model="resources/models/{model}",
        pool=PLAN.pool_hidden_states_file,
        validation=PLAN.baseline_validation_file,
    output:
        "results/{model}/{dataset}/similarity/{selector}.parquet",
    wildcard_constraints:
        selector=PLAN.selector_id_pattern(features="representations"),
    params:
        flags=PLAN.baseline_flags,
        forward=PLAN.representation_flags(),
    conda:
        CONDA_ENV
    log:
        "logs/representation_scores/{model}/{dataset}/{selector}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/representation_scores/{model}/{dataset}/{selector}.tsv")
    threads: PLAN.threads_of("score")
    resources:
        **PLAN.res("score", model=True),
    shell:
        "python {input.script:q} representations --model {input.model:q} --pool-features {input.pool:q} "
        "--validation {input.validation:q} {params.flags:q} {params.forward:q} --out {output:q} 2> {log:q}"
