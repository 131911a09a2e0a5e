"""Composed recipes: Disperse-Then-Merge (K shards → K sub-models → merge) and the seed soup (full-data runs
with different seeds → merge), and the DTM report. Member runs: see sftlab.compose.members."""

PLAN.PAPER_REPORTS.append(PLAN.dtm_report_files)


rule disperse:
    """Split a DTM recipe's selected examples into K disjoint shards (seeded random, or k-means on responses)."""
    input:
        **PLAN.code("disperse"),
        ids=PLAN.selection_path,
        train="results/data/{dataset}/train.jsonl",
        embedder=PLAN.disperse_embedder,
    output:
        directory("results/{model}/{dataset}/runs/{recipe}/shards/ids"),
    params:
        args=PLAN.disperse_args,
        max_length=PLAN.recipe_max_length,
    conda:
        CONDA_ENV
    log:
        "logs/disperse/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/disperse/{model}/{dataset}/{recipe}.tsv")
    wildcard_constraints:
        recipe=PLAN.recipes_composed(*PLAN.SHARDED),
    threads: PLAN.threads_of("disperse")
    resources:
        **PLAN.res("disperse", model=PLAN.disperse_runs_model),
    shell:
        "python {input.script:q} --ids {input.ids:q} --examples {input.train:q} {params.args:q} "
        "--max-length {params.max_length:q} --out-dir {output:q} 2> {log:q}"


rule train_member:
    """One member run of a composed recipe: a DTM sub-model on its shard, or a seed-soup run with its seed;
    the recipe's objective and training settings otherwise (each member its own job)."""
    input:
        **PLAN.code("train", PLAN.objective_module),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids=PLAN.member_ids,
        ref="results/{model}/{dataset}/ref_logprobs.parquet",
        tables=PLAN.objective_tables,
    output:
        model=directory("results/{model}/{dataset}/runs/{recipe}/{member}/model"),
        log="results/{model}/{dataset}/runs/{recipe}/{member}/train_log.csv",
    params:
        ids=PLAN.member_ids_file,
        training=PLAN.member_training_settings,
        launch=PLAN.train_launcher,
        objective=PLAN.recipe_objective,
        checkpoints=PLAN.member_checkpoints,
        tables=PLAN.input_table_args,
    conda:
        CONDA_ENV
    log:
        "logs/train_member/{model}/{dataset}/{recipe}/{member}.log",
    benchmark:
        phase_benchmark("training", "benchmarks/train_member/{model}/{dataset}/{recipe}/{member}.tsv")
    wildcard_constraints:
        recipe=PLAN.recipes_composed(*COMPOSED),
        member=PLAN.member_pattern,
    threads: PLAN.threads_of("train")
    resources:
        **PLAN.res("train", model=True, resumes=PLAN.member_run),
    shell:
        "{params.launch:q} {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {params.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective {params.objective:q} "
        "--heldout-ref {input.ref:q} {params.tables:q} "
        "--out {output.model:q} --train-log {output.log:q} --checkpoints {params.checkpoints:q} 2> {log:q}"


rule merge:
    """Merge a composed recipe's member runs with mergekit into its model; its training log is the members' mean."""
    input:
        **PLAN.code("merge"),
        base="resources/models/{model}",
        members=PLAN.member_models,
        logs=PLAN.member_logs,
        fisher=PLAN.fisher_inputs,
    output:
        model=directory("results/{model}/{dataset}/runs/{recipe}/model"),
        log="results/{model}/{dataset}/runs/{recipe}/train_log.csv",
    params:
        args=PLAN.merge_args,
    conda:
        CONDA_ENV
    log:
        "logs/merge/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("training", "benchmarks/merge/{model}/{dataset}/{recipe}.tsv")
    wildcard_constraints:
        recipe=PLAN.recipes_composed(*COMPOSED),
    threads: PLAN.threads_of("merge")
    resources:
        **PLAN.res("merge", model=PLAN.merge_runs_model),
    shell:
        "python {input.script:q} {params.args:q} --base-model {input.base:q} --device auto --out {output.model:q} "
        "--member-logs {input.logs:q} --train-log {output.log:q} 2> {log:q}"


rule dtm_report:
    """The DTM report: DTM vs SFT vs seed soup beside the paper's numbers, the merge-method table, and the K figure
    when the DTM runs have two values of K or more (the merge-method table says otherwise)."""
    input:
        **PLAN.code("dtm_report"),
        scores=PLAN.dtm_score_files(),
    output:
        main_md=f"{PLAN.dtm_tables[0]}.md",
        main_csv=report(f"{PLAN.dtm_tables[0]}.csv", caption="../report/dtm_main.rst", category="Disperse-Then-Merge",
                        subcategory="Tables"),
        main_tex=f"{PLAN.dtm_tables[0]}.tex",
        merge_md=f"{PLAN.dtm_tables[1]}.md",
        merge_csv=report(f"{PLAN.dtm_tables[1]}.csv", caption="../report/dtm_merge_methods.rst",
                         category="Disperse-Then-Merge", subcategory="Tables"),
        merge_tex=f"{PLAN.dtm_tables[1]}.tex",
        **PLAN.dtm_figure_outputs(),
    params:
        runs=PLAN.as_json(PLAN.dtm_runs),
        benchmarks=PLAN.as_json(PLAN.dtm_benchmarks()),
        seeds=PLAN.as_json(CFG["_seeds"]),
        main=PLAN.output_stem("main_md"),
        merge=PLAN.output_stem("merge_md"),
        figure=PLAN.dtm_figure_args,
    conda:
        CONDA_ENV
    log:
        "logs/dtm_report.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --runs {params.runs:q} --benchmarks {params.benchmarks:q} "
        "--main-table {params.main:q} --merge-table {params.merge:q} {params.figure:q} --seeds {params.seeds:q} "
        "2> {log:q}"
