"""Config look-ups and input functions shared by every rule. Validation happens here, before planning."""

import json
import os
import re
import shlex

from sftlab.config import (ConfigError, check_shards_fit, deep_merge, fraction_id, prepare, read_yaml, resources,
                           selector_id)
from sftlab.data.prepare import pool_bound
from sftlab import rehearsal
from sftlab.compose.members import COMPOSED, COMPOSITIONS
from sftlab.objectives import build_objective
from sftlab.selection import SELECTORS
from sftlab.training.launch import launch_prefix
from sftlab.report.dag import phase_benchmark

try:
    # Snakemake's own YAML loading keeps the last of two equal keys: re-read each file with a loader that refuses them
    for _configfile in workflow.configfiles:
        read_yaml(_configfile)
    # `--config rehearsal=true`: the config's rehearsal, derived from it here (sftlab.rehearsal)
    CFG = prepare(rehearsal.apply(config))
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

def _recorded_path(path):
    """A workflow path as jobs record it (inputs, params): relative to the working directory when inside it, so that a
    project copied or moved with its results (`cp -a`) keeps its records; absolute otherwise, so that a results tree
    moved on its own keeps them too."""
    rel = os.path.relpath(path)
    return str(path) if rel == ".." or rel.startswith(".." + os.sep) else rel


def _workflow_path(path):
    """Relative config paths: the working directory's if the path exists there, else the workflow's."""
    p = Path(path)
    return str(p) if p.is_absolute() or p.exists() else _recorded_path(ROOT / p)


for _bench in CFG["benchmarks"].values():
    for _key in ("data_dir", "include_path"):
        if _key in _bench:
            _bench[_key] = _workflow_path(_bench[_key])
for _ds in CFG["datasets"].values():
    if _ds["source"] == "local":
        _ds["path"] = _workflow_path(_ds["path"])
for _m in CFG["models"].values():
    if _m["source"] == "local":
        _m["path"] = _workflow_path(_m["path"])
try:
    check_shards_fit(CFG, {name: pool_bound(ds) for name, ds in CFG["datasets"].items()})
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

# Jobs run `python` from PATH: the interpreter running Snakemake comes first (its venv holds sftlab's pins),
# unless --software-deployment-method conda puts the environment of envs/ there instead.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
CONDA_ENV = str(ROOT / "envs" / "sftlab.yaml")
VLLM_ENV = str(ROOT / "envs" / "vllm.yaml")
# scripts import sftlab from the source tree, installed or not (conda environments do not install it)
shell.prefix(f"export PYTHONPATH={shlex.quote(str(ROOT / 'src'))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; ")
SCRIPTS = _recorded_path(ROOT / "scripts")


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!x)x"


wildcard_constraints:
    model=_alternation(CFG["models"]),
    dataset=_alternation(CFG["datasets"]),
    recipe=_alternation(CFG["recipes"]),
    benchmark=_alternation(CFG["benchmarks"]),
    fraction=r"[0-9.e-]+",


def recipes_composed(*names):
    """Alternation of the recipes whose composition is one of ``names``: a rule-level recipe constraint, so that
    the rule writing a single run's model and the rule merging a composed recipe's model never compete."""
    return _alternation([r for r, recipe in CFG["recipes"].items() if recipe["composition"]["name"] in names])


# the compositions, from their registry: one run, members trained on shards (rule disperse), any merged members
SINGLE_RUN = [name for name in COMPOSITIONS if name not in COMPOSED]
SHARDED = [name for name, cls in COMPOSITIONS.items() if cls.shards]


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def workflow_json(wildcards):
    """This run's Snakefile, config files and --config overrides: a report job rebuilds the same DAG from them
    (sftlab.report.dag) to read the jobs' benchmark files."""
    settings = workflow.config_settings
    return as_json({"snakefile": str(workflow.main_snakefile), "configfiles": [str(f) for f in settings.configfiles],
                    "config": dict(settings.config)})


# stages whose rules never use a GPU: a `gpus` in `resources.default` does not reach them
CPU_STAGES = {"data", "model", "select", "report"}


def stage_resources(stage):
    """The config's request of a stage; CPU stages ask for no GPU (naming one for them is a config error)."""
    r = resources(CFG, stage)
    if stage in CPU_STAGES:
        if CFG["resources"].get(stage, {}).get("gpus"):
            raise WorkflowError(f"invalid configuration: config key resources.{stage}.gpus: the {stage} rules run on CPU")
        r["gpus"] = 0
    return r


def _per_attempt(value):
    """A request that grows with each retry (attempt 1, 2, ...): memory and wall time, never GPUs."""
    return lambda wildcards, attempt: value * attempt


def res(stage):
    """Compute request of a stage in Snakemake's resource names (gpu, cpus_per_gpu, mem_mb, runtime).

    mem_mb and runtime (minutes) are multiplied by the attempt, so a job that ran out of either is retried with more
    (the Slurm profile sets `retries`). GPU jobs go to $SFTLAB_SLURM_GPU_PARTITION when that is set.
    """
    r = stage_resources(stage)
    out = {"mem_mb": _per_attempt(r["mem_mb"]), "runtime": _per_attempt(r["runtime"])}
    if r["gpus"]:
        out["gpu"] = r["gpus"]
        out["cpus_per_gpu"] = max(1, r["cpus"] // r["gpus"])
        # optional, so read with get(): an `envvars:` directive would make every run require it
        partition = os.environ.get("SFTLAB_SLURM_GPU_PARTITION")
        if partition:
            out["slurm_partition"] = partition
    return out


ACCELERATE_CONFIGS = Path(_recorded_path(ROOT / "configs" / "accelerate"))


def processes_of(stage):
    """Training processes of a stage's job: `resources.<stage>.processes`, else one per GPU (1 without GPUs)."""
    r = stage_resources(stage)
    n = r.get("processes") or max(1, r["gpus"])
    if r["gpus"] and n != r["gpus"]:
        raise WorkflowError(f"invalid configuration: config key resources.{stage}.processes: {n} processes on "
                            f"{r['gpus']} GPUs; leave it unset for one process per GPU")
    return n


def launcher(stage, training=None, where="training"):
    """Command prefix (a list of arguments) that starts a training script: `python` for one process, else `accelerate launch` with one
    process per GPU under the recipe's `distributed` mode (DDP, FSDP or DeepSpeed ZeRO-3, configs/accelerate/).

    `batch_size` is per process: the global batch is batch_size × gradient_accumulation × processes. The prefix is a
    param of the training rules, so a run with another process count is another run.
    """
    training = training or CFG["training"]
    n = processes_of(stage)
    if n == 1:
        return launch_prefix(1)
    mode = training["distributed"]
    if mode != "ddp" and training["finetuning"] == "lora":
        raise WorkflowError(f"invalid configuration: config key {where}.distributed: {mode} shards full fine-tuning; "
                            f"LoRA runs use ddp")
    try:
        return launch_prefix(n, mode, ACCELERATE_CONFIGS)
    except ModuleNotFoundError as exc:
        raise WorkflowError(f"{where}: {exc}") from None


def threads_of(stage):
    return resources(CFG, stage)["cpus"]


def recipe_of(wildcards):
    return CFG["recipes"][wildcards.recipe]


def experiment_runs():
    """Every (model, dataset, recipe, benchmarks) the experiments ask for, each run once."""
    runs = {}
    for exp in CFG["experiments"].values():
        for m in exp["models"]:
            for d in exp["datasets"]:
                for r in exp["recipes"]:
                    runs.setdefault((m, d, r), set()).update(exp["benchmarks"])
    return runs


def run_dir(model, dataset, recipe):
    return f"results/{model}/{dataset}/runs/{recipe}"


def selection_ids(model, dataset, sel):
    """The ids file of selection ``sel`` (its id from the selector's declared parameters, then the fraction)."""
    return f"results/{model}/{dataset}/selection/{selector_id(sel)}/{fraction_id(sel['fraction'])}.ids"


def selection_path(wildcards):
    return selection_ids(wildcards.model, wildcards.dataset, recipe_of(wildcards)["selection"])


def warmup_selection():
    """The LESS/ROSE warmup subset: the seeded `random` selector at the warmup fraction."""
    return {"name": "random", "fraction": CFG["warmup"]["fraction"], "seed": CFG["warmup"]["seed"]}


def selection_config(wildcards):
    """The selection settings of the selector named in the path (shared by every recipe that names it)."""
    for sel in [recipe["selection"] for recipe in CFG["recipes"].values()] + [warmup_selection()]:
        if selector_id(sel) == wildcards.selector and fraction_id(sel["fraction"]) == wildcards.fraction:
            return sel
    raise WorkflowError(f"no recipe selects {wildcards.selector} at fraction {wildcards.fraction}")


def run_score_files(runs, only=None):
    """The Scores file of each run on each of its benchmarks (``runs``: (model, dataset, recipe) → benchmark names,
    as from experiment_runs), in run order, then by name; ``only``: keep these benchmark names alone."""
    return [f"{run_dir(m, d, r)}/scores/{b}.json" for (m, d, r), benches in runs.items() for b in sorted(benches)
            if only is None or b in only]


def score_files():
    return run_score_files(experiment_runs())


def train_logs():
    return [f"{run_dir(m, d, r)}/train_log.csv" for (m, d, r) in experiment_runs()]


def report_benchmarks():
    seen = []
    for exp in CFG["experiments"].values():
        seen += [b for b in exp["benchmarks"] if b not in seen]
    return seen


def uses_confidence(recipe):
    obj, sel = recipe["objective"], recipe["selection"]
    return (obj["name"] == "sftmix" and obj["pairing"] == "confidence") or "confidence" in SELECTORS[sel["name"]].tables


def tsne_runs(model, dataset):
    """Recipes drawn beside the reference in the t-SNE figure: full-pool NTP and SFTMix runs (the reviewers' figure)."""
    return [r for (m, d, r) in experiment_runs() if (m, d) == (model, dataset)
            and CFG["recipes"][r]["selection"]["name"] == "full"
            and CFG["recipes"][r]["composition"]["name"] == "single"
            and CFG["recipes"][r]["objective"]["name"] in ("ntp", "sftmix")]


def tsne_models(wildcards):
    last = max(REFERENCE_CHECKPOINTS)
    models = {"reference": f"results/{wildcards.model}/{wildcards.dataset}/reference/checkpoint-{last}"}
    for r in tsne_runs(wildcards.model, wildcards.dataset):
        models[r] = f"{run_dir(wildcards.model, wildcards.dataset, r)}/model"
    return models


# Per-paper reports (tables shaped like a paper's, ablations, figures) live in their stage's rule file, which
# appends a function returning the report files it wants built for the current config (possibly none).
PAPER_REPORTS = []


def report_outputs():
    figures = ["loss_curves", "scores"] + [f"tsne_{m}_{d}" for (m, d) in sorted({(m, d) for (m, d, r) in experiment_runs()
                                                                        if uses_confidence(CFG["recipes"][r])})]
    return [f"reports/tables/main.{ext}" for ext in ("md", "csv", "tex")] + [
        f"reports/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")] + [
        path for outputs in PAPER_REPORTS for path in outputs()]


# per-example tables by the batch column / selector table they provide
COLUMN_TABLES = {"ref_logp": "ref_logprobs.parquet", "confident": "confidence.parquet"}
SELECTOR_TABLES = {"confidence": "confidence.parquet", "influence_less": "influence/{selector}.parquet",
                   "influence_rose": "influence/{selector}.parquet"}


def objective_tables(wildcards):
    """Parquet tables the recipe's objective reads per example (e.g. ref_logprobs for MinorSFT)."""
    obj = recipe_of(wildcards)["objective"]
    columns = build_objective(obj["name"], {k: v for k, v in obj.items() if k != "name"}).columns
    return [f"results/{wildcards.model}/{wildcards.dataset}/{COLUMN_TABLES[c]}" for c in columns]


def selector_tables(wildcards):
    """NAME=PATH of the tables the selector of a selection path reads."""
    name = selection_config(wildcards)["name"]
    return {t: f"results/{wildcards.model}/{wildcards.dataset}/{SELECTOR_TABLES[t].format(selector=wildcards.selector)}"
            for t in SELECTORS[name].tables}


def table_args(flag, tables):
    """`flag NAME=PATH ...` (or `flag PATH ...`) as a list of arguments: rules quote each one (`:q`)."""
    if isinstance(tables, dict):
        return [arg for k, v in tables.items() for arg in (flag, f"{k}={v}")]
    return [arg for t in tables for arg in (flag, t)]


def option_args(settings):
    """`--some-key VALUE ...` of a settings mapping, sorted, as a list of arguments (quoted by the rules' `:q`)."""
    return [arg for k, v in sorted(settings.items()) for arg in (f"--{k.replace('_', '-')}", str(v))]


def reference_model(wildcards):
    return f"resources/models/{CFG['reference']['model'] or wildcards.model}"


def reference_training():
    """The reference run: global training settings, then the reference's own; epochs cover the last checkpoint."""
    ref = CFG["reference"]
    cfg = deep_merge(CFG["training"], ref["training"])
    if "epochs" not in ref["training"]:
        cfg["epochs"] = max(ref["checkpoints"])
    cfg["max_steps"] = -1
    return cfg


REFERENCE_CHECKPOINTS = CFG["reference"]["checkpoints"]


# Local files a job reads are its inputs, so that editing one reruns what depends on it (as a changed setting does).
def files_under(path):
    """A local file, or every file under a local directory (a directory's own mtime misses edits inside it)."""
    p = Path(path)
    if p.is_dir():
        return sorted(str(f) for f in p.rglob("*") if f.is_file() and ".cache" not in f.parts)
    return [str(p)]


def local_dataset_files(wildcards):
    ds = CFG["datasets"][wildcards.dataset]
    return files_under(ds["path"]) if ds["source"] == "local" else []


def local_model_files(wildcards):
    m = CFG["models"][wildcards.model]
    return files_under(m["path"]) if m["source"] == "local" else []


# Input functions of the rule files without a *_common.smk of their own (models, data, selection, train), and the
# ones several rule files share (the rules name them instead of holding lambdas).
def model_config(wildcards):
    return as_json(CFG["models"][wildcards.model])


def dataset_config(wildcards):
    return as_json(CFG["datasets"][wildcards.dataset])


def selection_settings(wildcards):
    return as_json(selection_config(wildcards))


def selector_table_files(wildcards):
    return list(selector_tables(wildcards).values())


def selector_table_args(wildcards):
    return table_args("--table", selector_tables(wildcards))


def recipe_training(wildcards):
    return as_json(recipe_of(wildcards)["training"])


def recipe_objective(wildcards):
    return as_json(recipe_of(wildcards)["objective"])


def recipe_max_length(wildcards):
    return recipe_of(wildcards)["training"]["max_length"]


def train_launcher(wildcards):
    return launcher("train", recipe_of(wildcards)["training"], f"recipes.{wildcards.recipe}.training")


def run_checkpoints(wildcards):
    return f"{run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/checkpoints"


def input_table_args(wildcards, input):
    return table_args("--table", input.tables)


def output_stem(name):
    """A params function: output ``name`` without its extension (the scripts write every format of one stem)."""

    def stem(wildcards, output):
        return os.path.splitext(output[name])[0]

    return stem
