"""IFEval through lm-eval's own ifeval task: gathered files, and scores of scripted answers worked out by hand."""

import json
import shutil
from pathlib import Path

import pytest

from sftlab.benchmarks import benchmark_type, prepare_benchmark_files
from sftlab.benchmarks.ifeval import HUB_FILE, ifeval_score
from sftlab.config import ConfigError, prepare
from sftlab.io import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "ifeval"
NLTK_FIXTURE = Path(__file__).parent / "fixtures" / "nltk_data"

# per fixture item: the answer, then (strict, loose) per instruction, worked out from IFEval's rules by hand
ANSWERS = {
    1: ("Waves roll softly home", [(True, True)]),  # no comma
    2: ("The sky is grey today.", [(False, False)]),  # lacks the keyword "blue" in every loose variant too
    3: ("A cat is a small furry animal. Is there anything else I can help with?", [(True, True), (True, True)]),
    # three bullets: strict fails; the loose variant without the first line has exactly two
    4: ("* red\n* blue\n* green", [(False, True)]),
}


class ScriptedLM:
    """An lm-eval LM whose generations are the scripted answers, looked up by prompt."""

    def __new__(cls, answers_by_prompt):
        from lm_eval.api.model import LM

        class _Scripted(LM):
            def generate_until(self, requests, disable_tqdm=False):
                return [answers_by_prompt[r.args[0]] for r in requests]

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return _Scripted()


def test_prepare_copies_checks_and_limits(tmp_path):
    source = prepare_benchmark_files({"type": "ifeval", "data_dir": str(FIXTURE), "limit": 3}, tmp_path / "a")
    items = [json.loads(line) for line in (tmp_path / "a" / HUB_FILE).read_text().splitlines()]
    assert [i["key"] for i in items] == [1, 2, 3] and source["n"] == 3 and source["type"] == "ifeval"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / HUB_FILE).write_text(json.dumps({"key": 1, "prompt": "p", "instruction_id_list": ["a", "b"],
                                            "kwargs": [{}]}) + "\n")
    with pytest.raises(DataError, match="line 1: 2 instructions but 1 kwargs"):
        prepare_benchmark_files({"type": "ifeval", "data_dir": str(bad)}, tmp_path / "b")


def test_scores_of_scripted_answers_match_hand_count(tmp_path, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", str(NLTK_FIXTURE))  # where scoring reads punkt_tab (it never downloads)
    items = [json.loads(line) for line in (FIXTURE / HUB_FILE).read_text().splitlines()]
    lm = ScriptedLM({item["prompt"]: ANSWERS[item["key"]][0] for item in items})
    score = ifeval_score(lm, FIXTURE / HUB_FILE, max_new_tokens=16, metric="prompt_level_strict_acc",
                         apply_chat_template=False)
    checks = [ANSWERS[item["key"]][1] for item in items]
    strict_prompts = sum(all(s for s, _ in c) for c in checks) / len(checks)  # 2 / 4
    loose_prompts = sum(all(lo for _, lo in c) for c in checks) / len(checks)  # 3 / 4
    flat = [x for c in checks for x in c]
    assert (score["value"], score["n"]) == (pytest.approx(100 * strict_prompts), 4) and strict_prompts == 0.5
    assert score["metrics"] == pytest.approx({
        "prompt_level_strict_acc": 50.0, "prompt_level_loose_acc": 100 * loose_prompts,
        "inst_level_strict_acc": 100 * sum(s for s, _ in flat) / len(flat),  # 3 / 5
        "inst_level_loose_acc": 100 * sum(lo for _, lo in flat) / len(flat),  # 4 / 5
    })
    assert score["ci_low"] < score["value"] < score["ci_high"]


def test_registered_with_gathered_files_scored_in_process():
    kind = benchmark_type("ifeval")
    assert (kind.scored_by, kind.gathers_files, kind.judged) == ("evaluate", True, False)
    assert kind.sources({"data_dir": "d"}) == {"input_data": f"d/{HUB_FILE}"} and kind.sources({}) == {}


def test_config_defaults_and_unknown_type():
    base = {"models": {"m": {"source": "random"}}, "datasets": {"d": {"source": "demo"}},
            "recipes": {"sft": {}}, "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft"],
                                                          "benchmarks": ["if"]}}}
    config = prepare({**base, "benchmarks": {"if": {"type": "ifeval"}}})
    assert config["benchmarks"]["if"] == {"type": "ifeval", "metric": "prompt_level_strict_acc",
                                          "max_new_tokens": 1280, "chat_template": True, "batch_size": 8}
    with pytest.raises(ConfigError, match="benchmarks.if.type: 'ifevl' is not one of"):
        prepare({**base, "benchmarks": {"if": {"type": "ifevl"}}})


# sentence counts (nltk's punkt_tab): "Dr." is an abbreviation in tests/fixtures/nltk_data, so the first answer is two
# sentences (fewer than 3: followed) and the second two (not at least 3: not followed, nor in any loose variant)
SENTENCE_ITEMS = [
    {"key": 11, "prompt": "Describe your day in fewer than 3 sentences.",
     "instruction_id_list": ["length_constraints:number_sentences"],
     "kwargs": [{"relation": "less than", "num_sentences": 3}]},
    {"key": 12, "prompt": "Describe the weather in at least 3 sentences.",
     "instruction_id_list": ["length_constraints:number_sentences"],
     "kwargs": [{"relation": "at least", "num_sentences": 3}]},
]
SENTENCE_ANSWERS = {11: "Dr. Smith came home. He slept.", 12: "It rains. It pours."}


@pytest.fixture(autouse=True)
def nltk_search_path(monkeypatch):
    """nltk's search path as it was before each test (scoring puts its nltk folder first)."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))


@pytest.fixture
def offline_node(tmp_path, monkeypatch):
    """A compute node's view: no network (any connection attempt raises), the working directory a fresh project
    without $NLTK_DATA."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access during offline IFEval scoring")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in SENTENCE_ITEMS))
    return data


def test_sentence_counts_scored_offline_from_the_project_nltk_data(offline_node, tmp_path):
    shutil.copytree(NLTK_FIXTURE, tmp_path / "resources" / "nltk_data")
    lm = ScriptedLM({item["prompt"]: SENTENCE_ANSWERS[item["key"]] for item in SENTENCE_ITEMS})
    score = ifeval_score(lm, offline_node, max_new_tokens=16, metric="prompt_level_strict_acc",
                         apply_chat_template=False)
    assert score["metrics"] == pytest.approx({"prompt_level_strict_acc": 50.0, "prompt_level_loose_acc": 50.0,
                                              "inst_level_strict_acc": 50.0, "inst_level_loose_acc": 50.0})


def test_missing_punkt_tab_stops_before_generation_without_download(offline_node):
    from sftlab.offline import NotCached

    # an LM with no scripted answer: a generation request would raise KeyError, a download attempt OSError
    with pytest.raises(NotCached, match=r"punkt_tab.*resources/nltk_data.*never downloads"):
        ifeval_score(ScriptedLM({}), offline_node, max_new_tokens=16, metric="prompt_level_strict_acc")
    with pytest.raises(NotCached, match="punkt_tab"):
        benchmark_type("ifeval").require_local_data({"type": "ifeval"})
