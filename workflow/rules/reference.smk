rule ref_logprobs:
    """log πref(y|x) of every training and held-out example under the untrained model, computed once (MinorSFT, DPO-SFT, deviation)."""
    input:
        **PLAN.code("ref_logprobs"),
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
    output:
        "results/{model}/{dataset}/ref_logprobs.parquet",
    params:
        max_length=PLAN.ref_logprobs_max_length,
        training=PLAN.ref_logprobs_training,
        processes=PLAN.ref_logprobs_processes,
    log:
        "logs/ref_logprobs/{model}/{dataset}.log",
    benchmark:
        phase_benchmark("setup", "benchmarks/ref_logprobs/{model}/{dataset}.tsv")
    conda:
        CONDA_ENV
    threads: PLAN.threads_of("score")
    resources:
        **PLAN.res("score", model=True),
    shell:
        "python {input.script:q} --model {input.model:q} --data {input.train:q} {input.heldout:q} "
        "--out {output:q} --max-length {params.max_length:q} --training {params.training:q} "
        "--processes {params.processes:q} 2> {log:q}"


rule reference_run:
    """SFTMix's reference run: NTP on the full pool, a loadable checkpoint at the end of each chosen epoch (where no
    recipe run is the same training: rule train_reference)."""
    input:
        **PLAN.code("train", "sftlab.objectives.ntp"),
        model=PLAN.reference_model,
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids="results/{model}/{dataset}/selection/full/1.ids",
    output:
        checkpoints=[directory(f"results/{{model}}/{{dataset}}/reference/checkpoint-{c}") for c in PLAN.REFERENCE_CHECKPOINTS],
        log="results/{model}/{dataset}/reference/train_log.csv",
    params:
        training=PLAN.as_json(reference_training(CFG)),
        epochs=[str(c) for c in PLAN.REFERENCE_CHECKPOINTS],
        out_dir=PLAN.reference_dir,
        trainer_checkpoints=PLAN.reference_trainer_checkpoints,
        launch=PLAN.launcher("reference", reference_training(CFG), "reference.training"),
    log:
        "logs/reference_run/{model}/{dataset}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/reference_run/{model}/{dataset}.tsv")
    conda:
        CONDA_ENV
    threads: PLAN.threads_of("reference")
    resources:
        **PLAN.res("reference", model=True, resumes=PLAN.REFERENCE_RUN),
    shell:
        "{params.launch:q} {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {input.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective '{{\"name\": \"ntp\"}}' "
        "--epoch-models {params.out_dir:q} --save-epochs {params.epochs:q} --train-log {output.log:q} "
        "--checkpoints {params.trainer_checkpoints:q} 2> {log:q}"


rule confidence:
    """Confidence of every training example from the reference checkpoints' perplexities; the median split."""
    input:
        **PLAN.code("confidence"),
        checkpoints=PLAN.reference_checkpoint_dirs,
        train="results/data/{dataset}/train.jsonl",
    output:
        table="results/{model}/{dataset}/confidence.parquet",
        png=report("reports/figures/confidence_{model}_{dataset}.png", caption="../report/confidence.rst",
                   category="SFTMix", subcategory="Figures"),
        pdf="reports/figures/confidence_{model}_{dataset}.pdf",
    params:
        max_length=CFG["training"]["max_length"],
    log:
        "logs/confidence/{model}/{dataset}.log",
    benchmark:
        phase_benchmark("method preparation", "benchmarks/confidence/{model}/{dataset}.tsv")
    conda:
        CONDA_ENV
    threads: PLAN.threads_of("score")
    resources:
        **PLAN.res("score", model=True),
    shell:
        "python {input.script:q} --checkpoints {input.checkpoints:q} --data {input.train:q} --out {output.table:q} "
        "--histogram-png {output.png:q} --histogram-pdf {output.pdf:q} --max-length {params.max_length:q} 2> {log:q}"


rule tsne:
    """t-SNE of mean-pooled response hidden states, coloured by confidence split: the reference and each NTP / SFTMix run."""
    input:
        **PLAN.code("tsne"),
        models=PLAN.tsne_model_dirs,
        train="results/data/{dataset}/train.jsonl",
        confidence="results/{model}/{dataset}/confidence.parquet",
    output:
        png=report("reports/figures/tsne_{model}_{dataset}.png", caption="../report/tsne.rst", category="SFTMix",
                   subcategory="Figures"),
        pdf="reports/figures/tsne_{model}_{dataset}.pdf",
    params:
        models=PLAN.tsne_model_args,
        max_length=CFG["training"]["max_length"],
        sample=CFG["reference"]["tsne_sample"],
        seed=CFG["reference"]["tsne_seed"],
    log:
        "logs/tsne/{model}/{dataset}.log",
    benchmark:
        phase_benchmark("figures", "benchmarks/tsne/{model}/{dataset}.tsv")
    conda:
        CONDA_ENV
    threads: PLAN.threads_of("score")
    resources:
        **PLAN.res("score", model=True),
    shell:
        "python {input.script:q} {params.models:q} --data {input.train:q} --confidence {input.confidence:q} "
        "--png {output.png:q} --pdf {output.pdf:q} --max-length {params.max_length:q} --sample {params.sample:q} "
        "--seed {params.seed:q} 2> {log:q}"
