"""Judged win rate on preference test sets (ROSE's SHP, StackExchange, HH-RLHF evaluation).

The model answers each pair's prompt; a pairwise judge compares that answer with the pair's preferred
(``chosen``) answer using an AlpacaEval annotator, and the win rate over pairs (ties half) is reported
overall and per subtask, with bootstrap CIs.
"""

from __future__ import annotations

from typing import Sequence

from sftlab.evaluation.alpacaeval import PairwiseAnnotator, annotate_pairs, win_rate
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.generation import Generator, GenerationRequest, SamplingParams
from sftlab.evaluation.judges import Judge, JudgeUsage
from sftlab.io import DataError


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
