"""Judged preference win rate: the model's reply to each test pair's prompt judged against the pair's chosen answer."""

from __future__ import annotations

from pathlib import Path

from sftlab.io import DataError, read_jsonl, write_jsonl

from .base import BenchmarkType, register_benchmark_type

PAIR_FIELDS = ("id", "prompt", "chosen", "rejected")


def prepare_pairs(bench: dict, out: Path, pairs_path: str | Path | None) -> dict:
    """``pairs.jsonl``: the preference pairs of a prepared dataset, checked, ``limit`` applied."""
    if pairs_path is None:
        raise ValueError(f"a {bench['type']} benchmark needs the preference pairs of dataset {bench['dataset']!r}")
    pairs = read_jsonl(pairs_path)
    for pair in pairs:
        missing = [k for k in PAIR_FIELDS if k not in pair]
        if missing:
            raise DataError(f"{pairs_path}: pair {pair.get('id', '?')!r} lacks {missing}")
    if not pairs:
        raise DataError(f"{pairs_path}: dataset {bench['dataset']!r} has no preference pairs to test on")
    pairs = pairs[: bench.get("limit")]
    write_jsonl(out / "pairs.jsonl", pairs)
    return {"dataset": bench["dataset"], "pairs": str(pairs_path), "n": len(pairs)}


@register_benchmark_type("preference")
class Preference(BenchmarkType):
    scored_by = "judge"
    gathers_files = True
    answer_format = "jsonl"
    generation_input = "pairs.jsonl"
    max_new_tokens = 512

    def prepare(self, bench, out, pairs_path):
        return prepare_pairs(bench, out, pairs_path)

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        from sftlab.evaluation import preference

        pairs = read_jsonl(Path(data_dir) / self.generation_input)
        return preference.generate_answers(generator, pairs, max_new_tokens=max_new_tokens, temperature=temperature)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        from sftlab.evaluation import alpacaeval, preference

        judgments, usage = preference.judge_answers(
            judge, cache, alpacaeval.get_annotator(settings["annotator"]), read_jsonl(Path(data_dir) / "pairs.jsonl"),
            read_jsonl(answers_path), seed=settings["seed"])
        scores = preference.score(judgments, **settings["stats"])
        scores["annotator"] = settings["annotator"]
        return judgments, usage, scores

    def item_values(self, judgments):
        from sftlab.evaluation import alpacaeval

        return alpacaeval.win_items(judgments, "id")

    def judge_prompt_version(self, data_dir, settings):
        from sftlab.evaluation import alpacaeval

        return alpacaeval.annotator_version(settings["annotator"])
