rule train:
    """One training run of a recipe (composition `single`): selected examples × objective × training settings."""
    input:
        **PLAN.code("train", PLAN.objective_module),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids=PLAN.selection_path,
        ref="results/{model}/{dataset}/ref_logprobs.parquet",
        tables=PLAN.objective_tables,
    output:
        model=directory("results/{model}/{dataset}/runs/{recipe}/model"),
        log="results/{model}/{dataset}/runs/{recipe}/train_log.csv",
    params:
        training=PLAN.recipe_training,
        objective=PLAN.recipe_objective,
        checkpoints=PLAN.run_checkpoints,
        tables=PLAN.input_table_args,
        launch=PLAN.train_launcher,
        reference=[],
    conda:
        CONDA_ENV
    log:
        "logs/train/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("training", "benchmarks/train/{model}/{dataset}/{recipe}.tsv")
    wildcard_constraints:
        recipe=PLAN.recipes_composed(*PLAN.SINGLE_RUN),
    threads: PLAN.threads_of("train")
    resources:
        **PLAN.res("train", model=True, resumes=PLAN.RECIPE_RUN),
    shell:
        "{params.launch:q} {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {input.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective {params.objective:q} "
        "--heldout-ref {input.ref:q} {params.tables:q} "
        "--out {output.model:q} --train-log {output.log:q} --checkpoints {params.checkpoints:q} {params.reference:q} "
        "2> {log:q}"


# A run that is the same training as its pair's reference run (sftlab.training.spec) saves the reference checkpoints
# too, and no reference_run job trains that pair. Its constraints take every model, dataset and recipe of such runs:
# another run in their product also saves epoch models it does not need (the same training otherwise).
use rule train as train_reference with:
    output:
        model=directory("results/{model}/{dataset}/runs/{recipe}/model"),
        log="results/{model}/{dataset}/runs/{recipe}/train_log.csv",
        reference=[directory(f"results/{{model}}/{{dataset}}/runs/{{recipe}}/reference/checkpoint-{c}")
                   for c in PLAN.REFERENCE_CHECKPOINTS],
    params:
        training=PLAN.recipe_training,
        objective=PLAN.recipe_objective,
        checkpoints=PLAN.run_checkpoints,
        tables=PLAN.input_table_args,
        launch=PLAN.train_launcher,
        reference=PLAN.reference_checkpoint_args,
    log:
        "logs/train_reference/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("training", "benchmarks/train_reference/{model}/{dataset}/{recipe}.tsv")
    wildcard_constraints:
        model=PLAN.reference_run_alternation(0),
        dataset=PLAN.reference_run_alternation(1),
        recipe=PLAN.reference_run_alternation(2),


ruleorder: train_reference > train
