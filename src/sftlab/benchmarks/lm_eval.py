"""Multiple-choice exams through lm-eval: one of its own tasks, a task over local files, or the held-out part of an
exam the model was trained on (``exam_from: heldout``)."""

from __future__ import annotations

import tempfile

from sftlab.io import read_jsonl

from .base import BenchmarkType, register_benchmark_type


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
        from sftlab.evaluation.multiple_choice import run_lm_eval, write_exam_dir

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
