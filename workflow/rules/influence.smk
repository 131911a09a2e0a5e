"""LESS and ROSE: warmup LoRA run, per-example gradient features, influence tables, and their report.

validation set ─┐
warmup (random subset, Adam moments) ─► gradient features per checkpoint × shard ─► gather ─┐
                └──────────────► validation features per checkpoint (NTP: less, DPO: rose) ─┴► influence/{selector}.parquet
The selection itself is the shared `select_data` rule, which reads the influence table (SELECTOR_TABLES).
"""

import hashlib

from sftlab.config import INFLUENCE_SELECTORS

WARMUP_EPOCHS = list(range(1, CFG["warmup"]["training"]["epochs"] + 1))
GRAD_SHARDS = list(range(CFG["gradients"]["shards"]))
# the curve compares selectors on equal terms: these selections, with one objective, composition and training
CURVE_SELECTORS = ("less", "rose", "random", "full")


wildcard_constraints:
    c=r"\d+",
    shard=r"\d+",
    name=_alternation(CFG["validation"]),


def warmup_training():
    """The warmup run: the global training settings under the warmup's own (LESS defaults)."""
    return deep_merge(CFG["training"], CFG["warmup"]["training"])


def warmup_ids(wildcards):
    sel = warmup_selection()
    return (f"results/{wildcards.model}/{wildcards.dataset}/selection/"
            f"{selector_id(sel)}/{fraction_id(sel['fraction'])}.ids")


def warmup_checkpoints(wildcards):
    return [f"results/{wildcards.model}/{wildcards.dataset}/warmup/checkpoint-{c}" for c in WARMUP_EPOCHS]


def influence_selection(wildcards):
    """The less / rose selection named by a selector id (any of its fractions: they share the influence table)."""
    for recipe in CFG["recipes"].values():
        sel = recipe["selection"]
        if sel["name"] in INFLUENCE_SELECTORS and selector_id(sel) == wildcards.selector:
            return sel
    raise WorkflowError(f"no recipe selects with {wildcards.selector}")


def validation_path(name):
    return f"results/data/{CFG['validation'][name]['dataset']}/validation/{name}.jsonl"


def validation_source(wildcards):
    vset = CFG["validation"][wildcards.name]
    if vset["dataset"] != wildcards.dataset:
        raise WorkflowError(f"validation set {wildcards.name} comes from dataset {vset['dataset']}, not {wildcards.dataset}")
    return f"results/data/{wildcards.dataset}/{vset['split']}.jsonl"


def gradient_flags():
    """Command-line settings of every gradient-feature job (also its params: a change reruns the features)."""
    g = CFG["gradients"]
    return (f"--dim {g['dim']} --seed {g['seed']} --batch-size {g['batch_size']} --project-batch {g['project_batch']} "
            f"--cache-mb {g['cache_mb']} --dtype {g['dtype']} --max-length {warmup_training()['max_length']}")


def validation_flags(wildcards):
    sel = influence_selection(wildcards)
    kind = "dpo" if sel["name"] == "rose" else "ntp"
    return f"--kind {kind} --shots {sel['shots']}" + (f" --beta {sel['beta']}" if kind == "dpo" else "")


rule validation_set:
    """A LESS/ROSE validation set: the chosen subtasks of a dataset's pairs or examples, seeded order per subtask."""
    input:
        script=f"{SCRIPTS}/validation_set.py",
        data=validation_source,
    output:
        "results/data/{dataset}/validation/{name}.jsonl",
    params:
        subtasks=lambda w: " ".join(shlex.quote(s) for s in CFG["validation"][w.name].get("subtasks", [])),
        seed=lambda w: CFG["validation"][w.name]["seed"],
    conda:
        CONDA_ENV
    log:
        "logs/validation_set/{dataset}/{name}.log",
    threads: threads_of("data")
    resources:
        **res("data"),
    shell:
        "python {input.script:q} --data {input.data:q} --subtasks {params.subtasks} --seed {params.seed} "
        "--out {output:q} 2> {log:q}"


rule warmup:
    """LESS/ROSE warmup: LoRA on a seeded random subset; each epoch's adapter, Adam moments (by name) and mean lr."""
    input:
        script=f"{SCRIPTS}/train.py",
        model="resources/models/{model}",
        train="results/data/{dataset}/train.jsonl",
        heldout="results/data/{dataset}/heldout.jsonl",
        ids=warmup_ids,
    output:
        checkpoints=[directory(f"results/{{model}}/{{dataset}}/warmup/checkpoint-{c}") for c in WARMUP_EPOCHS],
        log="results/{model}/{dataset}/warmup/train_log.csv",
    params:
        training=as_json(warmup_training()),
        warmup_dir=lambda w: f"results/{w.model}/{w.dataset}/warmup",
        # the Trainer's own checkpoint-{step} directories must not mix with the epoch checkpoints
        trainer_checkpoints=lambda w: f"results/{w.model}/{w.dataset}/warmup/trainer-checkpoints",
    conda:
        CONDA_ENV
    log:
        "logs/warmup/{model}/{dataset}.log",
    benchmark:
        "benchmarks/warmup/{model}/{dataset}.tsv"
    threads: threads_of("warmup")
    resources:
        **res("warmup"),
    shell:
        "python {input.script:q} --model-dir {input.model:q} --train {input.train:q} --ids {input.ids:q} "
        "--heldout {input.heldout:q} --training {params.training:q} --objective '{{\"name\": \"ntp\"}}' "
        "--warmup-dir {params.warmup_dir:q} --train-log {output.log:q} "
        "--checkpoints {params.trainer_checkpoints:q} 2> {log:q}"


rule grad_features:
    """Adam-preconditioned, projected per-example gradient features of one shard of the pool at one checkpoint."""
    input:
        script=f"{SCRIPTS}/grad_features.py",
        model="resources/models/{model}",
        checkpoint="results/{model}/{dataset}/warmup/checkpoint-{c}",
        data="results/data/{dataset}/train.jsonl",
    output:
        temp("results/{model}/{dataset}/grads/train/checkpoint-{c}/shard-{shard}.pt"),
    params:
        flags=gradient_flags(),
        shards=len(GRAD_SHARDS),
    conda:
        CONDA_ENV
    log:
        "logs/grad_features/{model}/{dataset}/train/checkpoint-{c}/shard-{shard}.log",
    benchmark:
        "benchmarks/grad_features/{model}/{dataset}/train/checkpoint-{c}/shard-{shard}.tsv"
    threads: threads_of("grads")
    resources:
        **res("grads"),
    shell:
        "python {input.script:q} compute --base-model {input.model:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} --kind train --shard {wildcards.shard} --shards {params.shards} {params.flags} "
        "--out {output:q} 2> {log:q}"


rule gather_grad_features:
    """The shards of one checkpoint's training features, concatenated in pool order."""
    input:
        script=f"{SCRIPTS}/grad_features.py",
        shards=expand("results/{{model}}/{{dataset}}/grads/train/checkpoint-{{c}}/shard-{shard}.pt", shard=GRAD_SHARDS),
    output:
        "results/{model}/{dataset}/grads/train/checkpoint-{c}.pt",
    conda:
        CONDA_ENV
    log:
        "logs/gather_grad_features/{model}/{dataset}/checkpoint-{c}.log",
    benchmark:
        "benchmarks/gather_grad_features/{model}/{dataset}/checkpoint-{c}.tsv"
    threads: threads_of("influence")
    resources:
        **res("influence"),
    shell:
        "python {input.script:q} gather --inputs {input.shards:q} --out {output:q} 2> {log:q}"


rule validation_grad_features:
    """Plain gradient features of a selector's validation items at one checkpoint (NTP: less; DPO, πref = base: rose)."""
    input:
        script=f"{SCRIPTS}/grad_features.py",
        model="resources/models/{model}",
        checkpoint="results/{model}/{dataset}/warmup/checkpoint-{c}",
        data=lambda w: validation_path(influence_selection(w)["validation"]),
    output:
        "results/{model}/{dataset}/grads/{selector}/checkpoint-{c}.pt",
    wildcard_constraints:
        selector=r"(less|rose)-[^/]+",
    params:
        flags=gradient_flags(),
        validation=validation_flags,
    conda:
        CONDA_ENV
    log:
        "logs/validation_grad_features/{model}/{dataset}/{selector}/checkpoint-{c}.log",
    benchmark:
        "benchmarks/validation_grad_features/{model}/{dataset}/{selector}/checkpoint-{c}.tsv"
    threads: threads_of("grads")
    resources:
        **res("grads"),
    shell:
        "python {input.script:q} compute --base-model {input.model:q} --checkpoint {input.checkpoint:q} "
        "--data {input.data:q} {params.validation} {params.flags} --out {output:q} 2> {log:q}"


rule influence:
    """Influence of every pool example: lr-weighted cosine over checkpoints, mean within subtask, max over subtasks."""
    input:
        script=f"{SCRIPTS}/influence.py",
        train=expand("results/{{model}}/{{dataset}}/grads/train/checkpoint-{c}.pt", c=WARMUP_EPOCHS),
        val=expand("results/{{model}}/{{dataset}}/grads/{{selector}}/checkpoint-{c}.pt", c=WARMUP_EPOCHS),
        checkpoints=warmup_checkpoints,
    output:
        "results/{model}/{dataset}/influence/{selector}.parquet",
    wildcard_constraints:
        selector=r"(less|rose)-[^/]+",
    conda:
        CONDA_ENV
    log:
        "logs/influence/{model}/{dataset}/{selector}.log",
    benchmark:
        "benchmarks/influence/{model}/{dataset}/{selector}.tsv"
    threads: threads_of("influence")
    resources:
        **res("influence"),
    shell:
        "python {input.script:q} --train {input.train:q} --val {input.val:q} --checkpoints {input.checkpoints:q} "
        "--out {output:q} 2> {log:q}"


# ----------------------------------------------------------------------------- report


def comparison_key(recipe):
    """Recipes compared in the curve share everything but the selection (a short digest of the rest)."""
    rest = as_json({k: recipe[k] for k in ("objective", "composition", "training")})
    return hashlib.sha256(rest.encode()).hexdigest()[:8]


def curve_runs():
    """Experiment runs in the fraction curve: on a (model, dataset) with a less / rose run, the less / rose /
    random / full recipes that share that run's objective, composition and training settings."""
    runs = experiment_runs()
    keys = {(m, d, comparison_key(CFG["recipes"][r])) for (m, d, r) in runs
            if CFG["recipes"][r]["selection"]["name"] in INFLUENCE_SELECTORS}
    return {(m, d, r): benches for (m, d, r), benches in runs.items()
            if CFG["recipes"][r]["selection"]["name"] in CURVE_SELECTORS
            and (m, d, comparison_key(CFG["recipes"][r])) in keys}


def curve_recipes():
    """recipe → what the report needs to place it: selector id and name, fraction, shots, validation set, group."""
    out = {}
    for (m, d, r) in curve_runs():
        recipe = CFG["recipes"][r]
        sel = recipe["selection"]
        out[r] = {"selector": selector_id(sel), "name": sel["name"], "fraction": sel["fraction"],
                  "shots": sel.get("shots"), "validation": sel.get("validation"),
                  "objective": recipe["objective"]["name"], "group": comparison_key(recipe)}
    return out


def curve_score_files():
    return [f"{run_dir(m, d, r)}/scores/{b}.json" for (m, d, r), benches in curve_runs().items() for b in sorted(benches)]


STAGE_OF_RULE = {"warmup": "warmup", "grad_features": "grads", "gather_grad_features": "influence",
                 "validation_grad_features": "grads", "influence": "influence", "select_data": "select", "train": "train"}


def benchmark_file(rule, model, dataset, rest=""):
    """A rule's Snakemake benchmark file, with the GPUs its job requested (for GPU-hours)."""
    return {"path": f"benchmarks/{rule}/{model}/{dataset}{rest}.tsv", "gpus": resources(CFG, STAGE_OF_RULE[rule])["gpus"]}


def influence_fractions(model, dataset):
    """selector id → fraction ids of the less / rose runs of the curve on (model, dataset)."""
    out = {}
    for (m, d, r) in curve_runs():
        sel = CFG["recipes"][r]["selection"]
        if (m, d) == (model, dataset) and sel["name"] in INFLUENCE_SELECTORS:
            out.setdefault(selector_id(sel), set()).add(fraction_id(sel["fraction"]))
    return {s: sorted(f) for s, f in sorted(out.items())}


def cost_groups():
    """Per model × dataset and stage: the benchmark files of its jobs and the outputs it stores."""
    groups = []
    for m, d in sorted({(m, d) for (m, d, r) in curve_runs()}):
        base = f"results/{m}/{d}"

        def add(stage, item, benchmarks, outputs):
            groups.append({"model": m, "dataset": d, "stage": stage, "item": item, "benchmarks": benchmarks,
                           "outputs": outputs})

        add("warmup", "pool", [benchmark_file("warmup", m, d)], [f"{base}/warmup/checkpoint-{c}" for c in WARMUP_EPOCHS])
        add("gradient features", "pool",
            [benchmark_file("grad_features", m, d, f"/train/checkpoint-{c}/shard-{s}") for c in WARMUP_EPOCHS
             for s in GRAD_SHARDS] + [benchmark_file("gather_grad_features", m, d, f"/checkpoint-{c}") for c in WARMUP_EPOCHS],
            [f"{base}/grads/train/checkpoint-{c}.pt" for c in WARMUP_EPOCHS])
        for s, fractions in influence_fractions(m, d).items():
            add("gradient features", s,
                [benchmark_file("validation_grad_features", m, d, f"/{s}/checkpoint-{c}") for c in WARMUP_EPOCHS],
                [f"{base}/grads/{s}/checkpoint-{c}.pt" for c in WARMUP_EPOCHS])
            add("selection", s,
                [benchmark_file("influence", m, d, f"/{s}")] + [benchmark_file("select_data", m, d, f"/{s}/{f}") for f in fractions],
                [f"{base}/influence/{s}.parquet"] + [f"{base}/selection/{s}/{f}.ids" for f in fractions])
        for r in sorted(r for (mm, dd, r) in curve_runs() if (mm, dd) == (m, d)):
            add("final training", r, [benchmark_file("train", m, d, f"/{r}")], [f"{run_dir(m, d, r)}/model"])
    return groups


def cost_files():
    return sorted({b["path"] for g in cost_groups() for b in g["benchmarks"]} | {o for g in cost_groups() for o in g["outputs"]})


SELECTION_REPORT = {
    "curve": "reports/figures/selection_fraction_curve",
    "shots": "reports/tables/selection_shots",
    "cost": "reports/tables/selection_cost",
}


def selection_report_outputs():
    if not curve_runs():
        return []
    return ([f"{SELECTION_REPORT['curve']}.{ext}" for ext in ("png", "pdf")]
            + [f"{SELECTION_REPORT[t]}.{ext}" for t in ("shots", "cost") for ext in ("md", "csv", "tex")])


PAPER_REPORTS.append(selection_report_outputs)


rule selection_report:
    """LESS/ROSE report: target metric against fraction (full data as a line), the shots ablation, the cost per stage."""
    input:
        script=f"{SCRIPTS}/selection_report.py",
        scores=curve_score_files(),
        costs=cost_files(),
    output:
        curve_png=report(f"{SELECTION_REPORT['curve']}.png", caption="../report/selection_fraction_curve.rst",
                         category="LESS / ROSE"),
        curve_pdf=f"{SELECTION_REPORT['curve']}.pdf",
        shots_md=f"{SELECTION_REPORT['shots']}.md",
        shots_csv=f"{SELECTION_REPORT['shots']}.csv",
        shots_tex=f"{SELECTION_REPORT['shots']}.tex",
        cost_md=f"{SELECTION_REPORT['cost']}.md",
        cost_csv=report(f"{SELECTION_REPORT['cost']}.csv", caption="../report/selection_cost.rst",
                        category="LESS / ROSE"),
        cost_tex=f"{SELECTION_REPORT['cost']}.tex",
    params:
        recipes=as_json(curve_recipes()),
        benchmarks=as_json(report_benchmarks()),
        costs=as_json(cost_groups()),
        stems=as_json(SELECTION_REPORT),
    conda:
        CONDA_ENV
    log:
        "logs/selection_report.log",
    threads: threads_of("report")
    resources:
        **res("report"),
    shell:
        "python {input.script:q} --scores {input.scores:q} --recipes {params.recipes:q} "
        "--benchmarks {params.benchmarks:q} --costs {params.costs:q} --stems {params.stems:q} 2> {log:q}"
