"""Judged win rate on preference test sets (ROSE's SHP, StackExchange, HH-RLHF evaluation).

The model answers each test pair's prompt; a pairwise judge compares that answer with the pair's preferred
(``chosen``) answer using an AlpacaEval annotator, and the win rate over pairs (ties half) is reported
overall and per subtask, with bootstrap CIs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.generation import Generator, GenerationRequest, SamplingParams
from sftlab.evaluation.judges import Judge, JudgeUsage
from sftlab.io import DataError, read_jsonl, write_jsonl

from .alpacaeval import PairwiseAnnotator, annotate_pairs, annotator_version, get_annotator, win_items, win_rate
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


def prompt_text(messages: Sequence[dict]) -> str:
    """The instruction shown to the judge: a single user turn as is, a longer conversation with role labels."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def generate_answers(
    generator: Generator, pairs: Sequence[dict], max_new_tokens: int = 512, temperature: float = 0.0
) -> list[dict]:
    """``{"id", "subtask", "answer"}`` per pair: the model's reply to the pair's prompt."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    generations = generator.generate([GenerationRequest(list(p["prompt"]), params) for p in pairs])
    return [{"id": p["id"], "subtask": p.get("subtask", ""), "answer": g.text} for p, g in zip(pairs, generations)]


def judge_answers(
    judge: Judge,
    cache: JudgmentCache,
    annotator: PairwiseAnnotator,
    pairs: Sequence[dict],
    answers: Sequence[dict],
    seed: int = 0,
) -> tuple[list[dict], JudgeUsage]:
    """One annotation per pair (reference = chosen answer as output_1, model answer as output_2), with id and subtask."""
    by_id = {a["id"]: a["answer"] for a in answers}
    missing = [p["id"] for p in pairs if p["id"] not in by_id]
    if missing:
        raise DataError(f"{len(missing)} preference pairs have no model answer, e.g. {missing[0]!r}")
    items = [
        {"instruction": prompt_text(p["prompt"]), "output_1": p["chosen"], "output_2": by_id[p["id"]]} for p in pairs
    ]
    annotations, usage = annotate_pairs(judge, cache, annotator, items, seed=seed)
    for pair, annotation in zip(pairs, annotations):
        annotation.update(id=pair["id"], subtask=pair.get("subtask", ""))
    return annotations, usage


def score(annotations: Sequence[dict], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Win rate (%) of the model's answers against the preferred answers, overall and per subtask."""
    result = {"benchmark": "preference", "metric": "win_rate_vs_chosen"}
    result.update(win_rate([a["preference"] for a in annotations], n_resamples, confidence, seed))
    result["per_subtask"] = {
        s: win_rate([a["preference"] for a in annotations if a["subtask"] == s], n_resamples, confidence, seed)
        for s in sorted({a["subtask"] for a in annotations})
    }
    result.update(confidence=confidence, n_resamples=n_resamples, seed=seed)
    return result


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
        pairs = read_jsonl(Path(data_dir) / self.generation_input)
        return generate_answers(generator, pairs, max_new_tokens=max_new_tokens, temperature=temperature)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        judgments, usage = judge_answers(judge, cache, get_annotator(settings["annotator"]),
                                         read_jsonl(Path(data_dir) / "pairs.jsonl"), read_jsonl(answers_path),
                                         seed=settings["seed"])
        scores = score(judgments, **settings["stats"])
        scores["annotator"] = settings["annotator"]
        return judgments, usage, scores

    def item_values(self, judgments):
        return win_items(judgments, "id")

    def judge_prompt_version(self, data_dir, settings):
        return annotator_version(settings["annotator"])
