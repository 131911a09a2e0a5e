"""MT-Bench: two-turn questions answered by the model, each turn rated 1-10 by the judge (FastChat's protocol).

In FastChat's llm_judge formats: answers, single-answer grading 1-10, scores with bootstrap CIs.

Files (FastChat's schema; the official ones are fetched by ``download_official`` at a pinned commit):
- ``question.jsonl``: ``{"question_id", "category", "turns": [turn1, turn2], ...}``
- ``judge_prompts.jsonl``: ``{"name", "type", "system_prompt", "prompt_template", "description", "category",
  "output_format"}``; grading uses ``single-v1`` / ``single-math-v1`` (turn 1) and their ``-multi-turn`` forms (turn 2)
- ``reference_answer/gpt-4.jsonl`` and answers: ``{"question_id", "answer_id", "model_id",
  "choices": [{"index": 0, "turns": [...]}], "tstamp"}``
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.generation import Generator, SamplingParams, generate_chats
from sftlab.evaluation.judges import Judge, JudgeRequest, JudgeUsage, run_judge
from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import DataError, download, iter_jsonl, read_jsonl, write_json, write_jsonl, write_text

from .base import BenchmarkType, file_sha256, register_benchmark_type

log = logging.getLogger(__name__)

CATEGORIES = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
#: generation temperature per category (METHODS.md; FastChat's temperature_config)
CATEGORY_TEMPERATURE = {
    "writing": 0.7,
    "roleplay": 0.7,
    "extraction": 0.0,
    "math": 0.0,
    "coding": 0.0,
    "reasoning": 0.0,
    "stem": 0.1,
    "humanities": 0.1,
}
#: FastChat samples categories it does not know at this temperature
DEFAULT_TEMPERATURE = 0.7
MAX_NEW_TOKENS = 1024
#: categories graded against a reference answer
NEED_REF_CATEGORIES = ("math", "reasoning", "coding")
#: FastChat's judge decoding: greedy, up to 2048 tokens
JUDGE_MAX_TOKENS = 2048
#: judge prompt by (reference-guided, turn)
JUDGE_PROMPT_NAMES = {
    (False, 1): "single-v1",
    (True, 1): "single-math-v1",
    (False, 2): "single-v1-multi-turn",
    (True, 2): "single-math-v1-multi-turn",
}
RATING_RANGE = (1.0, 10.0)

FASTCHAT_RAW_URL = "https://raw.githubusercontent.com/lm-sys/FastChat"
FASTCHAT_COMMIT = "587d5cfa1609a43d192cedb8441cac3c17db105d"
OFFICIAL_FILES = {
    "question.jsonl": "fastchat/llm_judge/data/mt_bench/question.jsonl",
    "judge_prompts.jsonl": "fastchat/llm_judge/data/judge_prompts.jsonl",
    "reference_answer/gpt-4.jsonl": "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
}
#: sha256 of official files at FASTCHAT_COMMIT, as other projects pinning that commit record them
#: (the question file's digest agrees between two of them): a download that differs is refused
OFFICIAL_SHA256 = {
    "question.jsonl": "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
    "reference_answer/gpt-4.jsonl": "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f",
}

# FastChat's patterns: "[[8]]" first, "[8]" as fallback; the first match counts
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")


def load_questions(path: str | Path) -> list[dict]:
    questions = []
    for lineno, q in iter_jsonl(path):
        if not isinstance(q.get("question_id"), (int, str)) or not isinstance(q.get("category"), str):
            raise DataError(f"{path}:{lineno}: a question needs question_id and category")
        turns = q.get("turns")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
            raise DataError(f"{path}:{lineno}: turns must be a non-empty list of strings")
        questions.append(q)
    ids = [q["question_id"] for q in questions]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate question_id")
    return questions


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    prompts = {}
    for lineno, p in iter_jsonl(path):
        missing = {"name", "type", "system_prompt", "prompt_template", "output_format"} - set(p)
        if missing:
            raise DataError(f"{path}:{lineno}: judge prompt lacks {sorted(missing)}")
        prompts[p["name"]] = p
    return prompts


def load_answers(path: str | Path) -> dict[Any, list[str]]:
    """question_id -> turns, from a model_answer or reference_answer file (first choice)."""
    answers = {}
    for lineno, a in iter_jsonl(path):
        try:
            turns = a["choices"][0]["turns"]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{path}:{lineno}: an answer needs choices[0].turns") from None
        # some official reference turns are bare numbers (e.g. 12000)
        answers[a["question_id"]] = [str(t) for t in turns]
    return answers


def answer_record(question_id: Any, model_id: str, turns: Sequence[str]) -> dict:
    answer_id = hashlib.sha256(f"{model_id}\0{question_id}\0{turns}".encode()).hexdigest()[:22]
    return {
        "question_id": question_id,
        "answer_id": answer_id,
        "model_id": model_id,
        "choices": [{"index": 0, "turns": list(turns)}],
        "tstamp": time.time(),
    }


def generate_answers(
    generator: Generator,
    questions: Sequence[dict],
    model_id: str,
    max_new_tokens: int = MAX_NEW_TOKENS,
    temperatures: dict[str, float] = CATEGORY_TEMPERATURE,
) -> list[dict]:
    """model_answer records: every question's turns answered in one conversation, at its category's temperature."""
    params = [
        SamplingParams(max_new_tokens=max_new_tokens, temperature=temperatures.get(q["category"], DEFAULT_TEMPERATURE))
        for q in questions
    ]
    turns = generate_chats(generator, [q["turns"] for q in questions], params)
    return [answer_record(q["question_id"], model_id, t) for q, t in zip(questions, turns)]


def parse_rating(judgment: str) -> float | None:
    """The rating in ``[[r]]`` (fallback ``[r]``), or None when absent or outside 1-10."""
    match = _RATING.search(judgment) or _RATING_FALLBACK.search(judgment)
    if not match:
        return None
    rating = float(ast.literal_eval(match.group(1)))
    if not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:
        return None
    return rating


def judge_prompt(
    question: dict, answer_turns: Sequence[str], turn: int, judge_prompts: dict[str, dict], reference: Sequence[str] | None
) -> tuple[str, str, list[dict]]:
    """(judge prompt name, user prompt, chat messages) grading ``turn`` (1 or 2) of an answer."""
    with_ref = question["category"] in NEED_REF_CATEGORIES
    name = JUDGE_PROMPT_NAMES[(with_ref, turn)]
    if name not in judge_prompts:
        raise DataError(f"judge prompts lack {name!r}")
    template = judge_prompts[name]
    if template["output_format"] != "[[rating]]":
        raise DataError(f"judge prompt {name!r} has output format {template['output_format']!r}, expected '[[rating]]'")
    fields: dict[str, str] = {}
    if with_ref:
        if reference is None:
            raise DataError(f"question {question['question_id']} ({question['category']}) has no reference answer")
        fields.update(ref_answer_1=reference[0], ref_answer_2=reference[1] if len(reference) > 1 else "")
    if turn == 1:
        fields.update(question=question["turns"][0], answer=answer_turns[0])
    else:
        fields.update(
            question_1=question["turns"][0],
            question_2=question["turns"][1],
            answer_1=answer_turns[0],
            answer_2=answer_turns[1],
        )
    user_prompt = template["prompt_template"].format(**fields)
    messages = [{"role": "system", "content": template["system_prompt"]}, {"role": "user", "content": user_prompt}]
    return name, user_prompt, messages


def judge_answers(
    judge: Judge,
    cache: JudgmentCache,
    questions: Sequence[dict],
    answers: dict[Any, list[str]],
    judge_prompts: dict[str, dict],
    references: dict[Any, list[str]],
    model_id: str,
    max_tokens: int = JUDGE_MAX_TOKENS,
) -> tuple[list[dict], JudgeUsage]:
    """Judgment records (FastChat's single-grading fields plus category, prompt_hash), one per question and turn."""
    metas, requests_ = [], []
    for q in questions:
        if q["question_id"] not in answers:
            raise DataError(f"no answer to question {q['question_id']}")
        answer = answers[q["question_id"]]
        for turn in range(1, min(len(q["turns"]), 2) + 1):
            name, user_prompt, messages = judge_prompt(q, answer, turn, judge_prompts, references.get(q["question_id"]))
            metas.append((q, turn, name, user_prompt))
            requests_.append(JudgeRequest(messages=messages, max_tokens=max_tokens, temperature=0.0))
    judged = run_judge(judge, requests_, cache)
    records = []
    for (q, turn, name, user_prompt), response, key in zip(metas, judged.responses, judged.keys):
        records.append(
            {
                "question_id": q["question_id"],
                "category": q["category"],
                "turn": turn,
                "model": model_id,
                "judge": [judge.id, name],
                "user_prompt": user_prompt,
                "judgment": response.text,
                "score": parse_rating(response.text),
                "prompt_hash": key,
            }
        )
    return records, judged.usage


def _group_score(records: Sequence[dict], n_resamples: int, confidence: float, seed: int) -> dict:
    valid = [r["score"] for r in records if r["score"] is not None]
    out = mean_with_ci(valid, n_resamples=n_resamples, confidence=confidence, seed=seed)
    out["n_unparsable"] = len(records) - len(valid)
    return out


def score(judgments: Sequence[dict], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Mean rating overall, per turn and per category; unparsable judgments are excluded and counted."""
    result = {"benchmark": "mt_bench", "metric": "mean_rating_1_10"}
    result.update(_group_score(judgments, n_resamples, confidence, seed))
    result["per_turn"] = {
        str(t): _group_score([r for r in judgments if r["turn"] == t], n_resamples, confidence, seed)
        for t in sorted({r["turn"] for r in judgments})
    }
    result["per_category"] = {
        c: _group_score([r for r in judgments if r["category"] == c], n_resamples, confidence, seed)
        for c in sorted({r["category"] for r in judgments})
    }
    result.update(confidence=confidence, n_resamples=n_resamples, seed=seed)
    return result


def download_official(
    out_dir: str | Path, commit: str = FASTCHAT_COMMIT, raw_url: str = FASTCHAT_RAW_URL, timeout_s: float = 60.0
) -> dict:
    """Fetch the official questions, judge prompts and GPT-4 reference answers at ``commit`` into ``out_dir``.

    Each file is checked by the loaders above before it is written (atomically); ``SOURCE.json`` records
    the commit, the URLs and each file's sha256.
    """
    out_dir = Path(out_dir)
    source = {"repository": "lm-sys/FastChat", "commit": commit, "files": {}}
    fetched = {}
    for name, repo_path in OFFICIAL_FILES.items():
        url = f"{raw_url}/{commit}/{repo_path}"
        content = download(url, timeout_s)
        digest = hashlib.sha256(content).hexdigest()
        expected = OFFICIAL_SHA256.get(name) if commit == FASTCHAT_COMMIT else None
        if expected and digest != expected:
            raise DataError(f"{url}: sha256 {digest} differs from the pinned {expected}")
        fetched[name] = content.decode("utf-8")
        source["files"][name] = {"url": url, "sha256": digest}
    for name, text in fetched.items():
        write_text(out_dir / name, text)
    questions = load_questions(out_dir / "question.jsonl")
    prompts = load_judge_prompts(out_dir / "judge_prompts.jsonl")
    references = load_answers(out_dir / "reference_answer/gpt-4.jsonl")
    missing = set(JUDGE_PROMPT_NAMES.values()) - set(prompts)
    unreferenced = [q["question_id"] for q in questions if q["category"] in NEED_REF_CATEGORIES and q["question_id"] not in references]
    if missing or unreferenced:
        raise DataError(f"{out_dir}: judge prompts missing {sorted(missing)}, reference answers missing for {unreferenced}")
    source["n_questions"] = len(questions)
    write_json(out_dir / "SOURCE.json", source)
    log.info("MT-Bench files at FastChat %s: %d questions", commit, len(questions))
    return source


@register_benchmark_type("mtbench")
class MTBench(BenchmarkType):
    scored_by = "judge"
    gathers_files = True
    data_keys = ("fastchat_commit",)
    answer_format = "jsonl"
    generation_input = "question.jsonl"
    max_new_tokens = MAX_NEW_TOKENS
    figures = ("mtbench_categories",)
    paper_key = "mt_bench"

    def sources(self, bench):
        if "data_dir" not in bench:
            return {}  # downloaded from FastChat
        return {name: f"{bench['data_dir']}/{name}" for name in OFFICIAL_FILES}

    def prepare(self, bench, out, pairs_path):
        """question.jsonl, judge_prompts.jsonl and reference_answer/gpt-4.jsonl in FastChat's formats: copied from
        ``data_dir`` or downloaded from FastChat at the pinned commit."""
        if "data_dir" in bench:
            src = Path(bench["data_dir"])
            for name in OFFICIAL_FILES:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, out / name)
            source = {"data_dir": str(src),
                      "files": {name: {"sha256": file_sha256(out / name)} for name in OFFICIAL_FILES}}
        else:
            source = download_official(out, commit=bench.get("fastchat_commit", FASTCHAT_COMMIT))
        questions = load_questions(out / "question.jsonl")
        prompts = load_judge_prompts(out / "judge_prompts.jsonl")
        references = load_answers(out / "reference_answer/gpt-4.jsonl")
        missing = sorted(set(JUDGE_PROMPT_NAMES.values()) - set(prompts))
        if missing:
            raise DataError(f"{out}/judge_prompts.jsonl lacks the judge prompts {missing}")
        questions = questions[: bench.get("limit")]
        unreferenced = [q["question_id"] for q in questions
                        if q["category"] in NEED_REF_CATEGORIES and q["question_id"] not in references]
        if unreferenced:
            raise DataError(f"MT-Bench questions {unreferenced} need a reference answer and have none")
        write_jsonl(out / "question.jsonl", questions)
        return {**source, "n": len(questions)}

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        """Both turns; turn 2 sees the model's turn-1 answer; the temperature is the category's (not ``temperature``)."""
        questions = load_questions(Path(data_dir) / self.generation_input)
        return generate_answers(generator, questions, model_id, max_new_tokens=max_new_tokens)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        data_dir = Path(data_dir)
        answer_rows = read_jsonl(answers_path)
        judgments, usage = judge_answers(
            judge, cache, load_questions(data_dir / "question.jsonl"), load_answers(answers_path),
            load_judge_prompts(data_dir / "judge_prompts.jsonl"),
            load_answers(data_dir / "reference_answer/gpt-4.jsonl"),
            model_id=answer_rows[0]["model_id"] if answer_rows else "",
            max_tokens=judge_config.get("max_tokens", JUDGE_MAX_TOKENS))
        return judgments, usage, score(judgments, **settings["stats"])

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
