"""Config look-ups and input functions of the LESS / ROSE rules (influence.smk)."""

import hashlib

from sftlab.config import influence_selectors, targeted_selectors
from sftlab.report.selection import draws_fraction_curve
from sftlab.selection.gradient_cost import grad_features_runtime, model_memory_gb

# the selectors that rank by an influence table, and their selection ids (the influence rules' wildcard)
INFLUENCE_SELECTORS = influence_selectors()
INFLUENCE_SELECTOR_ID = f"({PLAN._alternation(INFLUENCE_SELECTORS)})-[^/]+"

WARMUP_EPOCHS = list(range(1, CFG["warmup"]["training"]["epochs"] + 1))
GRAD_SHARDS = list(range(CFG["gradients"]["shards"]))
# the curve compares selectors on equal terms: these selections, with one objective, composition and training
TARGETED_SELECTORS = targeted_selectors()
CURVE_SELECTORS = (*TARGETED_SELECTORS, "random", "full")


def warmup_training():
    """The warmup run: the global training settings under the warmup's own (LESS defaults)."""
    return deep_merge(CFG["training"], CFG["warmup"]["training"])


WARMUP_RUN = Resumable(lambda wildcards: warmup_training())


def warmup_ids(wildcards):
    return PLAN.selection_ids(wildcards.model, wildcards.dataset, PLAN.warmup_selection())


def warmup_checkpoints(wildcards):
    return [f"results/{wildcards.model}/{wildcards.dataset}/warmup/checkpoint-{c}" for c in WARMUP_EPOCHS]


def warmup_dir(wildcards):
    return f"results/{wildcards.model}/{wildcards.dataset}/warmup"


def warmup_trainer_checkpoints(wildcards):
    """The Trainer's own checkpoint-{step} directories, apart from the epoch checkpoints."""
    return f"{warmup_dir(wildcards)}/trainer-checkpoints"


def validation_subtasks(wildcards):
    return CFG["validation"][wildcards.name].get("subtasks", [])


def validation_seed(wildcards):
    return CFG["validation"][wildcards.name]["seed"]


def influence_validation_file(wildcards):
    """The validation set whose gradients a less / rose selector compares with."""
    return validation_path(influence_selection(wildcards)["validation"])


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
    return ["--projection", g["projection"], "--dim", str(g["dim"]), "--seed", str(g["seed"]),
            "--max-tokens", str(g["max_tokens"]), "--cache-mb", str(g["cache_mb"]), "--dtype", g["dtype"],
            "--max-length", str(warmup_training()["max_length"])]


def grad_features_resources():
    """res("grads"); with `gradients.cost`, each job's runtime from the cost model (per model and pool), and a batch
    of max_tokens checked against the GPU's memory before any job starts."""
    g = CFG["gradients"]
    cost = g.get("cost")
    if not cost:
        return PLAN.res("grads", model=True)
    for model in cost["models"]:
        need = model_memory_gb(cost, model, g)
        if need > cost["gpu"]["memory_gb"]:
            raise WorkflowError(f"invalid configuration: config key gradients.max_tokens: a batch of {g['max_tokens']} "
                                f"tokens of {model} needs about {need:.0f} GB, over gradients.cost.gpu.memory_gb "
                                f"{cost['gpu']['memory_gb']}")
    return PLAN.res("grads", model=True, runtime=grad_features_minutes)


def grad_features_minutes(wildcards):
    cost = CFG["gradients"]["cost"]
    try:
        return grad_features_runtime(cost, CFG["gradients"], len(GRAD_SHARDS), wildcards.model, wildcards.dataset)
    except KeyError as exc:
        raise WorkflowError(f"invalid configuration: {exc.args[0]}") from None


def validation_flags(wildcards):
    sel = influence_selection(wildcards)
    kind = SELECTORS[sel["name"]].validation_loss
    return ["--kind", kind, "--shots", str(sel["shots"])] + (["--beta", str(sel["beta"])] if kind == "dpo" else [])


# the report


def comparison_key(recipe):
    """Recipes compared in the curve share everything but the selection (a short digest of the rest)."""
    rest = PLAN.as_json({k: recipe[k] for k in ("objective", "composition", "training")})
    return hashlib.sha256(rest.encode()).hexdigest()[:8]


def curve_runs():
    """Experiment runs in the fraction curve: on a (model, dataset) with a targeted run (less, rose, bm25, dsir, rds,
    rds_plus), the targeted / random / full recipes that share that run's objective, composition and training."""
    runs = PLAN.experiment_runs()
    keys = {(m, d, comparison_key(CFG["recipes"][r])) for (m, d, r) in runs
            if CFG["recipes"][r]["selection"]["name"] in TARGETED_SELECTORS}
    return {(m, d, r): benches for (m, d, r), benches in runs.items()
            if CFG["recipes"][r]["selection"]["name"] in CURVE_SELECTORS
            and (m, d, comparison_key(CFG["recipes"][r])) in keys}


def curve_recipes():
    """recipe → what the report needs to place it: selector id and name, fraction, shots, validation set, group,
    the model that selects (selection.model; None: the trained one)."""
    out = {}
    for (m, d, r) in curve_runs():
        recipe = CFG["recipes"][r]
        sel = recipe["selection"]
        out[r] = {"selector": selector_id(sel), "name": sel["name"], "fraction": sel["fraction"],
                  "shots": sel.get("shots"), "validation": sel.get("validation"),
                  "objective": recipe["objective"]["name"], "group": comparison_key(recipe),
                  "selection_model": sel.get("model")}
    return out


def curve_score_files():
    return PLAN.run_score_files(curve_runs())


def curve_runs_json(wildcards):
    return PLAN.as_json(sorted(curve_runs()))


# the fraction curve only when its axis has two fractions or more (the main table says otherwise)
SELECTION_REPORT = {
    **({"curve": "reports/figures/selection_fraction_curve"} if draws_fraction_curve(curve_recipes()) else {}),
    "shots": "reports/tables/selection_shots",
    "cost": "reports/tables/selection_cost",
    "main": "reports/tables/selection_main",
}


def selection_curve_outputs():
    """The selection report's figure outputs: the fraction curve's, when it is drawn."""
    if "curve" not in SELECTION_REPORT:
        return {}
    return {"curve_png": report(f"{SELECTION_REPORT['curve']}.png", caption="../report/selection_fraction_curve.rst",
                                category="LESS / ROSE", subcategory="Figures"),
            "curve_pdf": f"{SELECTION_REPORT['curve']}.pdf"}


def less_paper_keys():
    """Benchmark name → the key of the LESS paper's numbers: its lm-eval task where it has one, else its name."""
    return {b: CFG["benchmarks"][b].get("task", b) for b in PLAN.report_benchmarks()}


def selection_report_outputs():
    if not curve_runs():
        return []
    curve = [f"{SELECTION_REPORT['curve']}.{ext}" for ext in ("png", "pdf")] if "curve" in SELECTION_REPORT else []
    return curve + [f"{SELECTION_REPORT[t]}.{ext}" for t in ("shots", "cost", "main") for ext in ("md", "csv", "tex")]
