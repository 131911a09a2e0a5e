"""Config look-ups and input functions of the composed recipes' rules (merge.smk): member runs, merge
arguments and the DTM report's runs."""

from sftlab.compose.members import (merge_group_sizes, member_names, member_owner, member_pattern, member_shard,
                                    member_training)
from sftlab.compose.merge import MERGE_METHODS
from sftlab.report.dtm import draws_k_figure, dtm_runs

#: the member runs' directories under runs/{recipe}/, as the compositions declare them
MEMBER_PATTERN = member_pattern()


def composition_of(wildcards):
    return PLAN.recipe_of(wildcards)["composition"]


def shard_ids(wildcards):
    return f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/shards/ids"


def disperse_embedder(wildcards):
    """k-means with the default embedder reads the base model; a random split or a named embedder does not."""
    comp = composition_of(wildcards)
    return [f"resources/models/{wildcards.model}"] if comp["split"] == "kmeans" and "embedder" not in comp else []


def disperse_runs_model(wildcards):
    """k-means embeds the examples with a model; a random split runs none."""
    return composition_of(wildcards)["split"] == "kmeans"


def merge_runs_model(wildcards):
    """Fisher merging backpropagates through each member; the other methods combine tensors."""
    return composition_of(wildcards)["merge"]["method"] == "fisher"


# Parameter functions take the wildcards only: Snakemake records (and compares, for the params rerun trigger)
# only parameters that do not depend on the input files.
def disperse_args(wildcards):
    comp = composition_of(wildcards)
    args = ["--k", str(comp["k"]), "--method", comp["split"], "--seed", str(comp["seed"])]
    if comp["split"] == "kmeans":
        args += ["--embedder", comp["embedder"]] if "embedder" in comp else (
            ["--base-model", disperse_embedder(wildcards)[0]])
    return args


def member_ids(wildcards):
    """What a member run trains on: the shards of the recipe's selection (DTM), or the whole selection (soup)."""
    shard = member_shard(composition_of(wildcards), wildcards.member)
    return shard_ids(wildcards) if shard else PLAN.selection_path(wildcards)


def member_ids_file(wildcards):
    shard = member_shard(composition_of(wildcards), wildcards.member)
    return f"{shard_ids(wildcards)}/{shard}.ids" if shard else PLAN.selection_path(wildcards)


def member_training_settings(wildcards):
    return PLAN.as_json(member_training(PLAN.recipe_of(wildcards), wildcards.member))


MEMBER_RUN = Resumable(lambda wildcards: member_training(PLAN.recipe_of(wildcards), wildcards.member),
                       PLAN.recipe_objective_name)


def member_checkpoints(wildcards):
    return f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/{wildcards.member}/checkpoints"


def member_models(wildcards):
    return [f"{d}/model" for d in member_dirs(wildcards)]


def member_logs(wildcards):
    return [f"{d}/train_log.csv" for d in member_dirs(wildcards)]


def member_dirs(wildcards):
    """The member runs a composed recipe merges, in the directory of the recipe that owns them."""
    owner = PLAN.run_dir(wildcards.model, wildcards.dataset, member_owner(CFG["recipes"], wildcards.recipe))
    return [f"{owner}/{member}" for member in member_names(composition_of(wildcards))]


def fisher_ids(wildcards):
    """Fisher merging: each member's own training ids (a DTM shard, or a seed-soup member's whole selection)."""
    comp = composition_of(wildcards)
    owner = PLAN.run_dir(wildcards.model, wildcards.dataset, member_owner(CFG["recipes"], wildcards.recipe))
    shards = [member_shard(comp, m) for m in member_names(comp)]
    return [f"{owner}/shards/ids/{s}.ids" if s else PLAN.selection_path(wildcards) for s in shards]


def fisher_inputs(wildcards):
    """What Fisher merging reads besides the models: the pool and the members' ids (their shard directory)."""
    if composition_of(wildcards)["merge"]["method"] != "fisher":
        return []
    ids = sorted({os.path.dirname(p) if "/shards/ids/" in p else p for p in fisher_ids(wildcards)})
    return [f"results/data/{wildcards.dataset}/train.jsonl", *ids]


def merge_args(wildcards):
    """The merge inputs (adapter directories in adapter space) and the method's parameters, as arguments."""
    merge = composition_of(wildcards)["merge"]
    leaf = "model/adapter" if merge["merge_space"] == "adapter" else "model"
    inputs = [f"{member}/{leaf}" for member in member_dirs(wildcards)]
    params = {k: merge[k] for k in MERGE_METHODS[merge["method"]].params if k in merge}
    args = ["--inputs", *inputs, "--method", merge["method"], "--merge-space", merge["merge_space"],
            "--seed", str(merge["seed"]), "--params", PLAN.as_json(params)]
    groups = merge_group_sizes(composition_of(wildcards))
    if groups:
        args += ["--groups", PLAN.as_json(groups)]
    if merge["method"] == "fisher":
        args += ["--fisher-examples", fisher_inputs(wildcards)[0], "--fisher-ids", *fisher_ids(wildcards),
                 "--max-length", str(PLAN.recipe_of(wildcards)["training"]["max_length"])]
    return args


DTM_RUNS = dtm_runs(CFG["recipes"], PLAN.experiment_runs())
DTM_TABLES = ["reports/tables/dtm_main", "reports/tables/dtm_merge_methods"]
DTM_FIGURE = "reports/figures/dtm_k_ablation"


def dtm_benchmarks():
    """Benchmark name → the key of the paper's numbers (its lm-eval task where it has one), in report order."""
    runs = PLAN.experiment_runs()
    used = {b for r in DTM_RUNS for b in runs[(r["model"], r["dataset"], r["recipe"])]}
    return {b: CFG["benchmarks"][b].get("task", b) for b in PLAN.report_benchmarks() if b in used}


def dtm_score_files():
    runs = PLAN.experiment_runs()
    return PLAN.run_score_files({key: runs[key] for key in ((r["model"], r["dataset"], r["recipe"]) for r in DTM_RUNS)})


def dtm_figure_outputs():
    """The DTM report's figure outputs: the K figure's, when the DTM runs have two values of K or more."""
    if not (DTM_RUNS and draws_k_figure(DTM_RUNS)):
        return {}
    return {"figure_png": report(f"{DTM_FIGURE}.png", caption="../report/dtm_k_ablation.rst",
                                 category="Disperse-Then-Merge", subcategory="Figures"),
            "figure_pdf": f"{DTM_FIGURE}.pdf"}


def dtm_figure_args(wildcards):
    return ["--k-figure", DTM_FIGURE] if dtm_figure_outputs() else []


def dtm_report_files():
    """The DTM tables, and the K figure when it is drawn."""
    if not DTM_RUNS:
        return []
    figure = [f"{DTM_FIGURE}.{ext}" for ext in ("png", "pdf")] if dtm_figure_outputs() else []
    return [f"{t}.{ext}" for t in DTM_TABLES for ext in ("md", "csv", "tex")] + figure


PLAN.PAPER_REPORTS.append(dtm_report_files)
