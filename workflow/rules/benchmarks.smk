"""Benchmark look-ups and input functions of the evaluation rules (eval.smk, judge.smk)."""

import hashlib


def benchmarks_of_type(*types):
    """Names of the configured benchmarks of these types: each evaluation rule claims only its own."""
    return [name for name, bench in CFG["benchmarks"].items() if bench["type"] in types]


# benchmark type → the benchmark name generate.py and judge.py use; answer file format
JUDGED = {"mtbench": "mt_bench", "alpacaeval": "alpaca_eval", "preference": "preference"}
ANSWER_FORMAT = {"mtbench": "jsonl", "alpacaeval": "json", "preference": "jsonl"}
# the file in results/benchmarks/{benchmark}/ that generation answers
GENERATION_INPUT = {"mtbench": "question.jsonl", "alpacaeval": "eval_set.json", "preference": "pairs.jsonl"}
# benchmark types with rules of their own (judge.smk); `evaluate` serves every other type
GENERATIVE = (*JUDGED, "implicit_reward")
JUDGE_CACHE_DIR = "results/judge_cache"

for _name, _judge in CFG["judges"].items():
    if _judge["type"] == "hf" and _judge["model"] not in CFG["models"]:
        _judge["model"] = _workflow_path(_judge["model"])
        if not os.path.isdir(_judge["model"]):
            raise WorkflowError(f"config key judges.{_name}.model: {_judge['model']!r} is neither a model in `models` "
                                f"nor a directory")


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
        judge["fingerprint"] = hashlib.sha256(as_json(CFG["models"][entry["model"]]).encode()).hexdigest()[:12]
    return judge


def judge_model_input(wildcards):
    """The materialised judge model, when the judge is a config model (else nothing: a server or a path)."""
    judge = CFG["judges"][bench_of(wildcards)["judge"]]
    return [f"resources/models/{judge['model']}"] if judge["type"] == "hf" and judge["model"] in CFG["models"] else []


def benchmark_sources(wildcards):
    """Files a benchmark's inputs are gathered from: fixtures in data_dir, or a dataset's preference pairs."""
    bench = bench_of(wildcards)
    if "dataset" in bench:
        return {"pairs": f"results/data/{bench['dataset']}/pairs.jsonl"}
    if "data_dir" not in bench:
        return {}  # downloaded
    if bench["type"] == "mtbench":
        from sftlab.evaluation.mtbench import OFFICIAL_FILES

        return {name: f"{bench['data_dir']}/{name}" for name in OFFICIAL_FILES}
    return {"eval_set": f"{bench['data_dir']}/eval_set.json"}


def benchmark_data_settings(wildcards):
    """What the gathered files depend on: not the judge nor generation settings, so that switching judges never
    regenerates answers."""
    bench = bench_of(wildcards)
    return {k: bench[k] for k in ("type", "data_dir", "fastchat_commit", "dataset", "limit") if k in bench}


def answers_path(wildcards):
    fmt = ANSWER_FORMAT[bench_of(wildcards)["type"]]
    return f"{run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/answers/{wildcards.benchmark}.{fmt}"


def judge_file_args(wildcards, data_dir):
    """The judge script's arguments naming the benchmark's gathered files."""
    kind = bench_of(wildcards)["type"]
    if kind == "mtbench":
        return ["--questions", f"{data_dir}/question.jsonl", "--judge-prompts", f"{data_dir}/judge_prompts.jsonl",
                "--references", f"{data_dir}/reference_answer/gpt-4.jsonl"]
    if kind == "alpacaeval":
        return ["--eval-set", f"{data_dir}/eval_set.json"]
    return ["--pairs", f"{data_dir}/pairs.jsonl"]


def judge_settings(wildcards):
    """What a judgment depends on besides the answers (the params rerun trigger watches it)."""
    bench = bench_of(wildcards)
    settings = {k: bench[k] for k in ("annotator", "seed", "n_resamples") if k in bench}
    return {**settings, "judge": judge_backend_config(bench["judge"])}


def generation_settings(wildcards):
    bench = bench_of(wildcards)
    return {k: bench[k] for k in ("backend", "batch_size", "max_new_tokens", "temperature", "seed") if k in bench}


def experiment_scores_of_type(*types):
    names = set(benchmarks_of_type(*types))
    return [f"{run_dir(m, d, r)}/scores/{b}.json" for (m, d, r), benches in experiment_runs().items()
            for b in sorted(benches) if b in names]
