rule train:
    """One training run of a recipe (composition `single`): selected examples × objective × training settings."""
    input:
        **code("train", objective_module),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids=selection_path,
        ref="results/{model}/{dataset}/ref_logprobs.parquet",
        tables=objective_tables,
    output:
        model=directory("results/{model}/{dataset}/runs/{recipe}/model"),
        log="results/{model}/{dataset}/runs/{recipe}/train_log.csv",
    params:
        training=recipe_training,
        objective=recipe_objective,
        checkpoints=run_checkpoints,
        tables=input_table_args,
        launch=train_launcher,
    conda:
        CONDA_ENV
    log:
        "logs/train/{model}/{dataset}/{recipe}.log",
    benchmark:
        phase_benchmark("training", "benchmarks/train/{model}/{dataset}/{recipe}.tsv")
    wildcard_constraints:
        recipe=recipes_composed(*SINGLE_RUN),
    threads: threads_of("train")
    resources:
        **res("train", model=True, resumes=RECIPE_RUN),
    shell:
        "{params.launch:q} {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {input.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective {params.objective:q} "
        "--heldout-ref {input.ref:q} {params.tables:q} "
        "--out {output.model:q} --train-log {output.log:q} --checkpoints {params.checkpoints:q} 2> {log:q}"
