# a copy of one exam's results out of its run's evaluate job: no cluster job of its own
localrules:
    exam_results,


rule evaluate:
    """Score one trained model on all its exams scored in-process (exact match on held-out items, lm-eval tasks, ...:
    the benchmark types whose `scored_by` is evaluate), the model loaded once. A change to one exam's settings reruns
    the job, which takes the other exams' results from the run's exam_cache where nothing they depend on changed
    (sftlab.evaluation.exams)."""
    input:
        **PLAN.code("evaluate", PLAN.exam_modules),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        pool=PLAN.exams_pool_files,
        data=PLAN.exams_gathered_files,
        local=PLAN.exams_local_files,
    output:
        directory("results/{model}/{dataset}/runs/{recipe}/exams"),
    params:
        exams=PLAN.exams_arg,
        cache=PLAN.exam_cache_dir,
    conda:
        CONDA_ENV
    log:
        "logs/evaluate/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/evaluate/{model}/{dataset}/{recipe}.tsv")
    threads: PLAN.threads_of("evaluate")
    resources:
        **PLAN.res("evaluate", model=True),
    # HF_UPDATE_DOWNLOAD_COUNTS=0: no usage ping (an HTTP HEAD that `datasets` sends on every load_dataset, even of
    # local files, waiting up to 3 s where the network is firewalled)
    shell:
        "HF_DATASETS_OFFLINE=${{HF_DATASETS_OFFLINE:-0}} HF_UPDATE_DOWNLOAD_COUNTS=0 python {input.script:q} "
        "--model-dir {input.model:q} --exams {params.exams:q} --cache {params.cache:q} 2> {log:q}"


rule exam_results:
    """One exam's Scores file and answers, from its run's evaluate job."""
    input:
        PLAN.run_exams_dir,
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        scores=PLAN.exam_file("scores"),
        answers=PLAN.exam_file("answers"),
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("evaluate")),
    conda:
        CONDA_ENV
    log:
        "logs/exam_results/{model}/{dataset}/{recipe}/{benchmark}.log",
    threads: 1
    resources:
        **PLAN.res("report"),
    shell:
        "(cp {params.scores:q} {output.scores:q} && cp {params.answers:q} {output.answers:q}) 2> {log:q}"


rule log_likelihood:
    """Per-item NLL per token of the reference answers (held-out items or an exam's correct options), beside each
    item's log-prob under the untrained base model: the held-out loss, the deviation m_θ and the drift from the base."""
    input:
        **PLAN.code("evaluate", PLAN.benchmark_module),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        base="results/{model}/{dataset}/base_logprobs/{benchmark}.parquet",
        data=PLAN.scored_items,
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.jsonl",
    params:
        exams=PLAN.log_likelihood_exam_arg,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("log_likelihood")),
    conda:
        CONDA_ENV
    log:
        "logs/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/log_likelihood/{model}/{dataset}/{recipe}/{benchmark}.tsv")
    threads: PLAN.threads_of("evaluate")
    resources:
        **PLAN.res("evaluate", model=True),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --exams {params.exams:q} 2> {log:q}"


rule base_log_likelihood:
    """The log-likelihood benchmark's items under the untrained base model, once per model × dataset for all the runs
    scored on them (rule log_likelihood reads them)."""
    input:
        **PLAN.code("base_log_likelihood"),
        model="resources/models/{model}",
        data=PLAN.scored_items,
    output:
        "results/{model}/{dataset}/base_logprobs/{benchmark}.parquet",
    params:
        settings=PLAN.base_scoring_settings,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("log_likelihood")),
    conda:
        CONDA_ENV
    log:
        "logs/base_log_likelihood/{model}/{dataset}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/base_log_likelihood/{model}/{dataset}/{benchmark}.tsv")
    threads: PLAN.threads_of("evaluate")
    resources:
        **PLAN.res("evaluate", model=True),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --benchmark-config {params.settings:q} "
        "--items {input.data:q} --out {output:q} 2> {log:q}"
