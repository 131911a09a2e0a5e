# LESS and ROSE: warmup LoRA run, per-example gradient features, influence tables, and their report.
#
# validation set ─┐
# warmup (random subset, Adam moments) ─► gradient features per checkpoint × shard ─► gather ─┐
#                 └──────────────► validation features per checkpoint (NTP: less, DPO: rose) ─┴► influence/{selector}.parquet
# The selection itself is the shared `select_data` rule, which reads the influence table (SELECTOR_TABLES).


wildcard_constraints:
    c=r"\d+",
    shard=r"\d+",
    name=PLAN._alternation(CFG["validation"]),


rule validation_set:
    """A LESS/ROSE validation set: the chosen subtasks of a dataset's pairs or examples, seeded order per subtask."""
    input:
        **PLAN.code("validation_set"),
        data=PLAN.validation_source,
    output:
        "results/data/{dataset}/validation/{name}.jsonl",
    params:
        subtasks=PLAN.validation_subtasks,
        seed=PLAN.validation_seed,
    conda:
        CONDA_ENV
    log:
        "logs/validation_set/{dataset}/{name}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/validation_set/{dataset}/{name}.tsv")
    threads: PLAN.threads_of("data")
    resources:
        **PLAN.res("data"),
    shell:
        "python {input.script:q} --data {input.data:q} --subtasks {params.subtasks:q} --seed {params.seed:q} "
        "--out {output:q} 2> {log:q}"


rule warmup:
    """LESS/ROSE warmup: LoRA on a seeded random subset; each epoch's adapter, Adam moments (by name) and mean lr."""
    input:
        **PLAN.code("train", "sftlab.objectives.ntp"),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids=PLAN.warmup_ids,
    output:
        checkpoints=[directory(f"results/{{model}}/{{dataset}}/warmup/checkpoint-{c}") for c in PLAN.warmup_epochs],
        log="results/{model}/{dataset}/warmup/train_log.csv",
    params:
        training=PLAN.as_json(PLAN.warmup_training()),
        warmup_dir=PLAN.warmup_dir,
        # the Trainer's own checkpoint-{step} directories must not mix with the epoch checkpoints
        trainer_checkpoints=PLAN.warmup_trainer_checkpoints,
    conda:
        CONDA_ENV
    log:
        "logs/warmup/{model}/{dataset}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/warmup/{model}/{dataset}.tsv")
    threads: PLAN.threads_of("warmup")
    resources:
        **PLAN.res("warmup", model=True, resumes=PLAN.warmup_run),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {input.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective '{{\"name\": \"ntp\"}}' "
        "--warmup-dir {params.warmup_dir:q} --train-log {output.log:q} "
        "--checkpoints {params.trainer_checkpoints:q} 2> {log:q}"


rule grad_features:
    """Adam-preconditioned, projected per-example gradient features of one shard of the pool at one checkpoint."""
    input:
        **PLAN.code("grad_features"),
        model="resources/models/{model}",
        checkpoint="results/{model}/{dataset}/warmup/checkpoint-{c}",
        data="results/data/{dataset}/train.jsonl",
    output:
        temp("results/{model}/{dataset}/grads/train/checkpoint-{c}/shard-{shard}.pt"),
    params:
        flags=PLAN.gradient_flags(),
        shards=len(PLAN.grad_shards),
    conda:
        CONDA_ENV
    log:
        "logs/grad_features/{model}/{dataset}/train/checkpoint-{c}/shard-{shard}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/grad_features/{model}/{dataset}/train/checkpoint-{c}/shard-{shard}.tsv")
    threads: PLAN.threads_of("grads")
    resources:
        **PLAN.grad_features_resources(),
    shell:
        "python {input.script:q} compute --base-model {input.model:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --kind train --shard {wildcards.shard:q} --shards {params.shards:q} {params.flags:q} "
        "--out {output:q} 2> {log:q}"


rule gather_grad_features:
    """The shards of one checkpoint's training features, concatenated in pool order."""
    input:
        **PLAN.code("grad_features"),
        shards=expand("results/{{model}}/{{dataset}}/grads/train/checkpoint-{{c}}/shard-{shard}.pt", shard=PLAN.grad_shards),
    output:
        "results/{model}/{dataset}/grads/train/checkpoint-{c}.pt",
    conda:
        CONDA_ENV
    log:
        "logs/gather_grad_features/{model}/{dataset}/checkpoint-{c}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/gather_grad_features/{model}/{dataset}/checkpoint-{c}.tsv")
    threads: PLAN.threads_of("influence")
    resources:
        **PLAN.res("influence", model=False),
    shell:
        "python {input.script:q} gather --inputs {input.shards:q} --out {output:q} 2> {log:q}"


rule validation_grad_features:
    """Plain gradient features of a selector's validation items at one checkpoint (NTP: less; DPO, πref = base: rose)."""
    input:
        **PLAN.code("grad_features"),
        model="resources/models/{model}",
        checkpoint="results/{model}/{dataset}/warmup/checkpoint-{c}",
        data=PLAN.influence_validation_file,
    output:
        "results/{model}/{dataset}/grads/{selector}/checkpoint-{c}.pt",
    wildcard_constraints:
        selector=PLAN.selector_id_pattern(influence=True),
    params:
        flags=PLAN.gradient_flags(),
        validation=PLAN.validation_flags,
    conda:
        CONDA_ENV
    log:
        "logs/validation_grad_features/{model}/{dataset}/{selector}/checkpoint-{c}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/validation_grad_features/{model}/{dataset}/{selector}/checkpoint-{c}.tsv")
    threads: PLAN.threads_of("grads")
    resources:
        **PLAN.res("grads", model=True),
    shell:
        "python {input.script:q} compute --base-model {input.model:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} {params.validation:q} {params.flags:q} --out {output:q} 2> {log:q}"


rule influence:
    """Influence of every pool example: lr-weighted cosine over checkpoints, mean within subtask, max over subtasks."""
    input:
        **PLAN.code("influence"),
        train=expand("results/{{model}}/{{dataset}}/grads/train/checkpoint-{c}.pt", c=PLAN.warmup_epochs),
        val=expand("results/{{model}}/{{dataset}}/grads/{{selector}}/checkpoint-{c}.pt", c=PLAN.warmup_epochs),
        checkpoints=PLAN.warmup_checkpoints,
    output:
        "results/{model}/{dataset}/influence/{selector}.parquet",
    wildcard_constraints:
        selector=PLAN.selector_id_pattern(influence=True),
    conda:
        CONDA_ENV
    log:
        "logs/influence/{model}/{dataset}/{selector}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/influence/{model}/{dataset}/{selector}.tsv")
    threads: PLAN.threads_of("influence")
    resources:
        **PLAN.res("influence", model=False),
    shell:
        "python {input.script:q} --train {input.train:q} --val {input.val:q} --checkpoints {input.checkpoints:q} "
        "--out {output:q} 2> {log:q}"


PLAN.PAPER_REPORTS.append(PLAN.selection_report_outputs)


rule selection_report:
    """LESS/ROSE report: target metric against fraction (full data as a line), the shots ablation, the cost per stage."""
    input:
        **PLAN.code("selection_report"),
        scores=PLAN.curve_score_files(),
    output:
        **PLAN.selection_curve_outputs(),
        shots_md=f"{PLAN.selection_report['shots']}.md",
        shots_csv=report(f"{PLAN.selection_report['shots']}.csv", caption="../report/selection_shots.rst",
                         category="LESS / ROSE", subcategory="Tables"),
        shots_tex=f"{PLAN.selection_report['shots']}.tex",
        cost_md=f"{PLAN.selection_report['cost']}.md",
        cost_csv=report(f"{PLAN.selection_report['cost']}.csv", caption="../report/selection_cost.rst",
                        category="LESS / ROSE", subcategory="Tables"),
        cost_tex=f"{PLAN.selection_report['cost']}.tex",
        main_md=f"{PLAN.selection_report['main']}.md",
        main_csv=report(f"{PLAN.selection_report['main']}.csv", caption="../report/selection_main.rst",
                        category="LESS / ROSE", subcategory="Tables"),
        main_tex=f"{PLAN.selection_report['main']}.tex",
    params:
        recipes=PLAN.as_json(PLAN.curve_recipes()),
        benchmarks=PLAN.as_json(PLAN.report_benchmarks()),
        paper_keys=PLAN.as_json(PLAN.less_paper_keys()),
        runs=PLAN.curve_runs_json,
        workflow=PLAN.workflow_json,
        stems=PLAN.as_json(PLAN.selection_report),
        seeds=PLAN.as_json(CFG["_seeds"]),
    conda:
        CONDA_ENV
    log:
        "logs/selection_report.log",
    threads: PLAN.threads_of("report")
    resources:
        **PLAN.res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --recipes {params.recipes:q} "
        "--benchmarks {params.benchmarks:q} --paper-keys {params.paper_keys:q} --runs {params.runs:q} "
        "--workflow {params.workflow:q} "
        "--stems {params.stems:q} --seeds {params.seeds:q} 2> {log:q}"
