"""The plan's config look-ups, run directories, resources and the cluster's checks, code fingerprints."""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.io import ancient
from snakemake_interface_executor_plugins.settings import ExecMode

from sftlab import fingerprint, run_config
from sftlab.benchmarks import BENCHMARK_TYPES
from sftlab.cluster import (ClusterError, Request, Resumable, check_fits, check_model_gpu, check_runtime, grown,
                            load_cluster)
from sftlab.compose.members import COMPOSED, COMPOSITIONS
from sftlab.config import fraction_id, resources, selection_model, selector_id
from sftlab.evaluation.exams import run_benchmarks
from sftlab.objectives import BASELINE_OBJECTIVE, OBJECTIVES, build_objective, paper_objectives
from sftlab.plan.load import recorded_path
from sftlab.report.gpu_cost import CostModel, load_assumptions
from sftlab.selection import SELECTORS
from sftlab.training.launch import launch_prefix
from sftlab.training.spec import reference_runs, reference_training


def _invalid(exc: Exception) -> WorkflowError:
    return WorkflowError(f"invalid configuration: {exc}")


class CorePlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""

    #: the config as Snakemake merged it (config files, then --config), before its checks: what the run's config
    #: snapshot records (set by the Snakefile)
    raw_config: dict | None = None

    #: stages whose rules never use a GPU: a `gpus` in `resources.default` does not reach them
    CPU_STAGES = frozenset({"data", "model", "select", "report"})
    #: the compositions, from their registry: one run, members trained on shards (rule disperse)
    SINGLE_RUN = [name for name in COMPOSITIONS if name not in COMPOSED]
    SHARDED = [name for name, cls in COMPOSITIONS.items() if cls.shards]
    #: per-example tables by the batch column / selector table they provide
    COLUMN_TABLES = {"ref_logp": "ref_logprobs.parquet", "confident": "confidence.parquet"}
    SELECTOR_TABLES = {"confidence": "confidence.parquet", "influence_less": "influence/{selector}.parquet",
                       "influence_rose": "influence/{selector}.parquet",
                       **{name: "similarity/{selector}.parquet" for name in ("bm25", "dsir", "rds", "rds_plus")}}

    # --- the workflow's files ---------------------------------------------------------------------------------------

    @functools.cached_property
    def SCRIPTS(self) -> str:  # noqa: N802 - the rule files' name
        return recorded_path(self.root / "scripts")

    @functools.cached_property
    def CONDA_ENV(self) -> str:  # noqa: N802 - the rule files' name
        """sftlab's conda environment (`--sdm conda`); vLLM generation has its own, VLLM_ENV."""
        return str(self.root / "envs" / "sftlab.yaml")

    @functools.cached_property
    def VLLM_ENV(self) -> str:  # noqa: N802
        return str(self.root / "envs" / "vllm.yaml")

    @functools.cached_property
    def ACCELERATE_CONFIGS(self) -> Path:  # noqa: N802
        return Path(recorded_path(self.root / "configs" / "accelerate"))

    @functools.cached_property
    def DEFAULT_CLUSTER(self) -> Path:  # noqa: N802
        """The cluster description under `--executor slurm` when $SFTLAB_CLUSTER is unset (the profile's)."""
        return self.root / "profiles" / "slurm" / "cluster.yaml"

    def code(self, script, variant=None, registries=()):
        """A rule's script and its code's fingerprint file (sftlab.fingerprint), as inputs: an edit reruns the jobs
        when it changes what the script and the sftlab code it reaches mean (the script's own date does not count).
        ``variant``: the module of the registered type a job runs, or a tuple of those where it runs several (a module
        name, a tuple, or a function of the wildcards returning one)."""
        variant_of = variant if callable(variant) else lambda wildcards: variant
        return {"script": ancient(f"{self.SCRIPTS}/{script}.py"),
                "code": lambda wildcards: self.code_fingerprint(script, variant_of(wildcards), tuple(registries))}

    def code_fingerprint(self, script, variant, registries):
        """The fingerprint file, rewritten when it changes where the workflow is planned; elsewhere (a job, a report
        job's DAG, a DAG built through the API in a fresh directory) only written when missing, never rewritten.
        Once per plan and (script, variant, registries)."""
        key = (script, variant, registries)
        cache = self.__dict__.setdefault("_fingerprints", {})
        if key not in cache:
            variants = list(variant) if isinstance(variant, tuple) else [variant] if variant else []
            path = self.root / "scripts" / f"{script}.py"
            name = f"results/.code/{fingerprint.fingerprint_name(path, variants, registries)}"
            if self.planning() or not os.path.exists(name):
                name = str(fingerprint.sync("results/.code", path, variants, registries))
                # written while the DAG is built: Snakemake may have listed results/.code before (its inventory of a
                # folder takes a file it did not list as missing), so record that this one exists
                if self.workflow is not None:
                    self.workflow.iocache.exists_local[name] = True
            cache[key] = name
        return cache[key]

    def objective_module(self, wildcards):
        return OBJECTIVES[self.recipe_objective_name(wildcards)].__module__

    def benchmark_module_of(self, name):
        return BENCHMARK_TYPES[self.cfg["benchmarks"][name]["type"]].__module__

    def benchmark_module(self, wildcards):
        return self.benchmark_module_of(wildcards.benchmark)

    # --- wildcards and params -----------------------------------------------------------------------------------------

    @staticmethod
    def _alternation(names):
        """A regex matching exactly one of ``names`` (longest first); one that matches nothing for no names."""
        return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!x)x"

    def recipes_composed(self, *names):
        """Alternation of the recipes whose composition is one of ``names``: a rule-level recipe constraint, so that
        the rule writing a single run's model and the rule merging a composed recipe's model never compete."""
        return self._alternation([r for r, recipe in self.cfg["recipes"].items()
                                  if recipe["composition"]["name"] in names])

    @staticmethod
    def as_json(obj):
        return json.dumps(obj, sort_keys=True)

    @staticmethod
    def table_args(flag, tables):
        """`flag NAME=PATH ...` (or `flag PATH ...`) as a list of arguments: rules quote each one (`:q`)."""
        if isinstance(tables, dict):
            return [arg for k, v in tables.items() for arg in (flag, f"{k}={v}")]
        return [arg for t in tables for arg in (flag, t)]

    @staticmethod
    def option_args(settings):
        """`--some-key VALUE ...` of a settings mapping, sorted, as a list of arguments (quoted by the rules' `:q`)."""
        return [arg for k, v in sorted(settings.items()) for arg in (f"--{k.replace('_', '-')}", str(v))]

    @staticmethod
    def output_stem(name):
        """A params function: output ``name`` without its extension (the scripts write every format of one stem)."""

        def stem(wildcards, output):
            return os.path.splitext(output[name])[0]

        return stem

    # --- the run's config ---------------------------------------------------------------------------------------------

    def workflow_json(self, wildcards):
        """This run's Snakefile, config files and --config overrides: a report job rebuilds the same DAG from them
        (sftlab.report.dag) to read the jobs' benchmark files."""
        settings = self.workflow.config_settings
        return self.as_json({"snakefile": str(self.workflow.main_snakefile),
                             "configfiles": [str(f) for f in settings.configfiles], "config": dict(settings.config)})

    def run_config_snapshot(self):
        """The config this run plans (sftlab.run_config): its files' digests, the --config overrides, the merged config."""
        return run_config.snapshot(self.workflow.main_snakefile, self.workflow.configfiles,
                                   self.workflow.config_settings.config, self.raw_config)

    def write_run_config(self):
        """At the run's start, in the main process only (a job step re-reads the Snakefile and the config files, which
        may have been edited since): the snapshot the cost report describes, rewritten only when it changed."""
        if not self.workflow.remote_exec:
            run_config.write_snapshot(self.run_config_snapshot())

    def run_config_digest(self, wildcards):
        """The snapshot's digest: a report describing the config reruns when the config changes."""
        return run_config.digest(self.run_config_snapshot())

    # --- resources and the cluster's checks ---------------------------------------------------------------------------

    def stage_resources(self, stage):
        """The config's request of a stage; CPU stages ask for no GPU (naming one for them is a config error)."""
        r = resources(self.cfg, stage)
        if stage in self.CPU_STAGES:
            if self.cfg["resources"].get(stage, {}).get("gpus"):
                raise WorkflowError(f"invalid configuration: config key resources.{stage}.gpus: "
                                    f"the {stage} rules run on CPU")
            r["gpus"] = 0
        return r

    def planning(self):
        """True in the Snakemake process that plans and submits the jobs (a dry run too); False inside a job (Slurm's
        job step), while a report job rebuilds the DAG (no executor) and without a workflow: the plan-time checks
        run once, there."""
        return (self.workflow is not None and self.workflow.executor_plugin is not None
                and self.workflow.exec_mode == ExecMode.DEFAULT)

    @functools.cached_property
    def _cluster(self):
        executor = self.workflow.executor_plugin if self.workflow is not None else None
        path = os.environ.get("SFTLAB_CLUSTER")
        if path is None and executor is not None and executor.name == "slurm":
            path = self.DEFAULT_CLUSTER
        if path is None or str(path).lower() == "none":
            return None
        try:
            return load_cluster(self.root / path)
        except ClusterError as exc:
            raise WorkflowError(f"SFTLAB_CLUSTER: {exc}") from None

    def cluster(self):
        """The cluster's description: $SFTLAB_CLUSTER (a path, absolute or relative to the repository; `none`: no
        checks), which profiles/slurm sets to its cluster.yaml unless it is set; under `--executor slurm` without the
        profile, that same file (DEFAULT_CLUSTER). None: no description, no checks."""
        return self._cluster

    @functools.cached_property
    def _cost_model(self):
        return CostModel(self.cfg, load_assumptions())

    def cost_model(self):
        return self._cost_model

    def partition_of(self, gpus):
        """The description of the partition a job goes to (None without a description): res() sends GPU jobs to
        $SFTLAB_SLURM_GPU_PARTITION, the profile every job to $SFTLAB_SLURM_PARTITION, else the cluster's default."""
        cluster = self.cluster()
        if cluster is None:
            return None
        for var in (["SFTLAB_SLURM_GPU_PARTITION"] if gpus else []) + ["SFTLAB_SLURM_PARTITION"]:
            if os.environ.get(var):
                return cluster.partition(os.environ[var], var)
        return cluster.partition(None, "SFTLAB_SLURM_PARTITION")

    def res(self, stage, model=None, resumes=None, runtime=None):
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
        r = self.stage_resources(stage)
        if stage in self.CPU_STAGES:
            model = False
        elif model is None:
            raise WorkflowError(f"res({stage!r}): say whether the rule runs a model (model=True/False)")
        gpus = r["gpus"]
        cpus_per_gpu = max(1, r["cpus"] // gpus) if gpus else 0
        first = Request(stage, gpus, cpus_per_gpu * gpus if gpus else r["cpus"], r["mem_mb"], r["runtime"])

        def limits():
            try:
                return self.partition_of(gpus)
            except ClusterError as exc:
                raise _invalid(exc) from None

        def check(request, partition, wildcards, rulename):
            """Planning for a cluster (locally `gpus` only sets the process count, and a CPU-only stage is no
            mistake)."""
            try:
                if model(wildcards) if callable(model) else model:
                    check_model_gpu(request, rulename, self.cfg)
                check_fits(request, partition, self.cluster().path)
                resumed = (resumes.training(wildcards), resumes.objective(wildcards)) if resumes else None
                check_runtime(request, rulename, dict(wildcards.items()), self.cost_model(), resumed)
            except ClusterError as exc:
                raise _invalid(exc) from None

        def mem_mb(wildcards, attempt):
            partition = limits()
            return grown(first.mem_mb, attempt, partition and partition.mem_mb)

        def job_runtime(wildcards, attempt, rulename):
            """The runtime of this attempt; the job's checks run with it (each time its resources are evaluated)."""
            request = first if runtime is None else Request(stage, gpus, first.cpus, first.mem_mb, runtime(wildcards))
            partition = limits()
            if partition is not None and self.planning():
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

    @staticmethod
    def check_planned_jobs(jobs):
        """Evaluate every planned job's resources, which runs res()'s checks of each (onstart of a real run)."""
        for job in jobs:
            job.resources  # noqa: B018 - a property: reading it evaluates (and checks) the request

    def processes_of(self, stage):
        """Training processes of a stage's job: `resources.<stage>.processes`, else one per GPU (1 without GPUs)."""
        r = self.stage_resources(stage)
        n = r.get("processes") or max(1, r["gpus"])
        if r["gpus"] and n != r["gpus"]:
            raise WorkflowError(f"invalid configuration: config key resources.{stage}.processes: {n} processes on "
                                f"{r['gpus']} GPUs; leave it unset for one process per GPU")
        return n

    def launcher(self, stage, training=None, where="training"):
        """Command prefix (a list of arguments) that starts a training script: `python` for one process, else
        `accelerate launch` with one process per GPU under the recipe's `distributed` mode (DDP, FSDP or DeepSpeed
        ZeRO-3, configs/accelerate/).

        `batch_size` is per process: the global batch is batch_size × gradient_accumulation × processes. The prefix is
        a param of the training rules, so a run with another process count is another run.
        """
        training = training or self.cfg["training"]
        n = self.processes_of(stage)
        if n == 1:
            return launch_prefix(1)
        mode = training["distributed"]
        if mode != "ddp" and training["finetuning"] == "lora":
            raise WorkflowError(f"invalid configuration: config key {where}.distributed: {mode} shards full "
                                f"fine-tuning; LoRA runs use ddp")
        try:
            return launch_prefix(n, mode, self.ACCELERATE_CONFIGS)
        except ModuleNotFoundError as exc:
            raise WorkflowError(f"{where}: {exc}") from None

    def threads_of(self, stage):
        return resources(self.cfg, stage)["cpus"]

    # --- runs and their paths -----------------------------------------------------------------------------------------

    def recipe_of(self, wildcards):
        return self.cfg["recipes"][wildcards.recipe]

    def experiment_runs(self):
        """Every (model, dataset, recipe, benchmarks) the experiments ask for, each run once."""
        return run_benchmarks(self.cfg)

    @staticmethod
    def run_dir(model, dataset, recipe):
        return f"results/{model}/{dataset}/runs/{recipe}"

    @staticmethod
    def selection_ids(model, dataset, sel):
        """The ids file of selection ``sel`` (its id from the selector's declared parameters, then the fraction)."""
        return f"results/{model}/{dataset}/selection/{selector_id(sel)}/{fraction_id(sel['fraction'])}.ids"

    def recipe_selection_ids(self, model, dataset, recipe):
        """The ids a recipe trains ``model`` on: its selection's, under the selection model (selection.model)."""
        return self.selection_ids(selection_model(recipe["selection"], model), dataset, recipe["selection"])

    def selection_path(self, wildcards):
        return self.recipe_selection_ids(wildcards.model, wildcards.dataset, self.recipe_of(wildcards))

    def warmup_selection(self):
        """The LESS/ROSE warmup subset: the seeded `random` selector at the warmup fraction."""
        return {"name": "random", "fraction": self.cfg["warmup"]["fraction"], "seed": self.cfg["warmup"]["seed"]}

    def selection_config(self, wildcards):
        """The selection settings of the selector named in the path (shared by every recipe that names it, whichever
        model it trains: the selection model is the path's {model}, not a setting of the selector)."""
        for sel in [recipe["selection"] for recipe in self.cfg["recipes"].values()] + [self.warmup_selection()]:
            if selector_id(sel) == wildcards.selector and fraction_id(sel["fraction"]) == wildcards.fraction:
                return {k: v for k, v in sel.items() if k != "model"}
        raise WorkflowError(f"no recipe selects {wildcards.selector} at fraction {wildcards.fraction}")

    def run_score_files(self, runs, only=None):
        """The Scores file of each run on each of its benchmarks (``runs``: (model, dataset, recipe) → benchmark names,
        as from experiment_runs), in run order, then by name; ``only``: keep these benchmark names alone."""
        return [f"{self.run_dir(m, d, r)}/scores/{b}.json" for (m, d, r), benches in runs.items()
                for b in sorted(benches) if only is None or b in only]

    def score_files(self):
        return self.run_score_files(self.experiment_runs())

    def train_logs(self):
        return [f"{self.run_dir(m, d, r)}/train_log.csv" for (m, d, r) in self.experiment_runs()]

    def report_benchmarks(self):
        """The experiments' benchmarks, each once, in the order they first appear."""
        seen = []
        for exp in self.cfg["experiments"].values():
            seen += [b for b in exp["benchmarks"] if b not in seen]
        return seen

    def run_checkpoints(self, wildcards):
        return f"{self.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/checkpoints"

    # --- objectives, selectors and their per-example tables -----------------------------------------------------------

    @staticmethod
    def objective_columns(obj):
        """The per-example columns the objective's batches carry, as its config sets it up."""
        return build_objective(obj["name"], {k: v for k, v in obj.items() if k != "name"}).columns

    def uses_confidence(self, recipe):
        return ("confident" in self.objective_columns(recipe["objective"])
                or "confidence" in SELECTORS[recipe["selection"]["name"]].tables)

    def confidence_pairs(self):
        """(model, dataset) of every confidence table the runs read: the selection model's (selection.model) on the
        run's dataset."""
        recipes = self.cfg["recipes"]
        return sorted({(selection_model(recipes[r]["selection"], m), d) for (m, d, r) in self.experiment_runs()
                       if self.uses_confidence(recipes[r])})

    def objective_tables(self, wildcards):
        """Parquet tables the recipe's objective reads per example (e.g. ref_logprobs for MinorSFT)."""
        recipe = self.recipe_of(wildcards)
        columns = self.objective_columns(recipe["objective"])
        # the confidence split is the selection model's (selection.model); log πref is always the trained model's own
        owner = {"confident": selection_model(recipe["selection"], wildcards.model)}
        return [f"results/{owner.get(c, wildcards.model)}/{wildcards.dataset}/{self.COLUMN_TABLES[c]}"
                for c in columns]

    def selector_tables(self, wildcards):
        """NAME=PATH of the tables the selector of a selection path reads."""
        name = self.selection_config(wildcards)["name"]
        where = f"results/{wildcards.model}/{wildcards.dataset}"
        return {t: f"{where}/{self.SELECTOR_TABLES[t].format(selector=wildcards.selector)}"
                for t in SELECTORS[name].tables}

    def recipe_objective_name(self, wildcards):
        return self.recipe_of(wildcards)["objective"]["name"]

    # --- the reference run (confidence splits, t-SNE) -----------------------------------------------------------------

    def reference_model(self, wildcards):
        return f"resources/models/{self.cfg['reference']['model'] or wildcards.model}"

    @functools.cached_property
    def REFERENCE_CHECKPOINTS(self):  # noqa: N802 - the rule files' name
        return self.cfg["reference"]["checkpoints"]

    def reference_pairs(self):
        """The (model, dataset) pairs whose runs read the confidence split, so need a reference run."""
        return sorted({(m, d) for (m, d, r) in self.experiment_runs() if self.uses_confidence(self.cfg["recipes"][r])})

    @functools.cached_property
    def REFERENCE_RUNS(self):  # noqa: N802
        """(model, dataset) → the recipe whose run is the same training as the reference run there
        (sftlab.training.spec): rule train_reference trains it once, saving the reference checkpoints too; rule
        reference_run trains the other pairs."""
        return reference_runs(self.cfg, self.reference_pairs(), self.experiment_runs(),
                              {"reference": self.processes_of("reference"), "train": self.processes_of("train")})

    def reference_checkpoints(self, model, dataset):
        """The reference checkpoints of a pair: the epoch models of the recipe run that is its reference run, if any."""
        recipe = self.REFERENCE_RUNS.get((model, dataset))
        where = f"{self.run_dir(model, dataset, recipe)}/reference" if recipe else f"results/{model}/{dataset}/reference"
        return [f"{where}/checkpoint-{c}" for c in self.REFERENCE_CHECKPOINTS]

    # how the training rules' jobs resume from their checkpoints (res(..., resumes=)): their settings per wildcards
    @functools.cached_property
    def RECIPE_RUN(self):  # noqa: N802
        return Resumable(lambda wildcards: self.recipe_of(wildcards)["training"], self.recipe_objective_name)

    @functools.cached_property
    def REFERENCE_RUN(self):  # noqa: N802
        return Resumable(lambda wildcards: reference_training(self.cfg))

    def tsne_runs(self, model, dataset):
        """Recipes drawn beside the reference in the t-SNE figure: full-pool NTP and SFTMix runs (the reviewers'
        figure)."""
        recipes = self.cfg["recipes"]
        return [r for (m, d, r) in self.experiment_runs() if (m, d) == (model, dataset)
                and recipes[r]["selection"]["name"] == "full"
                and recipes[r]["composition"]["name"] == "single"
                and recipes[r]["objective"]["name"] in (BASELINE_OBJECTIVE, *paper_objectives("SFTMix"))]

    def tsne_models(self, wildcards):
        models = {"reference": self.reference_checkpoints(wildcards.model, wildcards.dataset)[-1]}
        for r in self.tsne_runs(wildcards.model, wildcards.dataset):
            models[r] = f"{self.run_dir(wildcards.model, wildcards.dataset, r)}/model"
        return models

    # --- what `rule all` builds ---------------------------------------------------------------------------------------

    @functools.cached_property
    def PAPER_REPORTS(self):  # noqa: N802
        """Per-paper reports (tables shaped like a paper's, ablations, figures) live in their stage's rule file, which
        appends a function returning the report files it wants built for the current config (possibly none)."""
        return []

    def report_outputs(self):
        figures = ["loss_curves", "scores"] + [f"tsne_{m}_{d}" for (m, d) in self.confidence_pairs()]
        return [f"reports/tables/main.{ext}" for ext in ("md", "csv", "tex")] + [
            f"reports/figures/{f}.{ext}" for f in figures for ext in ("png", "pdf")] + [
            path for outputs in self.PAPER_REPORTS for path in outputs()]

    # --- local files a job reads are its inputs, so that editing one reruns what depends on it ------------------------

    @staticmethod
    def files_under(path):
        """A local file, or every file under a local directory (a directory's own mtime misses edits inside it)."""
        p = Path(path)
        if p.is_dir():
            return sorted(str(f) for f in p.rglob("*") if f.is_file() and ".cache" not in f.parts)
        return [str(p)]

    def local_dataset_files(self, wildcards):
        ds = self.cfg["datasets"][wildcards.dataset]
        return self.files_under(ds["path"]) if ds["source"] == "local" else []

    def local_model_files(self, wildcards):
        m = self.cfg["models"][wildcards.model]
        return self.files_under(m["path"]) if m["source"] == "local" else []

    # --- one-line input and params functions the rule files share -----------------------------------------------------

    def model_config(self, wildcards):
        return self.as_json(self.cfg["models"][wildcards.model])

    def dataset_config(self, wildcards):
        return self.as_json(self.cfg["datasets"][wildcards.dataset])

    def selection_settings(self, wildcards):
        return self.as_json(self.selection_config(wildcards))

    def selector_table_files(self, wildcards):
        return list(self.selector_tables(wildcards).values())

    def selector_table_args(self, wildcards):
        return self.table_args("--table", self.selector_tables(wildcards))

    def recipe_training(self, wildcards):
        return self.as_json(self.recipe_of(wildcards)["training"])

    def recipe_objective(self, wildcards):
        return self.as_json(self.recipe_of(wildcards)["objective"])

    def recipe_max_length(self, wildcards):
        return self.recipe_of(wildcards)["training"]["max_length"]

    def train_launcher(self, wildcards):
        return self.launcher("train", self.recipe_of(wildcards)["training"], f"recipes.{wildcards.recipe}.training")

    def input_table_args(self, wildcards, input):
        return self.table_args("--table", input.tables)
