"""Generative benchmarks: MT-Bench, AlpacaEval 2 and judged preference win rates (generate, then judge), and the
judge-free implicit-reward win rate. Their Scores files become columns of the main table like any other benchmark."""


PLAN.check_calibrations()


# it downloads (FastChat, Arena-Hard, google/IFEval, AlpacaEval's set and GLM file): on the login node, as compute
# nodes may have no internet (sftlab.offline)
localrules:
    benchmark_data,
    calibration_data,


rule benchmark_data:
    """A judged benchmark's input files in one place: fixtures, official downloads (FastChat at a pinned commit,
    AlpacaEval 2 from the hub) or a dataset's preference pairs; `limit` applied once for generation and judging."""
    input:
        unpack(PLAN.benchmark_sources),
        **PLAN.code("benchmark_data", PLAN.benchmark_module),
    output:
        directory("results/benchmarks/{benchmark}"),
    params:
        benchmark=PLAN.benchmark_data_settings,
        pairs=PLAN.benchmark_pairs_arg,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_gathered()),
    conda:
        CONDA_ENV
    log:
        "logs/benchmark_data/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/benchmark_data/{benchmark}.tsv")
    threads: PLAN.threads_of("data")
    resources:
        **PLAN.res("data"),
    shell:
        "python {input.script:q} --benchmark-config {params.benchmark:q} {params.pairs:q} --out {output:q} 2> {log:q}"


rule generate:
    """A trained model's answers to a judged benchmark, in the benchmark's own format (MT-Bench model_answer JSONL,
    AlpacaEval model_outputs JSON, preference answers JSONL)."""
    input:
        **PLAN.code("generate", PLAN.benchmark_module),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        data="results/benchmarks/{benchmark}",
    output:
        answers="results/{model}/{dataset}/runs/{recipe}/answers/{benchmark}.{fmt}",
    params:
        kind=PLAN.benchmark_type_name,
        options=PLAN.generation_options,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("judge")),
        fmt=PLAN.answer_formats(),
    conda:
        PLAN.generation_env
    log:
        "logs/generate/{model}/{dataset}/{recipe}/{benchmark}.{fmt}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/generate/{model}/{dataset}/{recipe}/{benchmark}.{fmt}.tsv")
    threads: PLAN.threads_of("generate")
    resources:
        **PLAN.res("generate", model=True),
    shell:
        "python {input.script:q} --benchmark-type {params.kind:q} --model {input.model:q} "
        "--model-id {wildcards.model:q}/{wildcards.dataset:q}/{wildcards.recipe:q} --data {input.data:q} "
        "{params.options:q} --out {output.answers:q} 2> {log:q}"


rule judge:
    """Judge a model's answers → judgments JSONL and the Scores file (with the judge's name and cost). The judgment
    cache is one file per judge shared by every run, a parameter rather than an output: reruns make no judge call."""
    input:
        **PLAN.code("judge", PLAN.benchmark_module),
        answers=PLAN.answers_path,
        data="results/benchmarks/{benchmark}",
        judge_model=PLAN.judge_model_input,
        local=PLAN.local_judge_files,
    output:
        judgments="results/{model}/{dataset}/runs/{recipe}/judgments/{benchmark}.jsonl",
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
    params:
        kind=PLAN.benchmark_type_name,
        judge_name=PLAN.judge_name,
        judge=PLAN.judge_config,
        options=PLAN.judge_options,
        cache=PLAN.judge_cache,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("judge")),
    conda:
        CONDA_ENV
    log:
        "logs/judge/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/judge/{model}/{dataset}/{recipe}/{benchmark}.tsv")
    threads: PLAN.threads_of("judge")
    resources:
        **PLAN.res("judge", model=False),
    shell:
        "python {input.script:q} --benchmark-type {params.kind:q} --benchmark-name {wildcards.benchmark:q} "
        "--data {input.data:q} --answers {input.answers:q} --judge {params.judge:q} --judge-name {params.judge_name:q} "
        "--cache {params.cache:q} {params.options:q} --judgments {output.judgments:q} --scores {output.scores:q} "
        "2> {log:q}"


rule implicit_reward:
    """Judge-free preference win rate: share of test pairs with β·r(y_w) > β·r(y_l), r = log πθ − log πref,
    πref the untrained base model."""
    input:
        **PLAN.code("evaluate", PLAN.benchmark_module),
        model="results/{model}/{dataset}/runs/{recipe}/model",
        reference="resources/models/{model}",
        data="results/benchmarks/{benchmark}",
    output:
        scores="results/{model}/{dataset}/runs/{recipe}/scores/{benchmark}.json",
    params:
        exams=PLAN.implicit_reward_exam,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_scored_by("implicit_reward")),
    conda:
        CONDA_ENV
    log:
        "logs/implicit_reward/{model}/{dataset}/{recipe}/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/implicit_reward/{model}/{dataset}/{recipe}/{benchmark}.tsv")
    threads: PLAN.threads_of("evaluate")
    resources:
        **PLAN.res("evaluate", model=True),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --exams {params.exams:q} 2> {log:q}"


rule calibration_data:
    """A judge calibration's sample of published original-judge judgments (AlpacaEval's leaderboard annotations,
    FastChat's GPT-4 MT-Bench judgments): downloaded and checked against their pinned sha256 (or copied from the
    calibration's data_dir), then sampled with its seed."""
    input:
        local=PLAN.calibration_local_files,
        **PLAN.code("calibration_data"),
    output:
        directory(f"{PLAN.calibration_dir}/{{benchmark}}/published"),
    params:
        kind=PLAN.benchmark_type_name,
        calibration=PLAN.calibration_config,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_calibrated()),
    conda:
        CONDA_ENV
    log:
        "logs/calibration_data/{benchmark}.log",
    threads: PLAN.threads_of("data")
    resources:
        **PLAN.res("data"),
    shell:
        "python {input.script:q} --benchmark-type {params.kind:q} --benchmark-name {wildcards.benchmark:q} "
        "--calibration {params.calibration:q} --out {output:q} 2> {log:q}"


rule judge_calibration:
    """Re-judge the calibration sample with the benchmark's judge (as the benchmark judges: same prompts, annotator
    and cache) → agreement with the original judge: rank correlation over models, per-item agreement, score mapping."""
    input:
        **PLAN.code("judge_calibration", PLAN.benchmark_module),
        sample=f"{PLAN.calibration_dir}/{{benchmark}}/published",
        data="results/benchmarks/{benchmark}",
        judge_model=PLAN.judge_model_input,
        local=PLAN.local_judge_files,
    output:
        rows=f"{PLAN.calibration_dir}/{{benchmark}}/rows.jsonl",
        summary=f"{PLAN.calibration_dir}/{{benchmark}}/summary.json",
    params:
        kind=PLAN.benchmark_type_name,
        judge_name=PLAN.judge_name,
        judge=PLAN.judge_config,
        options=PLAN.calibration_judge_options,
        cache=PLAN.judge_cache,
    wildcard_constraints:
        benchmark=PLAN._alternation(PLAN.benchmarks_calibrated()),
    conda:
        CONDA_ENV
    log:
        "logs/judge_calibration/{benchmark}.log",
    benchmark:
        phase_benchmark("evaluation", "benchmarks/judge_calibration/{benchmark}.tsv")
    threads: PLAN.threads_of("judge")
    resources:
        **PLAN.res("judge", model=False),
    shell:
        "python {input.script:q} --benchmark-type {params.kind:q} --benchmark-name {wildcards.benchmark:q} "
        "--sample {input.sample:q} --data {input.data:q} --judge {params.judge:q} --judge-name {params.judge_name:q} "
        "--cache {params.cache:q} {params.options:q} --rows {output.rows:q} --summary {output.summary:q} 2> {log:q}"


rule judges_table:
    """Which judge scored which benchmark (model, prompt, decoding) and what it cost; each judged run against the
    report baseline, paired over items under one judge."""
    input:
        **PLAN.code("judge_report"),
        scores=PLAN.judged_scores(),
        calibrations=PLAN.calibration_summaries(),
    output:
        md="reports/tables/judges.md",
        csv=report("reports/tables/judges.csv", caption="../report/judges.rst", category="Judged benchmarks",
                   subcategory="Tables"),
        tex="reports/tables/judges.tex",
        comparisons_md="reports/tables/judged_comparisons.md",
        comparisons_csv="reports/tables/judged_comparisons.csv",
        comparisons_tex="reports/tables/judged_comparisons.tex",
        calibration_md="reports/tables/judge_calibration.md",
        calibration_csv="reports/tables/judge_calibration.csv",
        calibration_tex="reports/tables/judge_calibration.tex",
    params:
        baseline=CFG["report"]["baseline"],
    conda:
        CONDA_ENV
    log:
        "logs/judges_table.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --judges-table reports/tables/judges "
        "--comparisons reports/tables/judged_comparisons --baseline {params.baseline:q} "
        "--calibrations {input.calibrations:q} --calibration-table reports/tables/judge_calibration 2> {log:q}"


rule mtbench_categories:
    """MT-Bench mean rating per category, one bar per run, with bootstrap CIs."""
    input:
        **PLAN.code("judge_report"),
        scores=PLAN.mtbench_category_scores(),
    output:
        png=report("reports/figures/mtbench_categories.png", caption="../report/mtbench_categories.rst",
                   category="Judged benchmarks", subcategory="Figures"),
        pdf="reports/figures/mtbench_categories.pdf",
    conda:
        CONDA_ENV
    log:
        "logs/mtbench_categories.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --mtbench-figure reports/figures/mtbench_categories "
        "2> {log:q}"


PLAN.PAPER_REPORTS.append(PLAN.judged_report_files)
