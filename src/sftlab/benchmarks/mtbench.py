"""MT-Bench: two-turn questions answered by the model, each turn rated 1-10 by the judge (FastChat's protocol)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sftlab.io import DataError, read_jsonl, write_jsonl

from .base import BenchmarkType, file_sha256, register_benchmark_type


@register_benchmark_type("mtbench")
class MTBench(BenchmarkType):
    scored_by = "judge"
    gathers_files = True
    data_keys = ("fastchat_commit",)
    answer_format = "jsonl"
    generation_input = "question.jsonl"
    max_new_tokens = 1024
    figures = ("mtbench_categories",)
    paper_key = "mt_bench"

    def sources(self, bench):
        from sftlab.evaluation.mtbench import OFFICIAL_FILES

        if "data_dir" not in bench:
            return {}  # downloaded from FastChat
        return {name: f"{bench['data_dir']}/{name}" for name in OFFICIAL_FILES}

    def prepare(self, bench, out, pairs_path):
        """question.jsonl, judge_prompts.jsonl and reference_answer/gpt-4.jsonl in FastChat's formats: copied from
        ``data_dir`` or downloaded from FastChat at the pinned commit."""
        from sftlab.evaluation import mtbench

        if "data_dir" in bench:
            src = Path(bench["data_dir"])
            for name in mtbench.OFFICIAL_FILES:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, out / name)
            source = {"data_dir": str(src),
                      "files": {name: {"sha256": file_sha256(out / name)} for name in mtbench.OFFICIAL_FILES}}
        else:
            source = mtbench.download_official(out, commit=bench.get("fastchat_commit", mtbench.FASTCHAT_COMMIT))
        questions = mtbench.load_questions(out / "question.jsonl")
        prompts = mtbench.load_judge_prompts(out / "judge_prompts.jsonl")
        references = mtbench.load_answers(out / "reference_answer/gpt-4.jsonl")
        missing = sorted(set(mtbench.JUDGE_PROMPT_NAMES.values()) - set(prompts))
        if missing:
            raise DataError(f"{out}/judge_prompts.jsonl lacks the judge prompts {missing}")
        questions = questions[: bench.get("limit")]
        unreferenced = [q["question_id"] for q in questions
                        if q["category"] in mtbench.NEED_REF_CATEGORIES and q["question_id"] not in references]
        if unreferenced:
            raise DataError(f"MT-Bench questions {unreferenced} need a reference answer and have none")
        write_jsonl(out / "question.jsonl", questions)
        return {**source, "n": len(questions)}

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        """Both turns; turn 2 sees the model's turn-1 answer; the temperature is the category's (not ``temperature``)."""
        from sftlab.evaluation import mtbench

        questions = mtbench.load_questions(Path(data_dir) / self.generation_input)
        return mtbench.generate_answers(generator, questions, model_id, max_new_tokens=max_new_tokens)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        from sftlab.evaluation import mtbench

        data_dir = Path(data_dir)
        answer_rows = read_jsonl(answers_path)
        judgments, usage = mtbench.judge_answers(
            judge, cache, mtbench.load_questions(data_dir / "question.jsonl"), mtbench.load_answers(answers_path),
            mtbench.load_judge_prompts(data_dir / "judge_prompts.jsonl"),
            mtbench.load_answers(data_dir / "reference_answer/gpt-4.jsonl"),
            model_id=answer_rows[0]["model_id"] if answer_rows else "",
            max_tokens=judge_config.get("max_tokens", mtbench.JUDGE_MAX_TOKENS))
        return judgments, usage, mtbench.score(judgments, **settings["stats"])

    def item_values(self, judgments):
        """Per question: its parsed turns' ratings summed, and their count (the score is the mean over turns)."""
        items: dict[str, list[float]] = {}
        for r in judgments:
            if r["score"] is not None:
                item = items.setdefault(str(r["question_id"]), [0.0, 0.0])
                item[0] += r["score"]
                item[1] += 1
        return items

    def judge_prompt_version(self, data_dir, settings):
        return f"FastChat judge_prompts.jsonl sha256:{file_sha256(Path(data_dir) / 'judge_prompts.jsonl')[:12]}"
