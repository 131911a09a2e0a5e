"""Judged benchmarks in the workflow: config schema and references, gathered input files, judges table and figure."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pytest

from sftlab.config import ConfigError, prepare
from sftlab.benchmarks import prepare_benchmark_files
from sftlab.io import DataError
from sftlab.report.judges import judged_scores, judges_caption, judges_table, mtbench_categories
from sftlab.report.tables import judged_columns_note, load_scores, main_table

ROOT = Path(__file__).resolve().parents[1]
DEMO_MT = ROOT / "workflow" / "benchmarks" / "mt_bench_demo"
DEMO_AE = ROOT / "workflow" / "benchmarks" / "alpaca_eval_demo"

BASE = {
    "models": {"m": {"source": "random"}},
    "datasets": {"d": {"source": "demo"}},
    "recipes": {"r": {}},
    "judges": {
        "gpt": {"type": "openai", "model": "gpt-4-turbo"},
        "local": {"type": "hf", "model": "m", "demo_quality": True},
    },
    "benchmarks": {
        "mt": {"type": "mtbench", "judge": "gpt"},
        "ae": {"type": "alpacaeval", "judge": "local", "data_dir": "x"},
        "pref": {"type": "preference", "judge": "gpt", "dataset": "d"},
        "ir": {"type": "implicit_reward", "dataset": "d"},
    },
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["r"], "benchmarks": ["mt", "ae", "pref", "ir"]}},
}


def changed(change) -> dict:
    raw = copy.deepcopy(BASE)
    change(raw)
    return raw


def test_judges_and_judged_benchmarks_get_their_defaults():
    cfg = prepare(copy.deepcopy(BASE))
    gpt = cfg["judges"]["gpt"]
    assert gpt["base_url"] == "https://api.openai.com/v1" and gpt["api_key_env"] == "OPENAI_API_KEY"
    assert (gpt["max_concurrency"], gpt["max_retries"], gpt["timeout_s"], gpt["demo_quality"]) == (8, 6, 120, False)
    assert cfg["judges"]["local"]["batch_size"] == 8 and cfg["judges"]["local"]["demo_quality"] is True
    mt, ae, pref, ir = (cfg["benchmarks"][b] for b in ("mt", "ae", "pref", "ir"))
    assert (mt["max_new_tokens"], mt["backend"], mt["n_resamples"]) == (1024, "transformers", 2000)
    assert "data_dir" not in mt and "fastchat_commit" not in mt  # absent: the official files at the pinned commit
    assert (ae["annotator"], ae["max_new_tokens"], ae["temperature"]) == ("weighted_alpaca_eval_gpt4_turbo", 2048, 0.0)
    assert (pref["max_new_tokens"], pref["annotator"]) == (512, "weighted_alpaca_eval_gpt4_turbo")
    assert (ir["beta"], ir["max_length"]) == (0.1, 1024)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda c: c["benchmarks"]["mt"].update(judge="nobody"), "benchmarks.mt.judge"),
        (lambda c: c["benchmarks"]["ir"].update(dataset="nothing"), "benchmarks.ir.dataset"),
        (lambda c: c["benchmarks"]["mt"].pop("judge"), "benchmarks.mt"),
        (lambda c: c["benchmarks"]["pref"].pop("dataset"), "benchmarks.pref"),
        (lambda c: c["judges"]["local"].update(base_url="http://x"), "judges.local"),
        (lambda c: c["judges"]["gpt"].update(api_key="sk-do-not-put-keys-here"), "judges.gpt"),
        (lambda c: c["judges"]["gpt"].update(type="anthropic"), "judges.gpt.type"),
        (lambda c: c["benchmarks"]["ae"].update(annotator="gpt4_made_up"), "benchmarks.ae.annotator"),
        (lambda c: c["benchmarks"]["mt"].update(fastchat_commit="main"), "benchmarks.mt.fastchat_commit"),
    ],
)
def test_bad_judge_settings_name_the_key(change, key):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        prepare(changed(change))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mtbench_files_from_a_data_dir_with_a_limit(tmp_path):
    source = prepare_benchmark_files({"type": "mtbench", "data_dir": str(DEMO_MT), "limit": 4}, tmp_path)
    questions = [json.loads(line) for line in (tmp_path / "question.jsonl").read_text().splitlines()]
    all_questions = [json.loads(line) for line in (DEMO_MT / "question.jsonl").read_text().splitlines()]
    assert questions == all_questions[:4] and len(all_questions) == 8
    assert {q["category"] for q in all_questions} == {"writing", "roleplay", "reasoning", "math", "coding",
                                                     "extraction", "stem", "humanities"}
    assert (tmp_path / "judge_prompts.jsonl").read_bytes() == (DEMO_MT / "judge_prompts.jsonl").read_bytes()
    assert source["n"] == 4 and source["limit"] == 4
    assert source["files"]["judge_prompts.jsonl"]["sha256"] == sha256(DEMO_MT / "judge_prompts.jsonl")
    assert json.loads((tmp_path / "SOURCE.json").read_text()) == source


def test_mtbench_question_needing_a_reference_without_one_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "reference_answer").mkdir(parents=True)
    for name in ("question.jsonl", "judge_prompts.jsonl"):
        (data / name).write_bytes((DEMO_MT / name).read_bytes())
    (data / "reference_answer" / "gpt-4.jsonl").write_text("")
    with pytest.raises(DataError, match=r"\[82\] need a reference answer"):
        prepare_benchmark_files({"type": "mtbench", "data_dir": str(data), "limit": 2}, tmp_path / "out")
    # the first question (writing) needs none
    assert prepare_benchmark_files({"type": "mtbench", "data_dir": str(data), "limit": 1}, tmp_path / "ok")["n"] == 1


def test_alpacaeval_eval_set_with_a_limit(tmp_path):
    source = prepare_benchmark_files({"type": "alpacaeval", "data_dir": str(DEMO_AE), "limit": 6}, tmp_path)
    items = json.loads((tmp_path / "eval_set.json").read_text())
    assert items == json.loads((DEMO_AE / "eval_set.json").read_text())[:6]
    assert all(set(i) == {"instruction", "output", "generator", "dataset"} for i in items)
    assert source["sha256"] == sha256(DEMO_AE / "eval_set.json") and source["n"] == 6


def test_preference_pairs_are_checked(tmp_path):
    pair = {"id": "p1", "prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello", "rejected": "No"}
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(json.dumps({**pair, "id": f"p{k}"}) for k in range(5)) + "\n")
    bench = {"type": "preference", "dataset": "d", "limit": 3}
    assert prepare_benchmark_files(bench, tmp_path / "out", pairs_path=good)["n"] == 3
    assert len((tmp_path / "out" / "pairs.jsonl").read_text().splitlines()) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({k: v for k, v in pair.items() if k != "chosen"}) + "\n")
    with pytest.raises(DataError, match=r"'p1' lacks \['chosen'\]"):
        prepare_benchmark_files(bench, tmp_path / "o2", pairs_path=bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="no preference pairs"):
        prepare_benchmark_files({"type": "implicit_reward", "dataset": "d"}, tmp_path / "o3", pairs_path=empty)


def write_score(root: Path, recipe: str, benchmark: str, **score) -> Path:
    path = root / "results" / "tiny" / "demo" / "runs" / recipe / "scores" / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, **score}))
    return path


DECODING = [{"max_tokens": 2048, "temperature": 0.0, "top_logprobs": 0}]


def judged(name, demo, calls, cached, prompt, completion, **identity):
    judge = {"name": name, "id": f"x:{name}", "backend": "hf" if demo else "openai", "demo_quality": demo,
             "model": name, "prompt_version": "v1", "decoding": DECODING, **identity}
    return {"judge": judge,
            "judge_cost": {"calls": calls, "cached": cached, "prompt_tokens": prompt, "completion_tokens": completion}}


@pytest.fixture
def score_files(tmp_path):
    per_category = {"math": {"value": 4.0, "ci_low": 3.0, "ci_high": 5.0, "n": 2, "n_unparsable": 0},
                    "writing": {"value": None, "ci_low": None, "ci_high": None, "n": 0, "n_unparsable": 2}}
    return [
        write_score(tmp_path, "sft", "mt", metric="mean_rating_1_10", value=4.0, ci_low=3.0, ci_high=5.0, n=2,
                    n_unparsable=2, per_category=per_category, **judged("local", True, 4, 0, 1000, 40)),
        write_score(tmp_path, "minorsft", "mt", metric="mean_rating_1_10", value=6.5, ci_low=6.0, ci_high=7.0, n=4,
                    n_unparsable=0, per_category={"math": {"value": 6.0, "ci_low": 5.0, "ci_high": 7.0, "n": 2},
                                                  "writing": {"value": 7.0, "ci_low": 7.0, "ci_high": 7.0, "n": 2}},
                    **judged("local", True, 1, 3, 900, 35)),
        write_score(tmp_path, "sft", "ae", metric="win_rate", value=50.0, ci_low=20.0, ci_high=80.0, n=6,
                    n_unparsable=1, **judged("gpt", False, 7, 0, 7000, 7)),
    ]


def test_judges_table_sums_cost_per_judge_and_benchmark(score_files):
    table = judges_table(judged_scores(score_files))
    rows = {(r.judge, r.benchmark): r for r in table.itertuples()}
    assert sorted(rows) == [("gpt", "ae"), ("local", "mt")]
    mt = rows[("local", "mt")]
    # by hand: judgments 2+2 and 4+0; requests (calls + cached) 4+0 and 1+3; tokens summed over the two runs
    assert (mt.runs, mt.judgments, mt.unparsable, mt.requests, mt.new_calls) == (2, 8, 2, 8, 5)
    assert (mt.prompt_tokens, mt.completion_tokens, mt.demo_quality) == (1900, 75, True)
    ae = rows[("gpt", "ae")]
    assert (ae.runs, ae.judgments, ae.requests, ae.prompt_tokens) == (1, 7, 7, 7000)
    assert judges_caption(table) == (
        "Judges: gpt (x:gpt): 7 requests (7 new calls in the last runs), 7000 prompt + 7 completion tokens; "
        "local (x:local, demo quality): 8 requests (5 new calls in the last runs), 1900 prompt + 75 completion tokens.")
    assert judges_caption(judges_table(judged_scores([]))).startswith("Judges: none")


def test_a_judged_score_without_its_judge_reaches_no_table(tmp_path):
    """A Scores file written by the judge rule before it recorded the judge's model, prompt and decoding is refused."""
    old = judged("gpt", False, 1, 0, 10, 1)
    for key in ("model", "prompt_version", "decoding"):
        del old["judge"][key]
    path = write_score(tmp_path, "sft", "ae", metric="win_rate", value=50.0, **old)
    with pytest.raises(ValueError, match=r"ae.json: a judged score without its judge's model, prompt_version, decoding"):
        load_scores([path])
    with pytest.raises(ValueError, match="without its judge's id"):
        load_scores([write_score(tmp_path, "sft", "mt", metric="m", value=1.0, judge_cost={"calls": 1})])
    # a score no judge produced passes, with no judge
    plain = load_scores([write_score(tmp_path, "sft", "mmlu", metric="acc", value=0.5)])
    assert plain["judged_by"].tolist() == [None] and plain["judge_mark"].tolist() == [""]


def test_a_column_never_mixes_judges_silently(tmp_path):
    """Two judges in one column: every judged cell carries its judge's mark and the note gives the legend; a column
    under one judge is unmarked and named in the note."""
    paths = [write_score(tmp_path, "sft", "ae", metric="win_rate", value=50.0, **judged("gpt", False, 1, 0, 1, 1)),
             write_score(tmp_path, "dpo", "ae", metric="win_rate", value=60.0,
                         **judged("gpt", False, 1, 0, 1, 1, prompt_version="v2")),
             write_score(tmp_path, "sft", "mt", metric="m", value=6.0, **judged("qwen", False, 1, 0, 1, 1)),
             write_score(tmp_path, "dpo", "mt", metric="m", value=7.0, **judged("qwen", False, 1, 0, 1, 1))]
    scores = load_scores(paths)
    table = main_table(scores, [("tiny", "demo", "sft"), ("tiny", "demo", "dpo")], ["ae", "mt"])
    assert table["ae"].tolist() == ["50.00 (J1)", "60.00 (J2)"]  # same model, another prompt: another judge
    assert table["mt"].tolist() == ["6.00", "7.00"]
    assert judged_columns_note(scores) == (
        "Judged columns: ae by x:gpt (mixed judges: cells marked); mt by x:qwen. "
        "J1 = x:gpt (prompt v1; decoding max_tokens 2048, temperature 0); "
        "J2 = x:gpt (prompt v2; decoding max_tokens 2048, temperature 0).")


def test_mtbench_category_figure_is_written(score_files, tmp_path):
    scores = judged_scores(score_files)
    paths = mtbench_categories(scores[scores["benchmark"] == "mt"], tmp_path / "fig")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)


def test_every_registered_benchmark_type_has_its_schema_branch_and_back():
    """A benchmark type is one module plus its schema branch: neither may exist without the other."""
    from sftlab.benchmarks import BENCHMARK_TYPES
    from sftlab.config import load_schema

    branches = {b["if"]["properties"]["type"]["const"] for b in load_schema()["$defs"]["benchmark"]["allOf"]}
    assert branches == set(BENCHMARK_TYPES)
    for name, cls in BENCHMARK_TYPES.items():
        assert cls.scored_by in ("evaluate", "implicit_reward", "log_likelihood", "judge"), name
        assert (cls.answer_format is not None) == (cls.scored_by == "judge"), name


def test_a_step_a_type_does_not_have_is_refused_by_name():
    """Asking an unjudged type to judge, or a judged one to score in-process, names the type and the rule that
    scores it (a step absent by design, not an unbuilt one)."""
    from sftlab.benchmarks import BENCHMARK_TYPES
    from sftlab.benchmarks.base import StepNotInType

    kinds = [cls() for cls in BENCHMARK_TYPES.values()]
    unjudged = next(t for t in kinds if not t.judged)
    judged = next(t for t in kinds if t.judged)
    with pytest.raises(StepNotInType, match=rf"{unjudged.name!r} has no judging .*rule {unjudged.scored_by!r}"):
        unjudged.judge(None, None, Path("."), "answers.jsonl", {}, {})
    with pytest.raises(StepNotInType, match=rf"{judged.name!r} has no in-process scoring .*rule 'judge'"):
        judged.evaluate(None, None, {}, {})
