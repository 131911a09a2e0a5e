include: "benchmarks.smk"


rule evaluate:
    """Score one trained model on one benchmark (exact match on held-out items, or an lm-eval exam)."""
    input:
        script=f"{SCRIPTS}/evaluate.py",
        model="results/{model}/{dataset}/runs/{recipe}/model",
        heldout="results/data/{dataset}/heldout.jsonl",
        train="results/data/{dataset}/train.jsonl",
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        benchmark=lambda w: as_json(CFG["benchmarks"][w.benchmark]),
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        "benchmarks/evaluate/{model}/{dataset}/{recipe}/{benchmark}.tsv"
    wildcard_constraints:
        benchmark=_alternation(set(CFG["benchmarks"]) - set(benchmarks_of_type(*GENERATIVE))),
    threads: threads_of("evaluate")
    resources:
        **res("evaluate"),
    shell:
        "HF_DATASETS_OFFLINE=${{HF_DATASETS_OFFLINE:-0}} python {input.script:q} --model-dir {input.model:q} "
        "--benchmark {wildcards.benchmark:q} --benchmark-config {params.benchmark:q} --heldout {input.heldout:q} --train {input.train:q} "
        "--scores {output.scores:q} --answers {output.answers:q} 2> {log:q}"
