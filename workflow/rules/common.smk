"""Config look-ups and input functions shared by every rule. Validation happens here, before planning."""

import copy
import functools
import json
import os
import re

from snakemake_interface_executor_plugins.settings import DeploymentMethod, ExecMode

from sftlab.cluster import (ClusterError, Request, Resumable, check_fits, check_model_gpu, check_runtime, grown,
                            load_cluster)
from sftlab.config import (ConfigError, check_shards_fit, deep_merge, fraction_id, prepare, read_yaml, resources,
                           selection_model, selector_id)
from sftlab.config import CHECKED_ENV, config_digest
from sftlab.config import check_local_files
from sftlab.data.prepare import pool_bound
from sftlab.evaluation.exams import run_benchmarks
from sftlab import rehearsal, run_config
from sftlab.compose.members import COMPOSED, COMPOSITIONS
from sftlab.objectives import (BASELINE_OBJECTIVE, OBJECTIVES, build_objective, paper_objectives,
                               reference_objectives)
from sftlab.benchmarks import BENCHMARK_TYPES
from sftlab import fingerprint
from sftlab.offline import job_shell_prefix
from sftlab.selection import SELECTORS
from sftlab.training.launch import launch_prefix
from sftlab.training.spec import reference_runs, reference_training
from sftlab.report.dag import phase_benchmark
from sftlab.report.gpu_cost import CostModel, load_assumptions

try:
    # Snakemake's own YAML loading keeps the last of two equal keys: re-read each file with a loader that refuses them
    for _configfile in workflow.configfiles:
        read_yaml(_configfile)
    # the config as Snakemake merged it (config files, then --config): what the run's config snapshot records
    RAW_CONFIG = copy.deepcopy(config)
    # `--config rehearsal=true`: the config's rehearsal, derived from it here (sftlab.rehearsal)
    _raw = rehearsal.apply(config)
    # a cluster job inherits this process's environment and parses the config twice more (its job step's Snakemake
    # and srun's): the schema's passes, a quarter of that parse, run again only for a config the planner did not check
    _digest = config_digest(_raw)
    CFG = prepare(_raw, checked=os.environ.get(CHECKED_ENV) == _digest)
    os.environ[CHECKED_ENV] = _digest
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
    try:
        here = p.is_absolute() or p.exists()
    except OSError:  # a name too long for the file system: check_local_files names its key
        here = True
    return str(p) if here else _recorded_path(ROOT / p)


for _bench in CFG["benchmarks"].values():
    for _key in ("data_dir", "include_path"):
        if _key in _bench:
            _bench[_key] = _workflow_path(_bench[_key])
    if "data_dir" in _bench.get("calibration", {}):
        _bench["calibration"]["data_dir"] = _workflow_path(_bench["calibration"]["data_dir"])
for _ds in CFG["datasets"].values():
    if _ds["source"] == "local":
        _ds["path"] = _workflow_path(_ds["path"])
for _m in CFG["models"].values():
    if _m["source"] == "local":
        _m["path"] = _workflow_path(_m["path"])
for _judge in CFG["judges"].values():
    if _judge["type"] == "hf" and _judge["model"] not in CFG["models"]:
        _judge["model"] = _workflow_path(_judge["model"])
try:
    check_local_files(CFG)
    check_shards_fit(CFG, {name: pool_bound(ds) for name, ds in CFG["datasets"].items()})
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None

from sftlab.plan import Plan

# every input, params and resources function of the rules (sftlab.plan)
PLAN = Plan(CFG, root=ROOT, workflow=workflow, fallback=globals())

# Jobs run `python` from PATH: the interpreter running Snakemake comes first (its venv holds sftlab's pins),
# unless --software-deployment-method conda puts the environment of envs/ there instead.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
CONDA_ENV = str(ROOT / "envs" / "sftlab.yaml")
VLLM_ENV = str(ROOT / "envs" / "vllm.yaml")
# scripts import sftlab from the source tree, installed or not (conda environments do not install it); jobs on
# cluster nodes (remote execution) run offline, reading what the login node fetched (sftlab.offline)
shell.prefix(job_shell_prefix(ROOT / "src", offline=workflow.remote_exec))
SCRIPTS = _recorded_path(ROOT / "scripts")


def code(script, variant=None, registries=()):
    """A rule's script and its code's fingerprint file (sftlab.fingerprint), as inputs: an edit reruns the jobs
    when it changes what the script and the sftlab code it reaches mean (the script's own date does not count).
    ``variant``: the module of the registered type a job runs, or a tuple of those where it runs several (a module
    name, a tuple, or a function of the wildcards returning one)."""
    variant_of = variant if callable(variant) else lambda wildcards: variant
    return {"script": ancient(f"{SCRIPTS}/{script}.py"),
            "code": lambda wildcards: code_fingerprint(script, variant_of(wildcards), tuple(registries))}


@functools.cache
def code_fingerprint(script, variant, registries):
    """The fingerprint file, rewritten when it changes where the workflow is planned; elsewhere (a job, a report
    job's DAG, a DAG built through the API in a fresh directory) only written when missing, never rewritten."""
    variants = list(variant) if isinstance(variant, tuple) else [variant] if variant else []
    path = ROOT / "scripts" / f"{script}.py"
    name = f"results/.code/{fingerprint.fingerprint_name(path, variants, registries)}"
    if planning() or not os.path.exists(name):  # elsewhere (a job, a report's DAG) only a missing file is written
        name = str(fingerprint.sync("results/.code", path, variants, registries))
        # written while the DAG is built: Snakemake may have listed results/.code before (its inventory of a folder
        # takes a file it did not list as missing), so record that this one exists
        workflow.iocache.exists_local[name] = True
    return name


def objective_module(wildcards):
    return OBJECTIVES[recipe_objective_name(wildcards)].__module__


def benchmark_module_of(name):
    return BENCHMARK_TYPES[CFG["benchmarks"][name]["type"]].__module__


def benchmark_module(wildcards):
    return benchmark_module_of(wildcards.benchmark)


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


def run_config_snapshot():
    """The config this run plans (sftlab.run_config): its files' digests, the --config overrides, the merged config."""
    return run_config.snapshot(workflow.main_snakefile, workflow.configfiles, workflow.config_settings.config,
                               RAW_CONFIG)


def write_run_config():
    """At the run's start, in the main process only (a job step re-reads the Snakefile and the config files, which
    may have been edited since): the snapshot the cost report describes, rewritten only when it changed."""
    if not workflow.remote_exec:
        run_config.write_snapshot(run_config_snapshot())


def run_config_digest(wildcards):
    """The snapshot's digest: a report describing the config reruns when the config changes."""
    return run_config.digest(run_config_snapshot())


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


def planning():
    """True in the Snakemake process that plans and submits the jobs (a dry run too); False inside a job (Slurm's
    job step) and while a report job rebuilds the DAG (no executor): the plan-time checks run once, there."""
    return workflow.executor_plugin is not None and workflow.exec_mode == ExecMode.DEFAULT


# The cluster's description: $SFTLAB_CLUSTER (a path, absolute or relative to the repository; `none`: no checks),
# which profiles/slurm sets to its cluster.yaml unless it is set; under `--executor slurm` without the profile,
# that same file.
DEFAULT_CLUSTER = ROOT / "profiles" / "slurm" / "cluster.yaml"


@functools.cache
def cluster():
    path = os.environ.get("SFTLAB_CLUSTER")
    if path is None and workflow.executor_plugin is not None and workflow.executor_plugin.name == "slurm":
        path = DEFAULT_CLUSTER
    if path is None or str(path).lower() == "none":
        return None
    try:
        return load_cluster(ROOT / path)
    except ClusterError as exc:
        raise WorkflowError(f"SFTLAB_CLUSTER: {exc}") from None


@functools.cache
def cost_model():
    return CostModel(CFG, load_assumptions())


def partition_of(gpus):
    """The description of the partition a job goes to (None without a description): res() sends GPU jobs to
    $SFTLAB_SLURM_GPU_PARTITION, the profile every job to $SFTLAB_SLURM_PARTITION, else the cluster's default."""
    if cluster() is None:
        return None
    for var in (["SFTLAB_SLURM_GPU_PARTITION"] if gpus else []) + ["SFTLAB_SLURM_PARTITION"]:
        if os.environ.get(var):
            return cluster().partition(os.environ[var], var)
    return cluster().partition(None, "SFTLAB_SLURM_PARTITION")


def res(stage, model=None, resumes=None, runtime=None):
    """Compute request of a stage in Snakemake's resource names (gpu, cpus_per_gpu, nodes, mem_mb, runtime).

    The rules declare here what they run. ``model`` says whether the rule runs a model (True/False, or a function
    of the wildcards; required outside CPU_STAGES), ``resumes`` how its job resumes from checkpoints (a Resumable;
    None if it cannot); ``runtime`` gives the first attempt's minutes per wildcards, instead of
    resources.<stage>.runtime.
    mem_mb and runtime are multiplied by the attempt, so a job that ran out of either is retried with more (the
    Slurm profile sets `retries`), capped at the limits of its partition in the cluster description. A GPU job
    asks for one node (the executor would otherwise spread `--gpus=8` over nodes); GPU jobs go to
    $SFTLAB_SLURM_GPU_PARTITION when that is set. Planning for a cluster (a description), each job is checked
    (sftlab.cluster) before any job starts: a model on a GPU-less request, a request over one node of its
    partition, a predicted runtime over its time limit.
    """
    r = stage_resources(stage)
    if stage in CPU_STAGES:
        model = False
    elif model is None:
        raise WorkflowError(f"res({stage!r}): say whether the rule runs a model (model=True/False)")
    gpus = r["gpus"]
    cpus_per_gpu = max(1, r["cpus"] // gpus) if gpus else 0
    first = Request(stage, gpus, cpus_per_gpu * gpus if gpus else r["cpus"], r["mem_mb"], r["runtime"])

    def limits():
        try:
            return partition_of(gpus)
        except ClusterError as exc:
            raise WorkflowError(f"invalid configuration: {exc}") from None

    def check(request, partition, wildcards, rulename):
        """Planning for a cluster (locally `gpus` only sets the process count, and a CPU-only stage is no mistake)."""
        try:
            if model(wildcards) if callable(model) else model:
                check_model_gpu(request, rulename, CFG)
            check_fits(request, partition, cluster().path)
            resumed = (resumes.training(wildcards), resumes.objective(wildcards)) if resumes else None
            check_runtime(request, rulename, dict(wildcards.items()), cost_model(), resumed)
        except ClusterError as exc:
            raise WorkflowError(f"invalid configuration: {exc}") from None

    def mem_mb(wildcards, attempt):
        partition = limits()
        return grown(first.mem_mb, attempt, partition and partition.mem_mb)

    def job_runtime(wildcards, attempt, rulename):
        """The runtime of this attempt; the job's checks run with it (each time its resources are evaluated)."""
        request = first if runtime is None else Request(stage, gpus, first.cpus, first.mem_mb, runtime(wildcards))
        partition = limits()
        if partition is not None and planning():
            check(request, partition, wildcards, rulename)
        return grown(request.runtime, attempt, partition and partition.time_limit)

    out = {"mem_mb": mem_mb, "runtime": job_runtime}
    if gpus:
        out["gpu"] = gpus
        out["cpus_per_gpu"] = cpus_per_gpu
        out["nodes"] = 1
        # optional, so read with get(): an `envvars:` directive would make every run require it
        partition = os.environ.get("SFTLAB_SLURM_GPU_PARTITION")
        if partition:
            out["slurm_partition"] = partition
    return out


def check_planned_jobs(jobs):
    """Evaluate every planned job's resources, which runs res()'s checks of each (onstart of a real run)."""
    for job in jobs:
        job.resources  # noqa: B018 - a property: reading it evaluates (and checks) the request


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
    return run_benchmarks(CFG)


def run_dir(model, dataset, recipe):
    return f"results/{model}/{dataset}/runs/{recipe}"


def selection_ids(model, dataset, sel):
    """The ids file of selection ``sel`` (its id from the selector's declared parameters, then the fraction)."""
    return f"results/{model}/{dataset}/selection/{selector_id(sel)}/{fraction_id(sel['fraction'])}.ids"


def recipe_selection_ids(model, dataset, recipe):
    """The ids a recipe trains ``model`` on: its selection's, under the selection model (selection.model)."""
    return selection_ids(selection_model(recipe["selection"], model), dataset, recipe["selection"])


def selection_path(wildcards):
    return recipe_selection_ids(wildcards.model, wildcards.dataset, recipe_of(wildcards))


def warmup_selection():
    """The LESS/ROSE warmup subset: the seeded `random` selector at the warmup fraction."""
    return {"name": "random", "fraction": CFG["warmup"]["fraction"], "seed": CFG["warmup"]["seed"]}


def selection_config(wildcards):
    """The selection settings of the selector named in the path (shared by every recipe that names it, whichever
    model it trains: the selection model is the path's {model}, not a setting of the selector)."""
    for sel in [recipe["selection"] for recipe in CFG["recipes"].values()] + [warmup_selection()]:
        if selector_id(sel) == wildcards.selector and fraction_id(sel["fraction"]) == wildcards.fraction:
            return {k: v for k, v in sel.items() if k != "model"}
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


def objective_columns(obj):
    """The per-example columns the objective's batches carry, as its config sets it up."""
    return build_objective(obj["name"], {k: v for k, v in obj.items() if k != "name"}).columns


def uses_confidence(recipe):
    return ("confident" in objective_columns(recipe["objective"])
            or "confidence" in SELECTORS[recipe["selection"]["name"]].tables)


def confidence_pairs():
    """(model, dataset) of every confidence table the runs read: the selection model's (selection.model) on the run's
    dataset."""
    return sorted({(selection_model(CFG["recipes"][r]["selection"], m), d) for (m, d, r) in experiment_runs()
                   if uses_confidence(CFG["recipes"][r])})


def tsne_runs(model, dataset):
    """Recipes drawn beside the reference in the t-SNE figure: full-pool NTP and SFTMix runs (the reviewers' figure)."""
    return [r for (m, d, r) in experiment_runs() if (m, d) == (model, dataset)
            and CFG["recipes"][r]["selection"]["name"] == "full"
            and CFG["recipes"][r]["composition"]["name"] == "single"
            and CFG["recipes"][r]["objective"]["name"] in (BASELINE_OBJECTIVE, *paper_objectives("SFTMix"))]


def tsne_models(wildcards):
    models = {"reference": reference_checkpoints(wildcards.model, wildcards.dataset)[-1]}
    for r in tsne_runs(wildcards.model, wildcards.dataset):
        models[r] = f"{run_dir(wildcards.model, wildcards.dataset, r)}/model"
    return models


# Per-paper reports (tables shaped like a paper's, ablations, figures) live in their stage's rule file, which
# appends a function returning the report files it wants built for the current config (possibly none).
PAPER_REPORTS = []


def report_outputs():
    figures = ["loss_curves", "scores"] + [f"tsne_{m}_{d}" for (m, d) in confidence_pairs()]
    return [f"reports/tables/main.{ext}" for ext in ("md", "csv", "tex")] + [
        f"reports/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")] + [
        path for outputs in PAPER_REPORTS for path in outputs()]


# per-example tables by the batch column / selector table they provide
COLUMN_TABLES = {"ref_logp": "ref_logprobs.parquet", "confident": "confidence.parquet"}
SELECTOR_TABLES = {"confidence": "confidence.parquet", "influence_less": "influence/{selector}.parquet",
                   "influence_rose": "influence/{selector}.parquet",
                   **{name: "similarity/{selector}.parquet" for name in ("bm25", "dsir", "rds", "rds_plus")}}


def objective_tables(wildcards):
    """Parquet tables the recipe's objective reads per example (e.g. ref_logprobs for MinorSFT)."""
    recipe = recipe_of(wildcards)
    columns = objective_columns(recipe["objective"])
    # the confidence split is the selection model's (selection.model); log πref is always the trained model's own
    owner = {"confident": selection_model(recipe["selection"], wildcards.model)}
    return [f"results/{owner.get(c, wildcards.model)}/{wildcards.dataset}/{COLUMN_TABLES[c]}" for c in columns]


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


REFERENCE_CHECKPOINTS = CFG["reference"]["checkpoints"]


def reference_pairs():
    """The (model, dataset) pairs whose runs read the confidence split, so need a reference run."""
    return sorted({(m, d) for (m, d, r) in experiment_runs() if uses_confidence(CFG["recipes"][r])})


# (model, dataset) → the recipe whose run is the same training as the reference run there (sftlab.training.spec): rule
# train_reference trains it once, saving the reference checkpoints too; rule reference_run trains the other pairs
REFERENCE_RUNS = reference_runs(CFG, reference_pairs(), experiment_runs(),
                                {"reference": processes_of("reference"), "train": processes_of("train")})


def reference_checkpoints(model, dataset):
    """The reference checkpoints of a pair: the epoch models of the recipe run that is its reference run, if any."""
    recipe = REFERENCE_RUNS.get((model, dataset))
    where = f"{run_dir(model, dataset, recipe)}/reference" if recipe else f"results/{model}/{dataset}/reference"
    return [f"{where}/checkpoint-{c}" for c in REFERENCE_CHECKPOINTS]


# how the training rules' jobs resume from their checkpoints (res(..., resumes=)): their settings per wildcards
def recipe_objective_name(wildcards):
    return recipe_of(wildcards)["objective"]["name"]


RECIPE_RUN = Resumable(lambda wildcards: recipe_of(wildcards)["training"], recipe_objective_name)
REFERENCE_RUN = Resumable(lambda wildcards: reference_training(CFG))


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
