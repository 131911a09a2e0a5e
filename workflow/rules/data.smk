rule prepare_data:
    """Normalise a dataset: training pool, held-out set and preference pairs (empty for SFT-only formats)."""
    input:
        **PLAN.code("prepare_data"),
        local=PLAN.local_dataset_files,
    output:
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        pairs="results/data/{dataset}/pairs.jsonl",
    params:
        dataset=PLAN.dataset_config,
    conda:
        CONDA_ENV
    log:
        "logs/prepare_data/{dataset}.log",
    benchmark:
        phase_benchmark("setup", "benchmarks/prepare_data/{dataset}.tsv")
    threads: PLAN.threads_of("data")
    resources:
        **PLAN.res("data"),
    shell:
        "python {input.script:q} --name {wildcards.dataset:q} --dataset-config {params.dataset:q} "
        "--train {output.train:q} --heldout {output.heldout:q} --pairs {output.pairs:q} 2> {log:q}"
