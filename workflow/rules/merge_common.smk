"""Config look-ups and input functions of the composed recipes' rules (merge.smk): member runs, merge
arguments and the DTM report's runs."""

from sftlab.compose.members import member_names, member_owner, member_training
from sftlab.report.dtm import dtm_runs


def composition_of(wildcards):
    return recipe_of(wildcards)["composition"]


def shard_ids(wildcards):
    return f"{run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/shards/ids"


def disperse_embedder(wildcards):
    """k-means with the default embedder reads the base model; a random split or a named embedder does not."""
    comp = composition_of(wildcards)
    return [f"resources/models/{wildcards.model}"] if comp["split"] == "kmeans" and "embedder" not in comp else []


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
    return shard_ids(wildcards) if wildcards.member.startswith("shards/") else selection_path(wildcards)


def member_ids_file(wildcards):
    if wildcards.member.startswith("shards/"):
        return f"{shard_ids(wildcards)}/{wildcards.member.removeprefix('shards/')}.ids"
    return selection_path(wildcards)


def member_dirs(wildcards):
    """The member runs a composed recipe merges, in the directory of the recipe that owns them."""
    owner = run_dir(wildcards.model, wildcards.dataset, member_owner(CFG["recipes"], wildcards.recipe))
    return [f"{owner}/{member}" for member in member_names(composition_of(wildcards))]


def merge_args(wildcards):
    """The merge inputs (adapter directories in adapter space) and the method's parameters, as arguments."""
    merge = composition_of(wildcards)["merge"]
    suffix = "/model/adapter" if merge["merge_space"] == "adapter" else "/model"
    inputs = [member + suffix for member in member_dirs(wildcards)]
    params = {k: merge[k] for k in ("weights", "density", "lambda") if k in merge}
    return ["--inputs", *inputs, "--method", merge["method"], "--merge-space", merge["merge_space"],
            "--seed", str(merge["seed"]), "--params", as_json(params)]


DTM_RUNS = dtm_runs(CFG["recipes"], experiment_runs())
DTM_TABLES = ["reports/tables/dtm_main", "reports/tables/dtm_merge_methods"]
DTM_FIGURE = "reports/figures/dtm_k_ablation"


def dtm_benchmarks():
    """Benchmark name → the key of the paper's numbers (its lm-eval task where it has one), in report order."""
    runs = experiment_runs()
    used = {b for r in DTM_RUNS for b in runs[(r["model"], r["dataset"], r["recipe"])]}
    return {b: CFG["benchmarks"][b].get("task", b) for b in report_benchmarks() if b in used}


def dtm_score_files():
    runs = experiment_runs()
    return [f"{run_dir(r['model'], r['dataset'], r['recipe'])}/scores/{b}.json"
            for r in DTM_RUNS for b in sorted(runs[(r["model"], r["dataset"], r["recipe"])])]


def dtm_report_files():
    if not DTM_RUNS:
        return []
    return [f"{t}.{ext}" for t in DTM_TABLES for ext in ("md", "csv", "tex")] + [
        f"{DTM_FIGURE}.{ext}" for ext in ("png", "pdf")]


PAPER_REPORTS.append(dtm_report_files)
