"""Arena-Hard: gathered files, both judge positions, verdict parsing and the win rate worked out by hand."""

import json
import re
from pathlib import Path

import pytest

from _raw_files import raw_files
from sftlab.benchmarks import benchmark_type, prepare_benchmark_files
from sftlab.benchmarks import arena_hard
from sftlab.benchmarks.arena_hard import RETRY_PROMPT, model_outcomes, needs_retry, parse_verdict
from sftlab.config import prepare
from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.judges import Judge, JudgeResponse
from sftlab.io import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "arena_hard"
PATTERN = re.compile(r"\[\[([AB<>=]+)\]\]")
OURS = {"q1": "391", "q2": "cut -d, -f2", "q3": "no idea"}
# the judge's verdict per question with the baseline as assistant A (game 1), then the model as A (game 2)
VERDICTS = {"q1": ("[[B>>A]]", "[[A>B]]"), "q2": ("[[A=B]]", "[[A=B]]"), "q3": ("[[A>B]]", "no verdict at all")}
#: the judge's answer to the retry (asked for a judgment without any label), per question and game
RETRIED = {("q3", True): "still thinking"}


class ScriptedJudge(Judge):
    """Answers with the scripted verdict of the game the prompt shows (which answer stands as assistant A)."""

    backend = "scripted"
    id = "scripted"

    def __init__(self):
        self.prompts = []

    def complete(self, requests):
        for i, request in enumerate(requests):
            user = request.messages[1]["content"]
            self.prompts.append(user)
            qid = next(q for q, ours in OURS.items() if f"Answer|>\n{ours}\n<|The End" in user)
            model_first = f"Assistant A's Answer|>\n{OURS[qid]}\n<|The End of Assistant A" in user
            if len(request.messages) > 2:  # the retry: the first judgment, then the request for a verdict
                assert [m["role"] for m in request.messages[2:]] == ["assistant", "user"]
                assert request.messages[3]["content"] == RETRY_PROMPT
                yield i, JudgeResponse(text=RETRIED[qid, model_first], prompt_tokens=1)
            else:
                yield i, JudgeResponse(text=f"My final verdict: {VERDICTS[qid][model_first]}", prompt_tokens=1)


@pytest.fixture
def data_dir(tmp_path):
    out = tmp_path / "data"
    prepare_benchmark_files({"type": "arena_hard", "data_dir": str(FIXTURE), "baseline": "gpt-4-0314"}, out)
    return out


def test_prepare_copies_and_checks_baseline_answers(tmp_path, data_dir):
    assert sorted(p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*.*")) == [
        "SOURCE.json", "judge_config.yaml", "model_answer/gpt-4-0314.jsonl", "question.jsonl"]
    limited = prepare_benchmark_files({"type": "arena_hard", "data_dir": str(FIXTURE), "baseline": "gpt-4-0314",
                                       "limit": 2}, tmp_path / "two")
    assert limited["n"] == 2
    with pytest.raises(FileNotFoundError):
        prepare_benchmark_files({"type": "arena_hard", "data_dir": str(FIXTURE), "baseline": "gpt-4-0613"},
                                tmp_path / "other")
    short = tmp_path / "short"
    short.mkdir()
    for name in ("question.jsonl", "judge_config.yaml"):
        (short / name).write_text((FIXTURE / name).read_text())
    (short / "model_answer").mkdir()
    (short / "model_answer" / "gpt-4-0314.jsonl").write_text(
        (FIXTURE / "model_answer" / "gpt-4-0314.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(DataError, match=r"no baseline answer to \['q2', 'q3'\]"):
        prepare_benchmark_files({"type": "arena_hard", "data_dir": str(short), "baseline": "gpt-4-0314"},
                                tmp_path / "short_out")


def test_prepare_downloads_the_files_at_the_pinned_commit(tmp_path, monkeypatch):
    commit = "fedcba9876543210fedcba9876543210fedcba98"
    files = {repo_path: FIXTURE / name for name, repo_path in arena_hard.files("gpt-4-0314").values()}
    with raw_files(tmp_path / "served", commit, files) as url:
        monkeypatch.setattr(arena_hard, "RAW_URL", url)
        source = prepare_benchmark_files({"type": "arena_hard", "baseline": "gpt-4-0314", "arena_hard_commit": commit},
                                         tmp_path / "out")
        with pytest.raises(DataError, match=rf"{url}/{arena_hard.COMMIT}/data/arena-hard-v0.1/question.jsonl: HTTP 404"):
            prepare_benchmark_files({"type": "arena_hard", "baseline": "gpt-4-0314"}, tmp_path / "other")
    assert source["commit"] == commit and source["n"] == 3
    for name, _ in arena_hard.files("gpt-4-0314").values():
        assert (tmp_path / "out" / name).read_bytes() == (FIXTURE / name).read_bytes()


def test_verdicts_and_outcomes():
    assert parse_verdict("thus [[A>>B]].", PATTERN) == "A>>B"
    assert parse_verdict("[[A>B]] or rather [[B>A]]", PATTERN) is None  # two different labels
    assert parse_verdict("[[A>B]] ... final: [[A>B]]", PATTERN) == "A>B"
    assert parse_verdict("no label", PATTERN) is None
    # gen_judgment.py retries only a judgment without any label, not one with several different ones
    assert needs_retry("no label", PATTERN) and not needs_retry("[[A>B]] or rather [[B>A]]", PATTERN)
    # a label outside the five is what the judge said, but counts in no battle (show_result.py: weight 0)
    assert parse_verdict("[[B=A]]", PATTERN) == "B=A" and model_outcomes("B=A", "A<B") == []
    # game 1 shows the baseline as A: its B>>A is a decisive model win (three outcomes of 1)
    assert model_outcomes("B>>A", "A>B") == [1.0, 1.0, 1.0, 1.0]
    assert model_outcomes("A>B", "B>>A") == [0.0, 0.0, 0.0, 0.0]
    assert model_outcomes("A=B", "A=B") == [0.5, 0.5]
    # an unparsable game drops only itself
    assert model_outcomes("B>A", None) == [1.0] and model_outcomes(None, "A>>B") == [1.0, 1.0, 1.0]


def win_rate(questions):
    outcomes = [o for g1, g2 in questions for o in model_outcomes(g1, g2)]
    return 100 * sum(outcomes) / len(outcomes)


def test_worked_cases_of_the_official_battle_code():
    """Issue 23's cases, scored by hand as arena-hard-auto's get_battles_from_row does (before: 0.0 and 16.7)."""
    lost_both_ways = [("A>B", "B>A")] * 50  # game 1: the baseline (A) better; game 2: the baseline (B) better
    won_game_1_only = [("B>A", None)] * 50  # game 2 unparsable: the 50 wins of game 1 stay
    assert win_rate(lost_both_ways + won_game_1_only) == pytest.approx(100 / 3)  # 50 wins of 150 battles
    # ten A<<B verdicts (not one of the five labels) drop those ten games: 10 wins of 30 battles, not of 60
    assert win_rate([("A>B", "B>A")] * 10 + [("B>A", "A<<B")] * 10) == pytest.approx(100 / 3)


def test_judged_win_rate_matches_hand_count(tmp_path, data_dir):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "model_id": "m", "choices": [{"index": 0, "turns": [
        {"content": text}]}]}) + "\n" for q, text in OURS.items()))
    judge = ScriptedJudge()
    settings = {"annotator": None, "seed": 0, "stats": {"n_resamples": 200, "confidence": 0.95, "seed": 0}}
    records, usage, scores = benchmark_type("arena_hard").judge(judge, JudgmentCache(tmp_path / "c.jsonl"), data_dir,
                                                                answers, settings, {})
    # q1: B>>A with the baseline first (1, 1, 1) and A>B with the model first (1); q2: two ties; q3: its game 1
    # (A>B, the baseline better: 0) counts, its game 2 stays without a verdict after its retry and is dropped
    assert scores["value"] == pytest.approx(100 * (4 * 1.0 + 2 * 0.5 + 0.0) / 7)
    assert (scores["n"], scores["n_unparsable"], scores["n_outcomes"], scores["n_retried"]) == (5, 1, 7, 1)
    assert scores["ci_low"] <= scores["value"] <= scores["ci_high"] and scores["metric"] == "win_rate_vs_gpt-4-0314"
    assert len(judge.prompts) == 7 and usage.calls == 7
    assert records[2]["games"][1]["judgment"] == "My final verdict: no verdict at all\nstill thinking"
    assert "retry_hash" in records[2]["games"][1] and "retry_hash" not in records[2]["games"][0]
    # per question, for paired comparisons: 100 × its outcomes summed, and their count
    assert benchmark_type("arena_hard").item_values(records) == {"q1": [400.0, 4.0], "q2": [100.0, 2.0],
                                                                 "q3": [0.0, 1.0]}
    # each question is judged in both positions: the baseline's answer first in game 1, the model's in game 2
    first = judge.prompts[0]
    assert first.index("340 + 51 = 391.") < first.index("Assistant B's Answer|>\n391\n")
    assert [g["score"] for g in records[2]["games"]] == ["A>B", None]


def test_generation_answers_in_model_answer_format(data_dir):
    class EchoGenerator:
        def generate(self, requests):
            return [type("G", (), {"text": r.messages[-1]["content"][::-1]}) for r in requests]

    rows = benchmark_type("arena_hard").generate(EchoGenerator(), data_dir, "m/d/r", 16, 0.0)
    assert [r["question_id"] for r in rows] == ["q1", "q2", "q3"]
    assert rows[0]["choices"][0]["turns"][0]["content"] == "What is 17 times 23? Show the steps."[::-1]


def test_config_defaults():
    config = prepare({"models": {"m": {"source": "random"}}, "datasets": {"d": {"source": "demo"}},
                      "recipes": {"sft": {}}, "judges": {"j": {"type": "openai", "model": "gpt-4-1106-preview"}},
                      "benchmarks": {"ah": {"type": "arena_hard", "judge": "j"}},
                      "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft"],
                                            "benchmarks": ["ah"]}}})
    assert config["benchmarks"]["ah"]["baseline"] == "gpt-4-0314"
    assert config["benchmarks"]["ah"]["max_new_tokens"] == 4096
