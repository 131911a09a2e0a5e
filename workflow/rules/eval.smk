include: "benchmarks.smk"


rule evaluate:
    """Score one trained model on one benchmark in-process (exact match on held-out items, lm-eval tasks, ...: the
    benchmark types whose `scored_by` is evaluate)."""
    input:
        unpack(evaluate_inputs),
        **code("evaluate", benchmark_module),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        local=local_benchmark_files,
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        benchmark=benchmark_config,
        inputs=evaluate_input_args,
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/evaluate/{model}/{dataset}/{recipe}/{benchmark}.tsv")
    wildcard_constraints:
        benchmark=_alternation(benchmarks_scored_by("evaluate")),
    threads: threads_of("evaluate")
    resources:
        **res("evaluate", model=True),
    # HF_UPDATE_DOWNLOAD_COUNTS=0: no usage ping (an HTTP HEAD that `datasets` sends on every load_dataset, even of
    # local files, waiting up to 3 s where the network is firewalled)
    shell:
        "HF_DATASETS_OFFLINE=${{HF_DATASETS_OFFLINE:-0}} HF_UPDATE_DOWNLOAD_COUNTS=0 python {input.script:q} "
        "--model-dir {input.model:q} "
        "--benchmark {wildcards.benchmark:q} --benchmark-config {params.benchmark:q} {params.inputs:q} "
        "--scores {output.scores:q} --answers {output.answers:q} 2> {log:q}"


rule log_likelihood:
    """Per-item NLL per token of the reference answers (held-out items or an exam's correct options), beside each
    item's log-prob under the untrained base model: the held-out loss, the deviation m_θ and the drift from the base."""
    input:
        **code("evaluate", benchmark_module),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        base="results/{model}/{dataset}/base_logprobs/{benchmark}.parquet",
        data=scored_items,
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        benchmark=benchmark_config,
    wildcard_constraints:
        benchmark=_alternation(benchmarks_scored_by("log_likelihood")),
    conda:
        CONDA_ENV
    log:
        "logs/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.tsv")
    threads: threads_of("evaluate")
    resources:
        **res("evaluate", model=True),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --benchmark {wildcards.benchmark:q} "
        "--benchmark-config {params.benchmark:q} --input base={input.base:q} --input items={input.data:q} "
        "--scores {output.scores:q} --answers {output.answers:q} 2> {log:q}"


rule base_log_likelihood:
    """The log-likelihood benchmark's items under the untrained base model, once per model × dataset for all the runs
    scored on them (rule log_likelihood reads them)."""
    input:
        **code("base_log_likelihood"),
        model="resources/models/{model}",
        data=scored_items,
    output:
        "results/{model}/{dataset}/base_logprobs/{benchmark}.parquet",
    params:
        settings=base_scoring_settings,
    wildcard_constraints:
        benchmark=_alternation(benchmarks_scored_by("log_likelihood")),
    conda:
        CONDA_ENV
    log:
        "logs/base_log_likelihood/{model}/{dataset}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/base_log_likelihood/{model}/{dataset}/{benchmark}.tsv")
    threads: threads_of("evaluate")
    resources:
        **res("evaluate", model=True),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --benchmark-config {params.settings:q} "
        "--items {input.data:q} --out {output:q} 2> {log:q}"
