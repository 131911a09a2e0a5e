"""Multiple-choice exams through lm-eval, on the in-memory model: one of its own tasks, a task over local files, or
the held-out part of an exam the model was trained on (``exam_from: heldout``).

At paper scale the task is one of lm-eval's own (``mmlu``, ``ceval-valid``, 5-shot) or one shipped in
``workflow/benchmarks/lm_eval_tasks`` (FinanceIQ, FinEval; found through ``include_path``). Offline, a task is
defined over local JSONL files in the ``cais/mmlu`` schema (question, subject, choices, answer index): sftlab
writes the task YAML, with absolute paths, into a temporary directory and lm-eval finds it there. The same
route scores the held-out part of an exam the model was trained on (datasets of format ``exam_*``).
"""

from __future__ import annotations

import contextlib
import math
import re
import tempfile
from pathlib import Path
from unittest import mock

import yaml

from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type

LETTERS = ["A", "B", "C", "D", "E", "F", "G", "H"]
#: a task written as ``{name}.yaml``: one plain file name (the config schema's pattern for ``task``)
TASK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def write_exam_dir(out_dir: str | Path, test: list[dict], dev: list[dict]) -> Path:
    """``test.jsonl`` and ``dev.jsonl`` (few-shot examples) in the cais/mmlu schema from exam items."""
    from sftlab.io import write_jsonl

    if not test:
        raise ValueError("no exam items to score: the held-out set holds no multiple-choice items (format exam_*)")
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "test.jsonl", test)
    write_jsonl(out_dir / "dev.jsonl", dev or test[:1])
    return out_dir


def mmlu_schema_task(name: str, data_dir: str | Path, n_choices: int = 4, answer_prompt: str = "Answer:") -> dict:
    """An lm-eval task over ``data_dir/test.jsonl`` (scored) and ``data_dir/dev.jsonl`` (few-shot examples)."""
    if not TASK_NAME.fullmatch(name):
        raise ValueError(f"multiple-choice task name {name!r}: letters, digits, '_', '.' and '-' only (it names a file)")
    if re.search(r"\{[{%#]", answer_prompt):
        # lm-eval renders doc_to_text as an unsandboxed Jinja template: the prompt would run as code
        raise ValueError(f"multiple-choice task {name}: answer_prompt holds Jinja syntax ('{{{{', '{{%' or '{{#')")
    data_dir = Path(data_dir).resolve()
    test, dev = data_dir / "test.jsonl", data_dir / "dev.jsonl"
    for path in (test, dev):
        if not path.exists():
            raise FileNotFoundError(f"multiple-choice task {name}: {path} is missing (cais/mmlu schema JSONL)")
    choices = "\n".join(f"{letter}. {{{{choices[{i}]}}}}" for i, letter in enumerate(LETTERS[:n_choices]))
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(test), "dev": str(dev)}},
        "test_split": "test",
        "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "doc_to_text": "{{question.strip()}}\n" + choices + "\n" + answer_prompt,
        "doc_to_choice": LETTERS[:n_choices],
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }


def run_lm_eval(model, tokenizer, task: str, num_fewshot: int, batch_size: int, metric: str = "acc",
                data_dir: str | Path | None = None, limit: int | None = None, answer_prompt: str = "Answer:",
                include_path: str | Path | None = None, metric_filter: str = "none",
                dataset_paths: dict[str, str] | None = None, max_gen_toks: int | None = None) -> dict:
    """Score dict ``{"metric", "value" (percent), "ci_low", "ci_high", "n", "task", "num_fewshot"}``.

    ``metric_filter`` is lm-eval's filter name in the result key (``exact_match,strict-match`` for GSM8K).
    ``dataset_paths``: hub dataset → local directory in that repository's layout, read instead of the hub.
    ``max_gen_toks``: at most this many tokens generated per request of a generate_until task (else the task's own)."""
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        if data_dir is not None:
            spec = mmlu_schema_task(task, data_dir, answer_prompt=answer_prompt)
            path = (Path(tmp) / f"{task}.yaml").resolve()
            if path.parent != Path(tmp).resolve():
                raise ValueError(f"lm-eval task {task!r}: its YAML would be written outside the task folder")
            path.write_text(yaml.safe_dump(spec, allow_unicode=True))
            # the task is self-contained: indexing lm-eval's own ~27,000 task YAMLs would cost ~6 s of CPU a job
            manager = TaskManager(include_path=tmp, include_defaults=False)
        else:
            manager = TaskManager(include_path=str(include_path) if include_path else None)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))
        with local_datasets(dataset_paths or {}):
            return lm_eval_score(lm, task, manager, num_fewshot, metric, limit=limit, metric_filter=metric_filter,
                                 gen_kwargs={"max_gen_toks": max_gen_toks} if max_gen_toks else None)


@contextlib.contextmanager
def local_datasets(paths: dict[str, str]):
    """While open, ``datasets.load_dataset(path=<hub id>, ...)`` reads ``paths[<hub id>]`` instead (lm-eval's tasks load
    their ``dataset_path`` so): the task's own config, its data from a local copy of the repository."""
    import datasets

    if not paths:
        yield
        return
    load = datasets.load_dataset

    def load_local(path, *args, **kwargs):
        return load(paths.get(path, path), *args, **kwargs)

    with mock.patch.object(datasets, "load_dataset", load_local):
        yield


def lm_eval_score(lm, task: str, manager, num_fewshot: int, metric: str, limit: int | None = None,
                  metric_filter: str = "none", apply_chat_template: bool = False, report: tuple[str, ...] = (),
                  gen_kwargs: dict | None = None) -> dict:
    """``run_lm_eval``'s score dict from any lm-eval ``LM`` on a task its ``TaskManager`` knows, seeded; the
    metrics named in ``report`` (percent) under ``metrics``."""
    import lm_eval
    import lm_eval.evaluator

    # simple_evaluate ends by describing the environment (pip list, conda, nvidia-smi, gcc ... in ~15 subprocesses,
    # ~1.5 s a job) into its results, of which the score keeps nothing
    with mock.patch.object(lm_eval.evaluator, "add_env_info", lambda results: None):
        out = lm_eval.simple_evaluate(model=lm, tasks=[task], num_fewshot=num_fewshot, task_manager=manager,
                                      limit=limit, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                      fewshot_random_seed=0, log_samples=False, apply_chat_template=apply_chat_template,
                                      gen_kwargs=gen_kwargs)
    results = out["results"][task]
    key = f"{metric},{metric_filter}"
    if key not in results:
        raise KeyError(f"lm-eval task {task} reported no {metric!r}; it reported {sorted(results)}")
    value = float(results[key])
    stderr = results.get(f"{metric}_stderr,{metric_filter}")
    n = out.get("n-samples", {}).get(task, {}).get("effective")
    # lm-eval reports a standard error; a normal 95% interval from it, in percent
    half = 1.96 * float(stderr) if isinstance(stderr, (int, float)) and not math.isnan(float(stderr)) else float("nan")
    low, high = max(0.0, value - half), min(1.0, value + half)
    score = {"metric": metric, "value": 100.0 * value, "ci_low": 100.0 * low, "ci_high": 100.0 * high,
             "n": n, "task": task, "num_fewshot": num_fewshot}
    if report:
        score["metrics"] = {name: 100.0 * float(results[f"{name},{metric_filter}"]) for name in report}
    return score


def exam_items(path: str) -> list[dict]:
    return [e["exam"] for e in read_jsonl(path) if "exam" in e]


@register_benchmark_type("lm_eval")
class LMEval(BenchmarkType):
    pool_files = ("heldout", "train")

    def job_downloads(self, name, bench):
        """One of lm-eval's own tasks (or one in include_path) loads its datasets from the hub; local tasks do not."""
        from sftlab.offline import LmEvalTask

        if "data_dir" in bench or "exam_from" in bench:
            return []
        return [LmEvalTask(f"benchmarks.{name}.task", bench["task"], bench.get("include_path"))]

    def evaluate(self, model, tokenizer, bench, inputs):
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = bench.get("data_dir")
            if bench.get("exam_from") == "heldout":
                # the held-out part of an exam the model was trained on; few-shot examples from the training part
                few_shot = exam_items(inputs["train"])[: max(1, bench["num_fewshot"])]
                data_dir = write_exam_dir(tmp, exam_items(inputs["heldout"]), few_shot)
            score = run_lm_eval(model, tokenizer, bench["task"], bench["num_fewshot"], bench["batch_size"],
                                bench["metric"], data_dir=data_dir, limit=bench.get("limit"),
                                answer_prompt=bench["answer_prompt"], include_path=bench.get("include_path"),
                                metric_filter=bench["filter"], dataset_paths=bench.get("dataset_paths"),
                                max_gen_toks=bench.get("max_gen_toks"))
        return score, []

    def reads_heldout(self, bench):
        return bench.get("exam_from") == "heldout"
