"""Loaders on fixture files in the public datasets' exact schemas; malformed rows; the demo corpus generator."""

import re
from pathlib import Path

import pytest

from sftlab.data import demo
from sftlab.data.loaders import FORMATS, PREFERENCE_FORMATS, convert, iter_rows_local
from sftlab.data.prepare import prepare_dataset
from sftlab.io import DataError

FIXTURES = Path(__file__).parent / "fixtures"
BAD = FIXTURES / "bad"


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def system(text):
    return {"role": "system", "content": text}


def load(name, fmt, source="src", **kwargs):
    return convert(iter_rows_local(FIXTURES / name), fmt, source=source, **kwargs)


def local_cfg(path, fmt, **extra):
    """A datasets entry as the schema leaves it after filling defaults."""
    return {"source": "local", "path": str(path), "format": fmt, "heldout": 0, "seed": 0, "on_bad_rows": "error",
            "first_turn_only": False, **extra}


def test_every_config_format_has_a_loader():
    assert set(FORMATS) == {"alpaca", "messages", "sharegpt", "hh_rlhf", "shp", "stackexchange", "mmlu", "tydiqa",
                            "exam_mmlu", "exam_ceval", "exam_financeiq"}
    assert PREFERENCE_FORMATS == {"hh_rlhf", "shp", "stackexchange"}


# --- SFT formats ---------------------------------------------------------------------------------------------

def test_alpaca():
    items = load("alpaca.json", "alpaca", source="alpaca")
    assert [it["messages"] for it in items] == [
        [user("Give three tips for staying healthy."),
         assistant("1. Eat a balanced diet and make sure to include plenty of fruits and vegetables.\n"
                   "2. Exercise regularly to keep your body active and strong.\n"
                   "3. Get enough sleep and maintain a consistent sleep schedule.")],
        # a non-empty input follows the instruction after a blank line
        [user("Translate the following sentence into French.\n\nWhere is the nearest train station?"),
         assistant("Où se trouve la gare la plus proche ?")],
        [user("What are the three primary colors?"), assistant("The three primary colors are red, blue, and yellow.")],
        [user("Classify the following animal as a mammal, bird or reptile.\n\nPenguin"), assistant("Bird")],
    ]
    # Alpaca rows have no id: they get the source name and the row's position
    assert [it["id"] for it in items] == ["alpaca-0000000", "alpaca-0000001", "alpaca-0000002", "alpaca-0000003"]
    assert {it["source"] for it in items} == {"alpaca"}


def test_ultrachat_multi_turn():
    items = load("ultrachat.jsonl", "messages", source="ultrachat")
    assert [it["id"] for it in items] == [
        "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d",
    ]
    assert items[0]["messages"] == [
        user("How does photosynthesis work in plants?"),
        assistant("Plants capture light energy with chlorophyll and use it to turn carbon dioxide and water into "
                  "glucose and oxygen."),
        user("Where in the cell does this happen?"),
        assistant("It happens in the chloroplasts, mainly in the leaf's mesophyll cells."),
    ]
    assert items[1]["messages"] == [
        user("Write a haiku about autumn leaves."),
        assistant("Crimson leaves drifting\nwhispering to the cold ground\nsummer says goodbye"),
    ]
    # a trailing user turn with no answer teaches nothing: it is dropped
    assert items[2]["messages"] == [
        user("Can you recommend a good book on the history of Rome?"),
        assistant("SPQR by Mary Beard is a readable and well-researched history of ancient Rome."),
        user("Is it suitable for beginners?"),
        assistant("Yes. It assumes no prior knowledge and explains the sources as it goes."),
    ]
    assert {it["source"] for it in items} == {"ultrachat"}


def test_tulu_mixture_keeps_ids_and_subset_as_source():
    items = load("tulu.jsonl", "messages", source="tulu")
    assert [(it["id"], it["source"]) for it in items] == [
        ("flan_v2_12", "flan_v2"), ("oasst1_2871", "oasst1"), ("code_alpaca_305", "code_alpaca")]
    assert items[1]["messages"] == [
        user("What is the capital of Australia?"),
        assistant("The capital of Australia is Canberra."),
        user("Why not Sydney?"),
        assistant("Canberra was chosen as a compromise between Sydney and Melbourne, the two largest cities."),
    ]
    assert items[2]["messages"] == [
        system("You are a helpful programming assistant."),
        user("Write a Python function that returns the square of a number."),
        assistant("def square(x):\n    return x * x"),
    ]


def test_mmlu_rows_become_less_prompts_with_the_subject_as_subtask():
    rows = [("x", {"question": "What is 2 + 2?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "22"],
                   "answer": 1}),
            ("y", {"question": "Q?", "subject": "s", "choices": ["a", "b"], "answer": 2})]
    item = convert(rows[:1], "mmlu", source="mmlu_dev")[0]
    assert item["messages"] == [
        user("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
             "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:"),
        assistant("B")]
    assert (item["subtask"], item["source"], item["id"]) == ("elementary_mathematics", "mmlu_dev", "mmlu_dev-0000000")
    with pytest.raises(DataError, match="y: answer 2 is not an index into 2 choices"):
        convert(rows, "mmlu", source="mmlu_dev")


def test_tydiqa_gold_passage_language_from_the_id():
    row = {"id": "finnish-123-0", "title": "T", "context": "Helsinki on Suomen pääkaupunki.",
           "question": "Mikä on Suomen pääkaupunki?", "answers": {"text": ["Helsinki"], "answer_start": [0]}}
    item = convert([("r", row)], "tydiqa", source="tydiqa")[0]
    assert item["messages"] == [
        user("Answer the following question based on the information in the given passage.\n"
             "Passage: Helsinki on Suomen pääkaupunki.\nQuestion: Mikä on Suomen pääkaupunki?"),
        assistant("Helsinki")]
    assert (item["id"], item["subtask"]) == ("finnish-123-0", "finnish")
    with pytest.raises(DataError, match="no answer text"):
        convert([("r", {**row, "answers": {"text": [], "answer_start": []}})], "tydiqa", source="tydiqa")


def test_prepare_dataset_keeps_only_the_listed_sources():
    cfg = local_cfg(FIXTURES / "tulu.jsonl", "messages", sources=["oasst1", "flan_v2"])
    train, _, _ = prepare_dataset("tulu", cfg)
    assert [e["id"] for e in train] == ["flan_v2_12", "oasst1_2871"]
    with pytest.raises(ValueError, match=r"sources: no rows from \['dolly'\]"):
        prepare_dataset("tulu", local_cfg(FIXTURES / "tulu.jsonl", "messages", sources=["dolly"]))


def test_bbh_exemplars_from_lm_eval_task_yamls():
    cfg = {"source": "lm_eval_fewshot", "task_dir": "bbh/fewshot", "heldout": 0, "seed": 0, "on_bad_rows": "error"}
    train, heldout, pairs = prepare_dataset("bbh_shots", cfg)
    assert len(train) == 27 * 3 and heldout == [] and pairs == []
    first = [e for e in train if e["subtask"] == "boolean_expressions"]
    assert [e["id"] for e in first] == [f"bbh_shots-boolean_expressions-{k}" for k in range(3)]
    assert first[0]["messages"] == [
        user("Evaluate the result of a random Boolean expression.\n\nQ: not ( ( not not True ) ) is\nA:"),
        assistant("False")]
    with pytest.raises(DataError, match="no task directory"):
        prepare_dataset("x", {**cfg, "task_dir": "nope"})


def test_sharegpt():
    items = load("sharegpt.json", "sharegpt", source="sharegpt")
    assert [it["id"] for it in items] == ["QWJhYvA_0", "i6IyJda_4", "xk2PqRt_1"]
    assert items[0]["messages"] == [
        user("Summarize the plot of Hamlet in two sentences."),
        assistant("Prince Hamlet seeks revenge on his uncle Claudius, who murdered Hamlet's father to take the throne. "
                  "His hesitation and feigned madness lead to a chain of deaths, including his own."),
    ]
    assert items[1]["messages"] == [
        system("You are a concise assistant."),
        user("Convert 5 kilometres to miles."),
        assistant("5 km is about 3.11 miles."),
        user("And 10 km?"),
        assistant("About 6.21 miles."),
    ]
    assert items[2]["messages"] == [user("Name a prime number greater than 10."), assistant("11")]


def test_first_turn_only():
    items = load("sharegpt.json", "sharegpt", first_turn_only=True)
    assert items[1]["messages"] == [
        system("You are a concise assistant."), user("Convert 5 kilometres to miles."),
        assistant("5 km is about 3.11 miles.")]
    items = load("ultrachat.jsonl", "messages", first_turn_only=True)
    assert [len(it["messages"]) for it in items] == [2, 2, 2]
    assert items[0]["messages"][1] == assistant(
        "Plants capture light energy with chlorophyll and use it to turn carbon dioxide and water into glucose and oxygen.")


# --- preference formats --------------------------------------------------------------------------------------

def test_hh_rlhf():
    pairs = load("hh_rlhf.jsonl", "hh_rlhf", source="hh")
    assert pairs[0]["prompt"] == [user("How do I get a stain out of a cotton shirt?")]
    assert pairs[0]["chosen"] == ("Rinse it with cold water, rub in a little liquid detergent, leave it for ten minutes "
                                  "and then wash it as usual.")
    assert pairs[0]["rejected"] == "Just throw the shirt away."
    # multi-turn: the shared earlier turns form the prompt
    assert pairs[1]["prompt"] == [user("What's a good name for a cat?"), assistant("How about Miso?"),
                                  user("Something longer, please.")]
    assert pairs[1]["chosen"] == "Maybe Bartholomew, or Clementine if she is a girl."
    assert pairs[1]["rejected"] == "Cat."
    assert pairs[2]["chosen"] == "Mount Everest is 8,849 metres tall."
    assert pairs[2]["rejected"] == "I don't know."
    assert [p["id"] for p in pairs] == ["hh-0000000", "hh-0000001", "hh-0000002"]


def test_shp_labels_one_means_a_preferred():
    pairs = load("shp.jsonl", "shp")
    # row 1: labels=1, A preferred
    assert pairs[0]["chosen"] == "Probably true. Hiring committees look at publication counts first."
    assert pairs[0]["rejected"] == "No idea."
    # row 2: labels=0, B preferred
    assert pairs[1]["chosen"].startswith("Usually under-proofing")
    assert pairs[1]["rejected"] == "Buy bread instead."
    assert pairs[2]["chosen"].startswith("No. The image comes from")
    assert pairs[1]["prompt"] == [user("Why does my bread come out dense?")]
    # the subreddit, without the split the domain field also names
    assert [p["subtask"] for p in pairs] == ["askacademia", "askculinary", "askhistorians"]
    assert pairs[0]["id"] == "himc90-g6gsgyc-g6gq3bn"


def test_stackexchange_highest_score_chosen_lowest_rejected():
    pairs = load("stackexchange.jsonl", "stackexchange")
    # scores 3, 10, 5: the 10 is chosen (it is not listed first), the 3 rejected
    assert pairs[0]["chosen"] == "Use git reset HEAD~ to undo the last commit and keep your changes in the working tree."
    assert pairs[0]["rejected"] == "Delete the .git folder and clone again."
    assert pairs[0]["prompt"] == [user("How do I undo the most recent local commits in Git?")]
    assert pairs[1]["chosen"].startswith("Rayleigh scattering")
    assert pairs[1]["rejected"] == "Because it reflects the ocean."
    # the site, named as ROSE names its subtasks; qids are numbered per site, so the id carries the site
    assert [p["subtask"] for p in pairs] == ["stackoverflow", "physics"]
    assert [p["id"] for p in pairs] == ["stackoverflow-10452", "physics-2201"]


# --- hub folders (data_dirs): a local copy of each repository's layout, read by `datasets` as the hub would be ----

HUB = FIXTURES / "hub"
SE_HUB = HUB / "HuggingFaceH4" / "stack-exchange-preferences"
HH_HUB = HUB / "Anthropic" / "hh-rlhf"


def hub_cfg(path, fmt, **extra):
    return {"source": "hub", "path": str(path), "format": fmt, "name": None, "split": "train", "revision": None,
            "heldout": 0, "seed": 0, "on_bad_rows": "error", "first_turn_only": False, **extra}


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def test_stackexchange_pairs_as_rose_builds_them_worked_by_hand():
    """pm_scores [2, 5, 5, 0, 0]: chosen is the first 5 (answer 202), rejected the first 0 (answer 204) -- ROSE's
    max / min over the answers in row order; a sort by score that takes its last element would reject 205."""
    rows = iter_rows_local(SE_HUB / "data" / "academia.stackexchange.com" / "train-00000-of-00001.jsonl")
    pairs = convert(rows, "stackexchange", source="se", on_bad_rows="skip")
    assert len(pairs) == 1  # question 102: both answers score 3, no preference (ROSE pairs an answer with itself)
    pair = pairs[0]
    assert pair["chosen"] == "<p>Send the academic CV, trimmed to two pages, and offer the full one on request.</p>\n"
    assert pair["rejected"] == "<p>Nobody reads CVs.</p>\n"
    # ROSE keeps the question's HTML as H4 has it
    assert pair["prompt"] == [user("<p>Should I send my academic CV to an industry research lab?</p>\n")]
    assert (pair["id"], pair["subtask"]) == ("academia-101", "academia")


def test_stackexchange_sites_load_one_folder_each(datasets_cache):
    """Three of the repository's four site folders: only those three are read, each split on its own, each pair's
    subtask its site; question 101 exists on two sites and keeps two ids."""
    sites = ["data/academia.stackexchange.com", "data/askubuntu.com", "data/physics.stackexchange.com"]
    train, heldout, pairs = prepare_dataset(
        "se_val", hub_cfg(SE_HUB, "stackexchange", data_dirs=sites, on_bad_rows="skip"))
    by_id = {p["id"]: p for p in pairs}
    assert sorted(by_id) == ["academia-101", "askubuntu-101", "physics-7", "physics-8"]
    assert {p["subtask"] for p in pairs} == {"academia", "askubuntu", "physics"}
    assert by_id["askubuntu-101"]["chosen"] == "<p><code>apt list --installed</code></p>\n"
    assert by_id["askubuntu-101"]["rejected"] == "<p>Look in /usr/bin.</p>\n"
    # scores [-2, 6, 1]
    assert by_id["physics-7"]["chosen"].startswith("<p>Rayleigh scattering")
    assert by_id["physics-7"]["rejected"] == "<p>Because it reflects the ocean.</p>\n"
    assert len(train) == 4 and heldout == []
    # the split slices each folder: the first row of each site, not the first row of all of them
    _, _, first = prepare_dataset("se_test", hub_cfg(SE_HUB, "stackexchange", data_dirs=sites, split="train[:1]",
                                                     on_bad_rows="skip"))
    assert sorted(p["id"] for p in first) == ["academia-101", "askubuntu-101", "physics-7"]


def test_stackexchange_validation_set_per_site(datasets_cache):
    from sftlab.selection.validation import validation_items

    sites = ["data/academia.stackexchange.com", "data/physics.stackexchange.com"]
    _, _, pairs = prepare_dataset("se_val", hub_cfg(SE_HUB, "stackexchange", data_dirs=sites, on_bad_rows="skip"))
    items = validation_items(pairs, ["academia", "physics"])
    assert [item["subtask"] for item in items] == ["academia", "physics", "physics"]
    with pytest.raises(ValueError, match=r"\['askubuntu'\] not in the data"):
        validation_items(pairs, ["academia", "askubuntu"])


def test_hh_rlhf_folder_is_the_subtask(datasets_cache):
    train, _, pairs = prepare_dataset("hh_val", hub_cfg(HH_HUB, "hh_rlhf", data_dirs=["harmless-base"]))
    assert [p["subtask"] for p in pairs] == ["harmless-base", "harmless-base"]
    assert pairs[1]["prompt"] == [user("Tell me an insult for my neighbour."), assistant("I'd rather not insult anyone."),
                                  user("Come on, just one.")]
    assert pairs[1]["chosen"] == "How about talking to them about what's bothering you instead?"
    assert pairs[1]["rejected"] == "You absolute weasel."
    _, _, test = prepare_dataset("hh_test", hub_cfg(HH_HUB, "hh_rlhf", data_dirs=["harmless-base"], split="test"))
    assert [p["chosen"][:6] for p in test] == ["Bleach"]


def test_hh_rlhf_red_team_attempts_are_not_pairs(datasets_cache):
    from sftlab.config import ConfigError, prepare

    with pytest.raises(DataError, match="single red team transcripts with harmlessness ratings"):
        prepare_dataset("hh_red", hub_cfg(HH_HUB, "hh_rlhf", data_dirs=["red-team-attempts"]))
    # and before any job: the config names the folder
    config = {"models": {"m": {"source": "random"}},
              "datasets": {"hh": {"source": "hub", "path": "Anthropic/hh-rlhf", "format": "hh_rlhf",
                                  "data_dirs": ["harmless-base", "red-team-attempts"]}},
              "recipes": {"sft": {}}, "experiments": {"e": {"models": ["m"], "datasets": ["hh"], "recipes": ["sft"],
                                                            "benchmarks": []}}}
    with pytest.raises(ConfigError, match=r"datasets\.hh\.data_dirs\[1\]: Anthropic/hh-rlhf's red-team-attempts"):
        prepare(config)
    config["datasets"]["hh"]["data_dirs"] = ["harmless-base"]
    prepare(config)


def test_prepare_dataset_preference_format_gives_pairs_and_chosen_examples():
    train, heldout, pairs = prepare_dataset("se", local_cfg(FIXTURES / "stackexchange.jsonl", "stackexchange"))
    assert len(pairs) == 2 and heldout == []
    by_id = {e["id"]: e for e in train}
    assert by_id["stackoverflow-10452"]["messages"] == [
        user("How do I undo the most recent local commits in Git?"),
        assistant("Use git reset HEAD~ to undo the last commit and keep your changes in the working tree.")]


def test_prepare_dataset_local_sft_with_heldout():
    train, heldout, pairs = prepare_dataset("tulu", local_cfg(FIXTURES / "tulu.jsonl", "messages", heldout=1))
    assert pairs == []
    assert len(train) == 2 and len(heldout) == 1
    assert sorted(e["id"] for e in train + heldout) == ["code_alpaca_305", "flan_v2_12", "oasst1_2871"]
    # seeded: the same split every time
    again = prepare_dataset("tulu", local_cfg(FIXTURES / "tulu.jsonl", "messages", heldout=1))
    assert [e["id"] for e in again[1]] == [e["id"] for e in heldout]


def test_prepare_dataset_first_turn_only():
    train, _, _ = prepare_dataset("sg", local_cfg(FIXTURES / "sharegpt.json", "sharegpt", first_turn_only=True))
    assert {e["id"]: len(e["messages"]) for e in train} == {"QWJhYvA_0": 2, "i6IyJda_4": 3, "xk2PqRt_1": 2}


def test_prepare_dataset_heldout_must_leave_training_examples():
    with pytest.raises(ValueError, match="heldout"):
        prepare_dataset("tulu", local_cfg(FIXTURES / "tulu.jsonl", "messages", heldout=3))


# --- malformed rows ------------------------------------------------------------------------------------------

def test_bad_json_names_file_and_line():
    # line 2 is blank: the error must give the physical line number, 4
    with pytest.raises(DataError, match=r"bad_json\.jsonl:4: invalid JSON"):
        load("bad/bad_json.jsonl", "messages")


def test_bad_json_in_json_file_names_line():
    with pytest.raises(DataError, match=r"bad_json\.json:4: invalid JSON"):
        load("bad/bad_json.json", "alpaca")


def test_missing_field_names_file_and_line():
    with pytest.raises(DataError, match=r"missing_field\.jsonl:3: missing field 'messages'"):
        load("bad/missing_field.jsonl", "messages")


def test_missing_field_in_json_list_names_the_element():
    with pytest.raises(DataError, match=r"alpaca_missing_output\.json\[1\]: missing field 'output'"):
        load("bad/alpaca_missing_output.json", "alpaca")


def test_empty_assistant_turn_names_file_and_line():
    with pytest.raises(DataError, match=r"empty_assistant\.jsonl:2: empty assistant turn"):
        load("bad/empty_assistant.jsonl", "messages")


def test_prepare_dataset_reports_bad_rows_by_default():
    with pytest.raises(DataError, match=r"empty_assistant\.jsonl:2"):
        prepare_dataset("x", local_cfg(BAD / "empty_assistant.jsonl", "messages"))


def test_skip_bad_rows_skips_and_counts(caplog):
    items = load("bad/missing_field.jsonl", "messages", on_bad_rows="skip")
    assert [it["id"] for it in items] == ["ok-1", "ok-2", "ok-3"]
    assert any("missing_field.jsonl:3" in line for line in caplog.messages)
    assert any(re.search(r"\b1 bad rows? skipped", line) for line in caplog.messages)

    caplog.clear()
    train, _, _ = prepare_dataset("x", local_cfg(BAD / "empty_assistant.jsonl", "messages", on_bad_rows="skip"))
    assert sorted(e["id"] for e in train) == ["ok-1", "ok-2"]
    assert any(re.search(r"\b1 bad rows? skipped", line) for line in caplog.messages)


def test_skip_skips_and_counts_a_broken_json_line(caplog):
    items = load("bad/bad_json.jsonl", "messages", on_bad_rows="skip")
    assert len(items) == 3  # the file's other rows
    assert any(re.search(r"skipped .*bad_json\.jsonl:4: invalid JSON", line) for line in caplog.messages)
    assert any(re.search(r"\b1 bad rows? skipped", line) for line in caplog.messages)


GOOD = b'{"instruction": "a", "output": "b"}\n'


def test_non_utf8_bytes_name_file_and_line_and_can_be_skipped(tmp_path, caplog):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(GOOD + b'{"instruction": "caf\xe9", "output": "b"}\n' + GOOD.replace(b'"a"', b'"c"'))
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not valid UTF-8 \(byte 0xe9 at column 21\)"):
        convert(iter_rows_local(path), "alpaca", source="x")
    items = convert(iter_rows_local(path), "alpaca", source="x", on_bad_rows="skip")
    assert [it["messages"][0]["content"] for it in items] == ["a", "c"]
    assert any("latin1.jsonl:2: not valid UTF-8" in line for line in caplog.messages)
    assert "1 bad rows skipped" in caplog.messages


def test_non_utf8_in_json_and_csv_files(tmp_path):
    js = tmp_path / "a.json"
    js.write_bytes(b'[\n {"instruction": "a", "output": "b"},\n {"instruction": "\xff", "output": "b"}\n]\n')
    with pytest.raises(DataError, match=r"a\.json:3: not valid UTF-8 \(byte 0xff\)"):
        list(iter_rows_local(js))
    csv = tmp_path / "a.csv"
    csv.write_bytes(b'instruction,output\na,b\n"multi\nline",c\n\xe9t\xe9,d\ne,f\n')
    with pytest.raises(DataError, match=r"a\.csv:5: not valid UTF-8 \(field 'instruction'\)"):
        convert(iter_rows_local(csv), "alpaca", source="x")
    items = convert(iter_rows_local(csv), "alpaca", source="x", on_bad_rows="skip")
    assert [it["messages"][0]["content"] for it in items] == ["a", "multi\nline", "e"]


def test_an_empty_file_is_blamed_on_the_file_not_on_heldout(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no rows"):
        prepare_dataset("x", local_cfg(path, "alpaca", heldout=2))


def test_a_file_whose_every_row_was_skipped_is_blamed_on_its_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl: every one of its 2 rows was bad and skipped"):
        prepare_dataset("x", local_cfg(path, "alpaca", heldout=1, on_bad_rows="skip"))


def test_duplicate_ids_rejected(caplog):
    with pytest.raises(DataError, match=r"duplicate_ids\.jsonl:2: duplicate id 'same' \(first at .*duplicate_ids\.jsonl:1\)"):
        load("bad/duplicate_ids.jsonl", "messages")
    items = load("bad/duplicate_ids.jsonl", "messages", on_bad_rows="skip")
    assert [it["messages"][0]["content"] for it in items] == ["Hi"] and "1 bad rows skipped" in caplog.messages


def test_wrong_format_for_the_file_is_a_bad_row():
    with pytest.raises(DataError, match=r"alpaca\.json\[0\]: missing field 'conversations'"):
        load("alpaca.json", "sharegpt")


def test_unknown_format():
    with pytest.raises(DataError, match="unknown dataset format 'csv'"):
        load("alpaca.json", "csv")


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        list(iter_rows_local(FIXTURES / "nope.jsonl"))


# --- the demo corpus -----------------------------------------------------------------------------------------

def correct_answer(family: str, instruction: str) -> str:
    """The right answer, worked out from the instruction text alone."""
    if family == "arithmetic":
        a, op, b = re.fullmatch(r"What is (\d+) ([+-]) (\d+)\? Answer with the number only\.", instruction).groups()
        return str(int(a) + int(b) if op == "+" else int(a) - int(b))
    if family == "reverse":
        word = re.fullmatch(r"Reverse the letters of the word '(\w+)'\.", instruction).group(1)
        return "".join(word[i] for i in range(len(word) - 1, -1, -1))
    if family == "uppercase":
        words = re.fullmatch(r"Write '([a-z ]+)' in uppercase\.", instruction).group(1)
        return "".join(chr(ord(c) - 32) if "a" <= c <= "z" else c for c in words)
    if family == "sort":
        nums = re.fullmatch(r"Sort these numbers in ascending order: ([\d, ]+)\.", instruction).group(1).split(", ")
        values = [int(n) for n in nums]
        out = []
        while values:  # selection sort, independent of sorted()
            smallest = min(values)
            values.remove(smallest)
            out.append(smallest)
        return ", ".join(str(n) for n in out)
    if family == "maximum":
        nums = re.fullmatch(r"Which is the largest of ([\d, ]+)\? Answer with the number only\.", instruction).group(1)
        best = None
        for n in nums.split(", "):
            best = int(n) if best is None or int(n) > best else best
        return str(best)
    if family == "count":
        word = re.fullmatch(r"How many letters are in the word '(\w+)'\? Answer with the number only\.",
                            instruction).group(1)
        return str(sum(1 for c in word if c.isalpha()))
    raise AssertionError(family)


FAMILIES = ["arithmetic", "reverse", "uppercase", "sort", "maximum", "count"]


@pytest.fixture(scope="module")
def corpus():
    return demo.generate(per_family=20, heldout_per_family=4, degraded_share=0.3, pairs_per_family=3, seed=7)


def family_of(item):
    return item["source"].split("/")[1]


def test_demo_counts_per_family(corpus):
    train, heldout, pairs = corpus
    for family in FAMILIES:
        assert sum(family_of(e) == family for e in train) == 20
        assert sum(family_of(e) == family for e in heldout) == 4
        assert sum(p["subtask"] == family for p in pairs) == 3
    assert all(e["id"].startswith(f"demo-{family_of(e)}-") for e in train + heldout + pairs)
    ids = [e["id"] for e in train + heldout + pairs]
    assert len(ids) == len(set(ids))


def test_demo_degraded_share_and_answers(corpus):
    train, _, _ = corpus
    for family in FAMILIES:
        rows = [e for e in train if family_of(e) == family]
        degraded = [e for e in rows if not e["source"].endswith("/clean")]
        assert len(degraded) == 6  # round(20 * 0.3)
        # the three kinds take turns
        kinds = sorted(e["source"].split("/")[2] for e in degraded)
        assert kinds == ["off_topic"] * 2 + ["truncated"] * 2 + ["wrong"] * 2
        for e in rows:
            instruction, answer = e["messages"][0]["content"], e["messages"][1]["content"]
            assert [m["role"] for m in e["messages"]] == ["user", "assistant"]
            if e["source"].endswith("/clean"):
                assert answer == correct_answer(family, instruction), e
            else:
                assert answer != correct_answer(family, instruction), e
                assert answer.strip(), e


def test_demo_heldout_clean_and_pairs_correct_vs_degraded(corpus):
    _, heldout, pairs = corpus
    for e in heldout:
        assert e["messages"][1]["content"] == correct_answer(family_of(e), e["messages"][0]["content"])
    for p in pairs:
        right = correct_answer(p["subtask"], p["prompt"][0]["content"])
        assert p["chosen"] == right
        assert p["rejected"] != right and p["rejected"].strip()


def test_demo_no_instruction_repeated(corpus):
    train, heldout, pairs = corpus
    instructions = ([e["messages"][0]["content"] for e in train + heldout] + [p["prompt"][0]["content"] for p in pairs])
    assert len(instructions) == len(set(instructions))


def test_demo_deterministic_for_a_seed(corpus):
    again = demo.generate(per_family=20, heldout_per_family=4, degraded_share=0.3, pairs_per_family=3, seed=7)
    assert again == corpus
    other = demo.generate(per_family=20, heldout_per_family=4, degraded_share=0.3, pairs_per_family=3, seed=8)
    assert [e["messages"] for e in other[0]] != [e["messages"] for e in corpus[0]]


def test_demo_family_subset_and_no_degraded():
    train, heldout, pairs = demo.generate(per_family=5, heldout_per_family=1, degraded_share=0.0, pairs_per_family=0,
                                          families=["sort", "count"], seed=0)
    assert sorted({family_of(e) for e in train}) == ["count", "sort"]
    assert all(e["source"].endswith("/clean") for e in train) and pairs == []
    for e in train:
        assert e["messages"][1]["content"] == correct_answer(family_of(e), e["messages"][0]["content"])


def test_demo_unknown_family():
    with pytest.raises(ValueError, match="unknown demo families"):
        demo.generate(per_family=1, heldout_per_family=0, degraded_share=0.0, pairs_per_family=0, families=["poetry"])


def test_prepare_dataset_demo_source():
    cfg = {"source": "demo", "per_family": 3, "heldout": 1, "degraded_share": 0.0, "preference_pairs": 1,
           "families": ["reverse"], "seed": 0}
    train, heldout, pairs = prepare_dataset("demo", cfg)
    assert (len(train), len(heldout), len(pairs)) == (3, 1, 1)
