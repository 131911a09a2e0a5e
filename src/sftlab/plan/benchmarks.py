"""The plan's exams, generation, judges and calibrations (rules of eval.smk and judge.smk): every answer comes from the
benchmark's type (sftlab.benchmarks), never from its name."""

from __future__ import annotations

import hashlib
import os

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from sftlab.benchmarks import GENERATION_KEYS, JUDGE_KEYS, benchmark_type
from sftlab.config import ConfigError
from sftlab.evaluation.calibration_sources import check_calibrations, source_of
from sftlab.evaluation.exams import run_exams


class BenchmarkPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""

    #: one judgment cache per judge, shared by every run and calibration (a parameter of the judge jobs, not an output)
    judge_cache_dir = "results/judge_cache"
    calibration_dir = "results/calibration"

    def check_calibrations(self):
        """At plan time: every calibration names a type with published judgments and pins what it downloads."""
        try:
            check_calibrations(self.cfg)
        except ConfigError as exc:
            raise WorkflowError(f"invalid configuration: {exc}") from None

    # --- benchmark types -----------------------------------------------------------------------------------------

    def type_of(self, name):
        """The registered type of configured benchmark ``name``."""
        return benchmark_type(self.cfg["benchmarks"][name]["type"])

    def benchmarks_scored_by(self, rule):
        """Names of the configured benchmarks whose Scores file ``rule`` writes: each scoring rule claims only its
        own."""
        return [name for name in self.cfg["benchmarks"] if self.type_of(name).scored_by == rule]

    def benchmarks_gathered(self):
        """Names of the benchmarks whose inputs rule benchmark_data gathers."""
        return [name for name in self.cfg["benchmarks"] if self.type_of(name).gathers_files]

    def bench_of(self, wildcards):
        return self.cfg["benchmarks"][wildcards.benchmark]

    def benchmark_type_name(self, wildcards):
        return self.bench_of(wildcards)["type"]

    def answer_formats(self):
        """The generate rule's {fmt}: the answers' extensions of the judged types."""
        return self._alternation({self.type_of(name).answer_format for name in self.benchmarks_scored_by("judge")})

    # --- gathered inputs (rule benchmark_data) -------------------------------------------------------------------

    def benchmark_sources(self, wildcards):
        """Files a benchmark's inputs are gathered from: fixtures in data_dir, or a dataset's preference pairs."""
        return self.type_of(wildcards.benchmark).sources(self.bench_of(wildcards))

    def benchmark_data_settings(self, wildcards):
        """What the gathered files depend on: not the judge nor generation settings, so that switching judges never
        regenerates answers."""
        return self.as_json(self.type_of(wildcards.benchmark).data_settings(self.bench_of(wildcards)))

    def benchmark_pairs_arg(self, wildcards):
        return self.table_args("--pairs", [v for k, v in self.benchmark_sources(wildcards).items() if k == "pairs"])

    # --- exams scored in-process (rules evaluate, exam_results) --------------------------------------------------

    def exam_inputs(self, dataset, name):
        """What rule evaluate hands exam ``name``'s type besides the model (the run's pool files it reads, its
        gathered files)."""
        kind = self.type_of(name)
        inputs = {f: f"results/data/{dataset}/{f}.jsonl" for f in kind.pool_files}
        if kind.gathers_files:
            inputs["data"] = f"results/benchmarks/{name}"
        return inputs

    def run_exam_names(self, wildcards):
        return run_exams(self.cfg, wildcards.model, wildcards.dataset, wildcards.recipe)

    def exam_modules(self, wildcards):
        """The modules of the run's exam types: the evaluate job's code variants (sftlab.fingerprint)."""
        return tuple(sorted({self.benchmark_module_of(b) for b in self.run_exam_names(wildcards)}))

    def exams_pool_files(self, wildcards):
        return sorted({path for b in self.run_exam_names(wildcards)
                       for name, path in self.exam_inputs(wildcards.dataset, b).items() if name != "data"})

    def exams_gathered_files(self, wildcards):
        return [self.exam_inputs(wildcards.dataset, b)["data"] for b in self.run_exam_names(wildcards)
                if self.type_of(b).gathers_files]

    def exams_local_files(self, wildcards):
        """Local task files the run's exams read (an lm-eval data_dir, extra task YAMLs): inputs of evaluate."""
        benches = self.cfg["benchmarks"]
        return [f for b in self.run_exam_names(wildcards) for key in ("data_dir", "include_path")
                if key in benches[b] for f in self.files_under(benches[b][key])]

    def _run_dir_of(self, wildcards):
        return self.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)

    def exams_arg(self, wildcards):
        """Each exam of the run: its config, inputs and result files in the job's output directory (a function of the
        wildcards alone: Snakemake's params trigger skips a params function that reads the job's input or output)."""
        out = f"{self._run_dir_of(wildcards)}/exams"
        return self.as_json({b: {"config": self.cfg["benchmarks"][b], "inputs": self.exam_inputs(wildcards.dataset, b),
                                 "scores": f"{out}/{b}.json", "answers": f"{out}/{b}.jsonl"}
                             for b in self.run_exam_names(wildcards)})

    def exam_cache_dir(self, wildcards):
        return f"{self._run_dir_of(wildcards)}/exam_cache"

    def run_exams_dir(self, wildcards):
        """The run's evaluate output, where the run is scored on the benchmark (else no job writes its Scores file)."""
        if wildcards.benchmark not in self.run_exam_names(wildcards):
            raise WorkflowError(f"{wildcards.benchmark} scores of run {wildcards.model} × {wildcards.dataset} × "
                                f"{wildcards.recipe} are asked for, but no experiment scores that run on it")
        return f"{self._run_dir_of(wildcards)}/exams"

    def exam_file(self, kind):
        """A params function: the exam's Scores file (``kind`` scores) or answers in its run's evaluate output."""
        ext = {"scores": "json", "answers": "jsonl"}[kind]

        def path(wildcards, input):
            return f"{input[0]}/{wildcards.benchmark}.{ext}"

        return path

    # --- implicit reward and log-likelihood (rules implicit_reward, log_likelihood, base_log_likelihood) ---------

    def implicit_reward_exam(self, wildcards):
        """The implicit-reward job's one exam (evaluate.py's --exams): the base model as πref, the gathered pairs."""
        b = wildcards.benchmark
        return self.as_json({b: {"config": self.cfg["benchmarks"][b],
                                 "inputs": {"reference": f"resources/models/{wildcards.model}",
                                            "data": f"results/benchmarks/{b}"},
                                 "scores": f"{self._run_dir_of(wildcards)}/scores/{b}.json"}})

    def log_likelihood_exam_arg(self, wildcards):
        """The one exam of a log_likelihood job, as exams_arg (its paths are those of the job's input and output)."""
        run = self._run_dir_of(wildcards)
        b = wildcards.benchmark
        inputs = {"base": f"results/{wildcards.model}/{wildcards.dataset}/base_logprobs/{b}.parquet",
                  "items": self.scored_items(wildcards)}
        return self.as_json({b: {"config": self.bench_of(wildcards), "inputs": inputs,
                                 "scores": f"{run}/scores/{b}.json", "answers": f"{run}/answers/{b}.jsonl"}})

    def scored_items(self, wildcards):
        """The file of items a log-likelihood benchmark scores (the run's held-out examples, or an exam's questions)."""
        return self.type_of(wildcards.benchmark).items_file(self.bench_of(wildcards), wildcards.dataset)

    def base_scoring_settings(self, wildcards):
        """What the base model's log-probs of a benchmark's items depend on (not, e.g., the bootstrap's settings)."""
        return self.as_json(self.type_of(wildcards.benchmark).base_settings(self.bench_of(wildcards)))

    # --- generation (rule generate) ------------------------------------------------------------------------------

    def answers_path(self, wildcards):
        fmt = self.type_of(wildcards.benchmark).answer_format
        return f"{self._run_dir_of(wildcards)}/answers/{wildcards.benchmark}.{fmt}"

    def generation_settings(self, wildcards):
        bench = self.bench_of(wildcards)
        return {k: bench[k] for k in GENERATION_KEYS if k in bench}

    def generation_options(self, wildcards):
        return self.option_args(self.generation_settings(wildcards))

    def generation_env(self, wildcards):
        """The generate job's conda environment: vLLM's own (envs/vllm.yaml) for a benchmark with backend vllm, which
        only conda deployment provides (vLLM cannot install beside the CPU torch pin): planned without it, refused."""
        if self.generation_settings(wildcards).get("backend") != "vllm":
            return self.CONDA_ENV
        if self.planning() and DeploymentMethod.CONDA not in self.workflow.deployment_settings.deployment_method:
            raise WorkflowError(f"invalid configuration: config key benchmarks.{wildcards.benchmark}.backend: vllm "
                                f"generates in the conda environment envs/vllm.yaml, but conda is not the deployment "
                                f"method: add `--software-deployment-method conda` (`--sdm conda`) to the command, "
                                f"or set the backend to transformers")
        return self.VLLM_ENV

    # --- judges (rules judge, judge_calibration) -----------------------------------------------------------------

    def judge_backend_config(self, name):
        """The judge's config as sftlab.evaluation.judges.build_judge takes it. An hf judge named after a config model
        runs from the materialised directory, with a fingerprint of that model's config in its cache identity.
        The API key stays in its environment variable: only the variable's name is passed on."""
        entry = self.cfg["judges"][name]
        judge = {k: v for k, v in entry.items() if k not in ("type", "description")}
        judge["backend"] = entry["type"]
        if self._judge_is_config_model(entry):
            judge["model"] = f"resources/models/{entry['model']}"
            model = self.as_json(self.cfg["models"][entry["model"]])
            judge["fingerprint"] = hashlib.sha256(model.encode()).hexdigest()[:12]
        return judge

    def _judge_is_config_model(self, judge):
        return judge["type"] == "hf" and judge["model"] in self.cfg["models"]

    def _judge_of(self, wildcards):
        return self.cfg["judges"][self.judge_name(wildcards)]

    def judge_model_input(self, wildcards):
        """The materialised judge model, when the judge is a config model (else nothing: a server or a path)."""
        judge = self._judge_of(wildcards)
        return [f"resources/models/{judge['model']}"] if self._judge_is_config_model(judge) else []

    def local_judge_files(self, wildcards):
        """An hf judge given as a directory (not a config model) is read by the judge job: its files are inputs."""
        judge = self._judge_of(wildcards)
        if judge["type"] != "hf" or self._judge_is_config_model(judge):
            return []
        return self.files_under(judge["model"])

    def judge_settings(self, wildcards):
        """What a judgment depends on besides the answers (the params rerun trigger watches it)."""
        bench = self.bench_of(wildcards)
        settings = {k: bench[k] for k in JUDGE_KEYS if k in bench}
        return {**settings, "judge": self.judge_backend_config(bench["judge"])}

    def judge_options(self, wildcards):
        return self.option_args({k: v for k, v in self.judge_settings(wildcards).items() if k != "judge"})

    def judge_config(self, wildcards):
        return self.as_json(self.judge_backend_config(self.judge_name(wildcards)))

    def judge_name(self, wildcards):
        return self.bench_of(wildcards)["judge"]

    def judge_cache(self, wildcards):
        return f"{self.judge_cache_dir}/{self.judge_name(wildcards)}.jsonl"

    def check_judge_keys(self, jobs):
        """Before the first job: every API judge that a planned judge job calls has its key variable set (a dry run,
        or a plan whose judgments are all done, needs no key)."""
        for job in jobs:
            if job.rule.name not in ("judge", "judge_calibration"):
                continue
            name = self.judge_name(job.wildcards)
            var = self.cfg["judges"][name].get("api_key_env")
            if self.cfg["judges"][name]["type"] == "openai" and var and not os.environ.get(var):
                # the variable's name is not repeated: a pasted key that passed for a name must not reach a log
                raise WorkflowError(f"invalid configuration: config key judges.{name}.api_key_env: the environment "
                                    f"variable it names is not set, and benchmark {job.wildcards.benchmark} is judged "
                                    f"by {name!r} in this plan; export it, or set api_key_env: null for a server "
                                    "without a key")

    # --- judge calibrations (rules calibration_data, judge_calibration) ------------------------------------------

    def benchmarks_calibrated(self):
        """Judged benchmarks whose judge is calibrated against the original judge's published scores
        (``calibration``), among those an experiment scores (a calibration serves the runs judged on its benchmark)."""
        scored = set(self.report_benchmarks())
        return [name for name in self.benchmarks_scored_by("judge") if "calibration" in self.cfg["benchmarks"][name]
                and name in scored]

    def calibration_summaries(self):
        return [f"{self.calibration_dir}/{name}/summary.json" for name in self.benchmarks_calibrated()]

    def calibration_config(self, wildcards):
        return self.as_json(self.bench_of(wildcards)["calibration"])

    def calibration_local_files(self, wildcards):
        """A calibration's local copy of the published files (its data_dir): inputs of calibration_data."""
        calib = self.bench_of(wildcards)["calibration"]
        if "data_dir" not in calib:
            return []
        key = f"benchmarks.{wildcards.benchmark}.calibration"
        source = source_of(self.benchmark_type_name(wildcards), key)
        return [f"{calib['data_dir']}/{name}" for name in source.files(calib, key)]

    def calibration_judge_options(self, wildcards):
        """The annotator and seed of the benchmark's own judging (a calibration judges as the benchmark does)."""
        bench = self.bench_of(wildcards)
        return self.option_args({k: bench[k] for k in ("annotator", "seed") if k in bench})

    # --- judged reports (rules judges_table, mtbench_categories) -------------------------------------------------

    def experiment_scores_where(self, keep):
        """Scores files of the experiments' runs on the benchmarks whose type satisfies ``keep``."""
        return self.run_score_files(self.experiment_runs(),
                                    {name for name in self.cfg["benchmarks"] if keep(self.type_of(name))})

    def judged_scores(self):
        return self.experiment_scores_where(lambda kind: kind.judged)

    def figure_scores(self, figure):
        """Scores files feeding a per-type figure (a type lists its figures in ``figures``)."""
        return self.experiment_scores_where(lambda kind: figure in kind.figures)

    def mtbench_category_scores(self):
        return self.figure_scores("mtbench_categories")

    def judged_report_files(self):
        """The judges tables when any run is judged or a judge calibrated, the MT-Bench category figure when any run
        has MT-Bench scores."""
        files = []
        if self.judged_scores() or self.benchmarks_calibrated():
            files += [f"reports/tables/{t}.{ext}" for t in ("judges", "judged_comparisons", "judge_calibration")
                      for ext in ("md", "csv", "tex")]
        if self.mtbench_category_scores():
            files += [f"reports/figures/mtbench_categories.{ext}" for ext in ("png", "pdf")]
        return files
