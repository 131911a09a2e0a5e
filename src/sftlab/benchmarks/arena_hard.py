"""Arena-Hard (v0.1): 500 hard user prompts; the judge compares the model's answer with a baseline's (GPT-4-0314)
twice, once in each position, on a five-point verdict ``[[A>>B]] … [[B>>A]]``; the score is the model's win rate
against the baseline, a decisive verdict counting three times.

Scored as lmarena/arena-hard-auto scores it (``gen_judgment.py`` and the Bradley-Terry ``show_result.py`` of
2024-04-15 onwards, whose ``get_battles_from_row`` this follows; with one model against the baseline its
Bradley-Terry win rate is the mean of the battle outcomes, ties counting one half):

* each game stands alone: a game without a verdict is dropped, the other game of its question still counts;
* a judgment with no verdict label at all gets one retry, the conversation continued with
  ``RETRY_PROMPT``; the two answers are joined and parsed together (several different labels: no retry);
* only the five labels ``A>>B, A>B, A=B, B>A, B>>A`` count; anything else the regex matches (``B=A``, ``A<<B``, …)
  is kept in the judgment record but counts in no battle.

Its files — ``question.jsonl``, ``model_answer/<baseline>.jsonl`` and the judge's prompt in ``judge_config.yaml`` —
come from lmarena/arena-hard-auto at a pinned commit, or from ``data_dir`` in the same formats (test fixtures).
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import yaml

from sftlab.io import DataError, download, read_jsonl, write_jsonl, write_text

from .base import BenchmarkType, file_sha256, register_benchmark_type

REPOSITORY = "lmarena/arena-hard-auto"
RAW_URL = "https://raw.githubusercontent.com/lmarena/arena-hard-auto"
# "update model answers", 2024-04-09: v0.1 as released, in its original format (question_id, turns). Its
# question.jsonl and gpt-4-0314 answers are byte-identical to every later commit up to the reformat of 2025-04-18
# (900183d); judge_config.yaml only gained its model list afterwards.
COMMIT = "e0a8ea1df42c1df76451a6cd04b14e31ff992b87"
BASELINE = "gpt-4-0314"
JUDGE_MAX_TOKENS = 4096
#: gen_judgment.py's follow-up when a judgment holds no verdict label
RETRY_PROMPT = "continue your judgment and finish by outputting a final verdict label"
#: the judge's verdict label → the score of assistant A and the battles it counts for (show_result.py's weights);
#: no other label counts
DECISIVE_WEIGHT = 3
A_SCORE = {"A>>B": (1.0, DECISIVE_WEIGHT), "A>B": (1.0, 1), "A=B": (0.5, 1), "B>A": (0.0, 1),
           "B>>A": (0.0, DECISIVE_WEIGHT)}


def files(baseline: str) -> dict[str, tuple[str, str]]:
    """Each gathered file: its role → (path in the gathered directory, path in the repository)."""
    return {"questions": ("question.jsonl", "data/arena-hard-v0.1/question.jsonl"),
            "baseline": (f"model_answer/{baseline}.jsonl", f"data/arena-hard-v0.1/model_answer/{baseline}.jsonl"),
            "judge_config": ("judge_config.yaml", "config/judge_config.yaml")}


def answer_text(record: dict) -> str:
    return record["choices"][0]["turns"][0]["content"]


def load_judge_config(path: Path) -> dict:
    cfg = yaml.safe_load(Path(path).read_text())
    missing = [k for k in ("system_prompt", "prompt_template", "regex_pattern") if k not in (cfg or {})]
    if missing:
        raise DataError(f"{path}: the judge config lacks {missing}")
    return cfg


def parse_verdict(judgment: str, pattern: re.Pattern) -> str | None:
    """The one label the judgment gives (gen_judgment.py's ``get_score``), counted or not; None when there is none
    or several different ones."""
    labels = {m.strip("\n") for m in pattern.findall(judgment) if m}
    return labels.pop() if len(labels) == 1 else None


def needs_retry(judgment: str, pattern: re.Pattern) -> bool:
    """Whether the judgment holds no label at all (several different ones are final: no retry)."""
    return not any(pattern.findall(judgment))


def game_outcomes(verdict: str | None, model_first: bool) -> list[float]:
    """The model's battle outcomes of one game: none unless the verdict is one of the five labels. Game 1 shows the
    baseline as A (``model_first`` false), game 2 the model."""
    if verdict not in A_SCORE:
        return []
    a, weight = A_SCORE[verdict]
    return [a if model_first else 1.0 - a] * weight


def model_outcomes(verdict_baseline_first: str | None, verdict_model_first: str | None) -> list[float]:
    """The model's battle outcomes of one question, both games."""
    return game_outcomes(verdict_baseline_first, False) + game_outcomes(verdict_model_first, True)


def judge_messages(cfg: dict, question: str, answer_a: str, answer_b: str) -> list[dict]:
    (template,) = cfg["prompt_template"]  # v0.1: one single-turn template
    user = template.format(question_1=question, answer_1=answer_a, answer_2=answer_b)
    return [{"role": "system", "content": cfg["system_prompt"]}, {"role": "user", "content": user}]


@register_benchmark_type("arena_hard")
class ArenaHard(BenchmarkType):
    scored_by = "judge"
    gathers_files = True
    data_keys = ("arena_hard_commit", "baseline")
    answer_format = "jsonl"
    generation_input = "question.jsonl"
    max_new_tokens = 4096

    def sources(self, bench):
        if "data_dir" not in bench:
            return {}  # downloaded
        return {role: f"{bench['data_dir']}/{name}" for role, (name, _) in files(bench["baseline"]).items()}

    def prepare(self, bench, out, pairs_path):
        wanted = dict(files(bench["baseline"]).values())
        if "data_dir" in bench:
            for name in wanted:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(Path(bench["data_dir"]) / name, out / name)
            source = {"data_dir": bench["data_dir"]}
        else:
            commit = bench.get("arena_hard_commit", COMMIT)
            for name, repo_path in wanted.items():
                write_text(out / name, download(f"{RAW_URL}/{commit}/{repo_path}").decode("utf-8"))
            source = {"repository": REPOSITORY, "commit": commit}
        load_judge_config(out / "judge_config.yaml")
        questions = read_jsonl(out / "question.jsonl")[: bench.get("limit")]
        baseline = {a["question_id"] for a in read_jsonl(out / f"model_answer/{bench['baseline']}.jsonl")}
        missing = [q["question_id"] for q in questions if q["question_id"] not in baseline]
        if missing:
            raise DataError(f"{out}/model_answer/{bench['baseline']}.jsonl: no baseline answer to {missing[:3]}")
        write_jsonl(out / "question.jsonl", questions)
        return {**source, "baseline": bench["baseline"], "n": len(questions),
                "files": {name: {"sha256": file_sha256(out / name)} for name in wanted}}

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        """Answers in arena-hard-auto's model_answer format, one turn each."""
        from sftlab.evaluation.generation import GenerationRequest, SamplingParams

        questions = read_jsonl(Path(data_dir) / self.generation_input)
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
        generations = generator.generate(
            [GenerationRequest([{"role": "user", "content": q["turns"][0]["content"]}], params) for q in questions])
        return [{"question_id": q["question_id"], "answer_id": f"{model_id}:{q['question_id']}", "model_id": model_id,
                 "choices": [{"index": 0, "turns": [{"content": g.text}]}], "tstamp": time.time()}
                for q, g in zip(questions, generations)]

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        from sftlab.evaluation.judges import JudgeRequest, run_judge
        from sftlab.evaluation.stats import mean_with_ci

        data_dir = Path(data_dir)
        cfg = load_judge_config(data_dir / "judge_config.yaml")
        pattern = re.compile(cfg["regex_pattern"])
        questions = read_jsonl(data_dir / "question.jsonl")
        (baseline_file,) = (data_dir / "model_answer").glob("*.jsonl")
        baseline = {a["question_id"]: answer_text(a) for a in read_jsonl(baseline_file)}
        answers = {a["question_id"]: answer_text(a) for a in read_jsonl(answers_path)}
        missing = [q["question_id"] for q in questions if q["question_id"] not in answers]
        if missing:
            raise DataError(f"{answers_path}: no answer to questions {missing[:3]}")
        max_tokens = judge_config.get("max_tokens", JUDGE_MAX_TOKENS)
        requests_ = []
        for q in questions:
            prompt, ours, theirs = q["turns"][0]["content"], answers[q["question_id"]], baseline[q["question_id"]]
            for a, b in ((theirs, ours), (ours, theirs)):  # the baseline first, then the model first
                requests_.append(JudgeRequest(messages=judge_messages(cfg, prompt, a, b), max_tokens=max_tokens))
        judged = run_judge(judge, requests_, cache)
        texts = [r.text for r in judged.responses]
        keys = [[k] for k in judged.keys]
        retry = [i for i, text in enumerate(texts) if needs_retry(text, pattern)]
        if retry:  # one more turn for each judgment without a label, as gen_judgment.py asks
            again = run_judge(judge, [retry_request(requests_[i], texts[i]) for i in retry], cache)
            judged.usage = judged.usage.merged(again.usage)
            for i, response, key in zip(retry, again.responses, again.keys):
                texts[i] = f"{texts[i]}\n{response.text}"
                keys[i].append(key)
        records, outcomes, unparsable, uncounted = [], [], 0, 0
        for i, q in enumerate(questions):
            games = [{"judgment": texts[j], "score": parse_verdict(texts[j], pattern), "prompt_hash": keys[j][0],
                      **({"retry_hash": keys[j][1]} if len(keys[j]) > 1 else {})} for j in (2 * i, 2 * i + 1)]
            records.append({"question_id": q["question_id"], "cluster": q.get("cluster", ""), "judge": judge.id,
                            "baseline": baseline_file.stem, "games": games})
            verdicts = [g["score"] for g in games]
            outcomes += model_outcomes(*verdicts)
            unparsable += verdicts.count(None)
            uncounted += sum(v is not None and v not in A_SCORE for v in verdicts)
        stats = settings["stats"]
        win = mean_with_ci(outcomes, **stats)
        n_games = 2 * len(questions)
        scores = {"benchmark": "arena_hard", "metric": f"win_rate_vs_{baseline_file.stem}",
                  **{k: None if win[k] is None else 100.0 * win[k] for k in ("value", "ci_low", "ci_high")},
                  # n: games counted; n_unparsable: games not counted (no single label, or n_other_label of them a
                  # label outside the five); n_outcomes: battles, a decisive verdict's three
                  "n": n_games - unparsable - uncounted, "n_unparsable": unparsable + uncounted,
                  "n_other_label": uncounted, "n_retried": len(retry), "n_outcomes": win["n"],
                  "n_questions": len(questions), "baseline": baseline_file.stem, **stats}
        return records, judged.usage, scores

    def item_values(self, judgments):
        """Per question: 100 × its battle outcomes summed, and their count (a decisive verdict's three included)."""
        items = {}
        for r in judgments:
            outcomes = model_outcomes(*(g["score"] for g in r["games"]))
            if outcomes:
                items[str(r["question_id"])] = [100.0 * sum(outcomes), float(len(outcomes))]
        return items

    def judge_prompt_version(self, data_dir, settings):
        return f"arena-hard-auto judge_config.yaml sha256:{file_sha256(Path(data_dir) / 'judge_config.yaml')[:12]}"


def retry_request(request, judgment: str):
    """The conversation continued after a judgment without a verdict: its answer, then ``RETRY_PROMPT``."""
    return replace(request, messages=[*request.messages, {"role": "assistant", "content": judgment},
                                      {"role": "user", "content": RETRY_PROMPT}])
