"""Benchmark look-ups and input functions of the evaluation rules (eval.smk, judge.smk): every answer comes from the
benchmark's type (sftlab.benchmarks), never from its name."""

import hashlib

from sftlab.benchmarks import GENERATION_KEYS, JUDGE_KEYS, benchmark_type
from sftlab.evaluation.calibration_sources import check_calibrations, source_of
from sftlab.evaluation.exams import run_exams

JUDGE_CACHE_DIR = "results/judge_cache"
CALIBRATION_DIR = "results/calibration"

try:
    check_calibrations(CFG)
except ConfigError as exc:
    raise WorkflowError(f"invalid configuration: {exc}") from None


def type_of(name):
    """The registered type of configured benchmark ``name``."""
    return benchmark_type(CFG["benchmarks"][name]["type"])


def benchmarks_scored_by(rule):
    """Names of the configured benchmarks whose Scores file ``rule`` writes: each scoring rule claims only its own."""
    return [name for name in CFG["benchmarks"] if type_of(name).scored_by == rule]


def benchmarks_gathered():
    """Names of the benchmarks whose inputs rule benchmark_data gathers."""
    return [name for name in CFG["benchmarks"] if type_of(name).gathers_files]


def bench_of(wildcards):
    return CFG["benchmarks"][wildcards.benchmark]


def judge_backend_config(name):
    """The judge's config as sftlab.evaluation.judges.build_judge takes it. An hf judge named after a config model
    runs from the materialised directory, with a fingerprint of that model's config in its cache identity.
    The API key stays in its environment variable: only the variable's name is passed on."""
    entry = CFG["judges"][name]
    judge = {k: v for k, v in entry.items() if k not in ("type", "description")}
    judge["backend"] = entry["type"]
    if entry["type"] == "hf" and entry["model"] in CFG["models"]:
        judge["model"] = f"resources/models/{entry['model']}"
        judge["fingerprint"] = hashlib.sha256(PLAN.as_json(CFG["models"][entry["model"]]).encode()).hexdigest()[:12]
    return judge


def judge_model_input(wildcards):
    """The materialised judge model, when the judge is a config model (else nothing: a server or a path)."""
    judge = CFG["judges"][bench_of(wildcards)["judge"]]
    return [f"resources/models/{judge['model']}"] if judge["type"] == "hf" and judge["model"] in CFG["models"] else []


def benchmark_sources(wildcards):
    """Files a benchmark's inputs are gathered from: fixtures in data_dir, or a dataset's preference pairs."""
    return type_of(wildcards.benchmark).sources(bench_of(wildcards))


def benchmark_data_settings(wildcards):
    """What the gathered files depend on: not the judge nor generation settings, so that switching judges never
    regenerates answers."""
    return PLAN.as_json(type_of(wildcards.benchmark).data_settings(bench_of(wildcards)))


def benchmark_pairs_arg(wildcards):
    return PLAN.table_args("--pairs", [v for k, v in benchmark_sources(wildcards).items() if k == "pairs"])


def exam_inputs(dataset, name):
    """What rule evaluate hands exam ``name``'s type besides the model (the run's pool files it reads, its gathered
    files)."""
    kind = type_of(name)
    inputs = {f: f"results/data/{dataset}/{f}.jsonl" for f in kind.pool_files}
    if kind.gathers_files:
        inputs["data"] = f"results/benchmarks/{name}"
    return inputs


def run_exam_names(wildcards):
    return run_exams(CFG, wildcards.model, wildcards.dataset, wildcards.recipe)


def exam_modules(wildcards):
    """The modules of the run's exam types: the evaluate job's code variants (sftlab.fingerprint)."""
    return tuple(sorted({PLAN.benchmark_module_of(b) for b in run_exam_names(wildcards)}))


def exams_pool_files(wildcards):
    return sorted({path for b in run_exam_names(wildcards) for name, path in exam_inputs(wildcards.dataset, b).items()
                   if name != "data"})


def exams_gathered_files(wildcards):
    return [exam_inputs(wildcards.dataset, b)["data"] for b in run_exam_names(wildcards) if type_of(b).gathers_files]


def exams_local_files(wildcards):
    """Local task files the run's exams read (an lm-eval data_dir, extra task YAMLs): inputs of evaluate."""
    return [f for b in run_exam_names(wildcards) for key in ("data_dir", "include_path")
            if key in CFG["benchmarks"][b] for f in PLAN.files_under(CFG["benchmarks"][b][key])]


def exams_arg(wildcards):
    """Each exam of the run: its config, inputs and result files in the job's output directory (a function of the
    wildcards alone: Snakemake's params trigger skips a params function that reads the job's input or output)."""
    out = f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/exams"
    return PLAN.as_json({b: {"config": CFG["benchmarks"][b], "inputs": exam_inputs(wildcards.dataset, b),
                        "scores": f"{out}/{b}.json", "answers": f"{out}/{b}.jsonl"}
                    for b in run_exam_names(wildcards)})


def implicit_reward_exam(wildcards):
    """The implicit-reward job's one exam (evaluate.py's --exams): the base model as πref, the gathered pairs."""
    b = wildcards.benchmark
    return PLAN.as_json({b: {"config": CFG["benchmarks"][b],
                        "inputs": {"reference": f"resources/models/{wildcards.model}", "data": f"results/benchmarks/{b}"},
                        "scores": f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/scores/{b}.json"}})


def exam_cache_dir(wildcards):
    return f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/exam_cache"


def run_exams_dir(wildcards):
    """The run's evaluate output, where the run is scored on the benchmark (else no job writes its Scores file)."""
    if wildcards.benchmark not in run_exam_names(wildcards):
        raise WorkflowError(f"{wildcards.benchmark} scores of run {wildcards.model} × {wildcards.dataset} × "
                            f"{wildcards.recipe} are asked for, but no experiment scores that run on it")
    return f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/exams"


def exam_file(kind):
    """A params function: the exam's Scores file (``kind`` scores) or answers in its run's evaluate output."""
    ext = {"scores": "json", "answers": "jsonl"}[kind]

    def path(wildcards, input):
        return f"{input[0]}/{wildcards.benchmark}.{ext}"

    return path


def log_likelihood_exam_arg(wildcards):
    """The one exam of a log_likelihood job, as exams_arg (its paths are those of the job's input and output)."""
    run = PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)
    b = wildcards.benchmark
    inputs = {"base": f"results/{wildcards.model}/{wildcards.dataset}/base_logprobs/{b}.parquet",
              "items": scored_items(wildcards)}
    return PLAN.as_json({b: {"config": bench_of(wildcards), "inputs": inputs, "scores": f"{run}/scores/{b}.json",
                        "answers": f"{run}/answers/{b}.jsonl"}})


def scored_items(wildcards):
    """The file of items a log-likelihood benchmark scores (the run's held-out examples, or an exam's questions)."""
    return type_of(wildcards.benchmark).items_file(bench_of(wildcards), wildcards.dataset)


def benchmark_config(wildcards):
    return PLAN.as_json(bench_of(wildcards))


def base_scoring_settings(wildcards):
    """What the base model's log-probs of a benchmark's items depend on (not, e.g., the bootstrap's settings)."""
    return PLAN.as_json(type_of(wildcards.benchmark).base_settings(bench_of(wildcards)))


def answers_path(wildcards):
    fmt = type_of(wildcards.benchmark).answer_format
    return f"{PLAN.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/answers/{wildcards.benchmark}.{fmt}"


def judge_settings(wildcards):
    """What a judgment depends on besides the answers (the params rerun trigger watches it)."""
    bench = bench_of(wildcards)
    settings = {k: bench[k] for k in JUDGE_KEYS if k in bench}
    return {**settings, "judge": judge_backend_config(bench["judge"])}


def judge_options(wildcards):
    return PLAN.option_args({k: v for k, v in judge_settings(wildcards).items() if k != "judge"})


def judge_config(wildcards):
    return PLAN.as_json(judge_backend_config(bench_of(wildcards)["judge"]))


def judge_name(wildcards):
    return bench_of(wildcards)["judge"]


def judge_cache(wildcards):
    return f"{JUDGE_CACHE_DIR}/{bench_of(wildcards)['judge']}.jsonl"


def generation_settings(wildcards):
    bench = bench_of(wildcards)
    return {k: bench[k] for k in GENERATION_KEYS if k in bench}


def generation_options(wildcards):
    return PLAN.option_args(generation_settings(wildcards))


def generation_env(wildcards):
    """The generate job's conda environment: vLLM's own (envs/vllm.yaml) for a benchmark with backend vllm, which
    only conda deployment provides (vLLM cannot install beside the CPU torch pin): planned without it, refused."""
    if generation_settings(wildcards).get("backend") != "vllm":
        return CONDA_ENV
    if PLAN.planning() and DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
        raise WorkflowError(f"invalid configuration: config key benchmarks.{wildcards.benchmark}.backend: vllm "
                            f"generates in the conda environment envs/vllm.yaml, but conda is not the deployment "
                            f"method: add `--software-deployment-method conda` (`--sdm conda`) to the command, "
                            f"or set the backend to transformers")
    return VLLM_ENV


def benchmark_type_name(wildcards):
    return bench_of(wildcards)["type"]


def answer_formats():
    return PLAN._alternation({type_of(name).answer_format for name in benchmarks_scored_by("judge")})


def experiment_scores_where(keep):
    """Scores files of the experiments' runs on the benchmarks whose type satisfies ``keep``."""
    return PLAN.run_score_files(PLAN.experiment_runs(), {name for name in CFG["benchmarks"] if keep(type_of(name))})


def judged_scores():
    return experiment_scores_where(lambda kind: kind.judged)


def figure_scores(figure):
    """Scores files feeding a per-type figure (a type lists its figures in ``figures``)."""
    return experiment_scores_where(lambda kind: figure in kind.figures)


def mtbench_category_scores():
    return figure_scores("mtbench_categories")


def judged_report_files():
    """The judges table when any run is judged, the MT-Bench category figure when any run has MT-Bench scores."""
    files = [f"reports/tables/{t}.{ext}" for t in ("judges", "judged_comparisons", "judge_calibration")
             for ext in ("md", "csv", "tex") if judged_scores() or benchmarks_calibrated()]
    if mtbench_category_scores():
        files += [f"reports/figures/mtbench_categories.{ext}" for ext in ("png", "pdf")]
    return files


def check_judge_keys(jobs):
    """Before the first job: every API judge that a planned judge job calls has its key variable set (a dry run, or a
    plan whose judgments are all done, needs no key)."""
    for job in jobs:
        if job.rule.name not in ("judge", "judge_calibration"):
            continue
        name = bench_of(job.wildcards)["judge"]
        judge = CFG["judges"][name]
        var = judge.get("api_key_env")
        if judge["type"] == "openai" and var and not os.environ.get(var):
            # the variable's name is not repeated: a pasted key that passed for a name must not reach a log
            raise WorkflowError(f"invalid configuration: config key judges.{name}.api_key_env: the environment "
                                f"variable it names is not set, and benchmark {job.wildcards.benchmark} is judged by "
                                f"{name!r} in this plan; export it, or set api_key_env: null for a server without "
                                "a key")


def local_judge_files(wildcards):
    """An hf judge given as a directory (not a config model) is read by the judge job: its files are inputs."""
    judge = CFG["judges"][bench_of(wildcards)["judge"]]
    return PLAN.files_under(judge["model"]) if judge["type"] == "hf" and judge["model"] not in CFG["models"] else []


def benchmarks_calibrated():
    """Judged benchmarks whose judge is calibrated against the original judge's published scores (``calibration``),
    among those an experiment scores (a calibration serves the runs judged on its benchmark)."""
    scored = set(PLAN.report_benchmarks())
    return [name for name in benchmarks_scored_by("judge") if "calibration" in CFG["benchmarks"][name]
            and name in scored]


def calibration_summaries():
    return [f"{CALIBRATION_DIR}/{name}/summary.json" for name in benchmarks_calibrated()]


def calibration_config(wildcards):
    return PLAN.as_json(bench_of(wildcards)["calibration"])


def calibration_local_files(wildcards):
    """A calibration's local copy of the published files (its data_dir): inputs of calibration_data."""
    calib = bench_of(wildcards)["calibration"]
    if "data_dir" not in calib:
        return []
    key = f"benchmarks.{wildcards.benchmark}.calibration"
    return [f"{calib['data_dir']}/{name}" for name in source_of(calib_type(wildcards), key).files(calib, key)]


def calib_type(wildcards):
    return bench_of(wildcards)["type"]


def calibration_judge_options(wildcards):
    """The annotator and seed of the benchmark's own judging (a calibration judges as the benchmark does)."""
    bench = bench_of(wildcards)
    return PLAN.option_args({k: bench[k] for k in ("annotator", "seed") if k in bench})
