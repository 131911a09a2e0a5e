"""Look-ups of the cost report (cost.smk): the jobs the experiments plan, each with the papers it serves."""

from snakemake.io import strip_wildcard_constraints

from sftlab.compose.members import member_names, member_owner
from sftlab.report.cost import planned_jobs

# the rules with a benchmark file, in pipeline order, and the phase each belongs to
COST_PHASES = {
    "materialise_model": "setup", "prepare_data": "setup", "ref_logprobs": "setup",
    "validation_set": "method preparation", "reference_run": "method preparation", "confidence": "method preparation",
    "select_data": "method preparation", "warmup": "method preparation", "grad_features": "method preparation",
    "gather_grad_features": "method preparation", "validation_grad_features": "method preparation",
    "influence": "method preparation", "disperse": "method preparation",
    "train": "training", "train_member": "training", "merge": "training",
    "benchmark_data": "evaluation", "evaluate": "evaluation", "generate": "evaluation", "judge": "evaluation",
    "implicit_reward": "evaluation", "base_log_likelihood": "evaluation", "log_likelihood": "evaluation",
    "tsne": "figures",
}
# the papers a recipe draws on, in report order (a combined recipe draws on several; a plain one is the SFT baseline)
COST_PAPERS = ["SFT", "SFTMix", "MinorSFT", "LESS / ROSE", "Disperse-Then-Merge"]
COST_TABLES = {"pipeline": "reports/tables/cost", "papers": "reports/tables/cost_papers"}
# the reference run trains on the whole pool: the input `selection/full/1.ids` of rule reference_run
REFERENCE_SELECTION = {"selector": "full", "fraction": "1"}


def recipe_papers(name):
    """The papers whose method a recipe uses (its row in cost_papers); none of them: the SFT baseline."""
    recipe = CFG["recipes"][name]
    papers = []
    if recipe["objective"]["name"] == "sftmix" or uses_confidence(recipe):
        papers.append("SFTMix")
    if recipe["objective"]["name"] in ("minorsft", "dpo_sft"):
        papers.append("MinorSFT")
    if recipe["selection"]["name"] in INFLUENCE_SELECTORS:
        papers.append("LESS / ROSE")
    if recipe["composition"]["name"] != "single":
        papers.append("Disperse-Then-Merge")
    return papers or ["SFT"]


def _selection_wildcards(sel):
    return {"selector": selector_id(sel), "fraction": fraction_id(sel["fraction"])}


def _run_jobs(add, m, d, r):
    """The jobs that make and score run (m, d, r), each told that it serves recipe r."""
    recipe = CFG["recipes"][r]
    comp, sel = recipe["composition"], recipe["selection"]
    add("materialise_model", model=m)
    add("prepare_data", dataset=d)
    add("ref_logprobs", model=m, dataset=d)  # every training job reads πref log-probs (held-out deviation)
    add("select_data", model=m, dataset=d, **_selection_wildcards(sel))
    if uses_confidence(recipe):
        add("materialise_model", model=CFG["reference"]["model"] or m)
        for job in ("reference_run", "confidence", "tsne"):
            add(job, model=m, dataset=d)
        add("select_data", model=m, dataset=d, **REFERENCE_SELECTION)
    if sel["name"] in INFLUENCE_SELECTORS:
        s, validation = selector_id(sel), CFG["validation"][sel["validation"]]
        add("prepare_data", dataset=validation["dataset"])
        add("validation_set", dataset=validation["dataset"], name=sel["validation"])
        add("warmup", model=m, dataset=d)
        add("select_data", model=m, dataset=d, **_selection_wildcards(warmup_selection()))
        for c in WARMUP_EPOCHS:
            for shard in GRAD_SHARDS:
                add("grad_features", model=m, dataset=d, c=c, shard=shard)
            add("gather_grad_features", model=m, dataset=d, c=c)
            add("validation_grad_features", model=m, dataset=d, selector=s, c=c)
        add("influence", model=m, dataset=d, selector=s)
    if comp["name"] == "single":
        add("train", model=m, dataset=d, recipe=r)
    else:
        owner = member_owner(CFG["recipes"], r)  # recipes that differ by their merge only share the members
        if comp["name"] in SHARDED:
            add("disperse", model=m, dataset=d, recipe=owner)
        for member in member_names(comp):
            add("train_member", model=m, dataset=d, recipe=owner, member=member)
        add("merge", model=m, dataset=d, recipe=r)


def _benchmark_jobs(add, m, d, r, b):
    bench, kind = CFG["benchmarks"][b], type_of(b)
    if kind.gathers_files:
        add("benchmark_data", benchmark=b)
    if "dataset" in bench:
        add("prepare_data", dataset=bench["dataset"])
    if not kind.judged:
        add(kind.scored_by, model=m, dataset=d, recipe=r, benchmark=b)
        if kind.base_scored_by:
            add(kind.base_scored_by, model=m, dataset=d, benchmark=b)
        return
    add("generate", model=m, dataset=d, recipe=r, benchmark=b, fmt=kind.answer_format)
    add("judge", model=m, dataset=d, recipe=r, benchmark=b)
    judge = CFG["judges"][bench["judge"]]
    if judge["type"] == "hf" and judge["model"] in CFG["models"]:
        add("materialise_model", model=judge["model"])


def cost_report_files():
    return [f"{stem}.{ext}" for stem in COST_TABLES.values() for ext in ("md", "csv", "tex")]


def cost_plan_json(wildcards):
    return as_json(COST_PLAN)


def rule_gpus(spec):
    """GPUs a rule's jobs request (its `resources: gpu`, set by res() for GPU stages), 0 without."""
    return int(spec.resources["gpu"].value) if "gpu" in spec.resources else 0


def cost_plan():
    """Every job with a benchmark file that the experiments plan — worked out with the functions the rules use —
    and the papers whose recipes it serves; with each rule's benchmark and kept output patterns and GPU request.

    Jobs of a rule serving the same papers form one entry holding only their wildcard values (the rule lists the
    names once): the plan travels on the command line, which holds at most 128 KiB."""
    served = {}
    for (m, d, r), benches in experiment_runs().items():

        def add(job, **wildcards):
            key = (job, tuple(sorted((k, str(v)) for k, v in wildcards.items())))
            served.setdefault(key, set()).update(recipe_papers(r))

        _run_jobs(add, m, d, r)
        for b in sorted(benches):
            _benchmark_jobs(add, m, d, r, b)
    rules, entries = {}, {}
    for (job, wildcards), papers in sorted(served.items(), key=lambda kv: (list(COST_PHASES).index(kv[0][0]), kv[0][1])):
        if job not in rules:
            spec = workflow.get_rule(job)
            rules[job] = {"benchmark": strip_wildcard_constraints(str(spec.benchmark)), "phase": COST_PHASES[job],
                          "outputs": [strip_wildcard_constraints(str(o)) for o in spec.output if not o.is_temp],
                          "gpus": rule_gpus(spec), "wildcards": [k for k, _ in wildcards]}
        entry = entries.setdefault((job, tuple(p for p in COST_PAPERS if p in papers)), [])
        entry.append([v for _, v in wildcards])
    jobs = [{"rule": job, "papers": list(papers), "wildcards": values} for (job, papers), values in entries.items()]
    return {"rules": rules, "jobs": jobs, "papers": COST_PAPERS, "phases": list(dict.fromkeys(COST_PHASES.values()))}
