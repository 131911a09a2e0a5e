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
        benchmark=_alternation(set(CFG["benchmarks"]) - set(benchmarks_of_type(*GENERATIVE, "nll"))),
    threads: threads_of("evaluate")
    resources:
        **res("evaluate"),
    shell:
        "HF_DATASETS_OFFLINE=${{HF_DATASETS_OFFLINE:-0}} python {input.script:q} --model-dir {input.model:q} "
        "--benchmark {wildcards.benchmark} --benchmark-config {params.benchmark:q} --heldout {input.heldout:q} --train {input.train:q} "
        "--scores {output.scores:q} --answers {output.answers:q} 2> {log:q}"


def nll_items_input(wildcards):
    """The items an nll benchmark scores: the held-out file, or the exam's test.jsonl."""
    bench = bench_of(wildcards)
    if bench["items"] == "exam":
        return f"{bench['data_dir']}/test.jsonl"
    return f"results/data/{wildcards.dataset}/heldout.jsonl"


rule log_likelihood:
    """Per-item NLL per token of the reference answers (held-out items or an exam's correct options), each item also
    scored under the untrained base model: the held-out loss, the deviation m_θ and the drift from the base."""
    input:
        script=f"{SCRIPTS}/evaluate.py",
        model="results/{model}/{dataset}/runs/{recipe}/model",
        reference="resources/models/{model}",
        data=nll_items_input,
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        benchmark=lambda w: as_json(bench_of(w)),
    wildcard_constraints:
        benchmark=_alternation(benchmarks_of_type("nll")),
    conda:
        CONDA_ENV
    log:
        "logs/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        "benchmarks/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.tsv"
    threads: threads_of("evaluate")
    resources:
        **res("evaluate"),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --benchmark {wildcards.benchmark} "
        "--benchmark-config {params.benchmark:q} --reference-model {input.reference:q} --heldout {input.data:q} "
        "--scores {output.scores:q} --answers {output.answers:q} 2> {log:q}"
