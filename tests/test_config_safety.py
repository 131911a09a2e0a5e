"""No config value reaches a template, a path, a weight or a log unchecked: each case found by trying the tiny config
as an adversary (issue 24) and by the fuzz test (test_config_fuzz.py) is refused at plan time naming its key."""

import copy
from pathlib import Path

import pytest

from sftlab.config import ConfigError, check_local_files, prepare, read_yaml
from sftlab.data.loaders import convert
from sftlab.io import DataError
from sftlab.secrets import looks_like_secret, redact_url, url_secrets

ROOT = Path(__file__).resolve().parents[1]
TINY = read_yaml(ROOT / "configs" / "tiny.yaml")


def refused(change) -> str:
    """The ConfigError message of the tiny config with ``change`` applied (fails if it is accepted)."""
    raw = copy.deepcopy(TINY)
    change(raw)
    with pytest.raises(ConfigError) as info:
        prepare(raw)
    return str(info.value)


def setting(where: tuple, value):
    """A change that sets the value at key path ``where``."""
    def change(raw):
        target = raw
        for part in where[:-1]:
            target = target[part]
        target[where[-1]] = value
    return change


def exam_benchmark(**settings):
    def change(raw):
        raw["benchmarks"]["mc_demo"].update(settings)
    return change


# --- templates and written paths -------------------------------------------------------------------------------

def test_an_answer_prompt_with_jinja_is_refused():
    for prompt in ("Answer:{{ lipsum.__globals__['os'].system('touch PWNED') }}", "{% for x in y %}", "A {# c #}"):
        message = refused(exam_benchmark(answer_prompt=prompt))
        assert "config key benchmarks.mc_demo.answer_prompt: holds template syntax" in message
    # plain text with single braces, and a C-Eval style prompt, are data
    for prompt in ("Answer {A-D}:", "答案："):
        raw = copy.deepcopy(TINY)
        exam_benchmark(answer_prompt=prompt)(raw)
        assert prepare(raw)["benchmarks"]["mc_demo"]["answer_prompt"] == prompt


def test_the_task_writer_itself_refuses_jinja_and_a_path_as_task_name():
    from sftlab.benchmarks.lm_eval import mmlu_schema_task

    data = ROOT / "workflow" / "benchmarks" / "mc_demo"
    with pytest.raises(ValueError, match="Jinja"):
        mmlu_schema_task("t", data, answer_prompt="{{ 7 * 7 }}")
    for name in ("../../../../x/ESCAPE", "/etc/passwd", "a/b", "t\n"):
        with pytest.raises(ValueError, match="names a file"):
            mmlu_schema_task(name, data)
    assert mmlu_schema_task("mc_demo", data)["doc_to_text"].endswith("\nAnswer:")


def test_a_task_name_that_is_a_path_is_refused():
    for task in ("../../../../x/ESCAPE", "/tmp/config", "a/b", "mc_demo\n", " mc_demo"):
        assert "config key benchmarks.mc_demo.task:" in refused(exam_benchmark(task=task))


def test_an_lm_eval_fewshot_folder_outside_lm_evals_tasks_is_refused():
    def change(raw):
        raw["datasets"]["bbh"] = {"source": "lm_eval_fewshot", "task_dir": "../../../../etc"}
    assert "config key datasets.bbh.task_dir:" in refused(change)


def test_the_fewshot_loader_stays_inside_lm_evals_tasks():
    from sftlab.data.loaders import lm_eval_fewshot_examples

    with pytest.raises(DataError, match="outside lm-eval's tasks"):
        lm_eval_fewshot_examples("../../..", "x")


# --- names matched whole ---------------------------------------------------------------------------------------

def test_a_name_with_a_trailing_newline_is_refused():
    def recipe(raw):
        raw["recipes"]["sft\n"] = raw["recipes"].pop("sft")
    assert "config key recipes: 'sft\\n' does not match" in refused(recipe)

    def baseline(raw):
        raw["benchmarks"]["arena"] = {"type": "arena_hard", "judge": "tiny_judge", "baseline": "gpt-4-0314\n"}
    assert "config key benchmarks.arena.baseline: 'gpt-4-0314\\n' does not match" in refused(baseline)


def test_a_sweep_value_holding_a_newline_is_refused_as_a_name():
    def change(raw):
        raw["sweeps"] = {"s": {"recipe": "sft", "grid": {"training.learning_rate": [1e-3]}, "name": "x\n"}}
        raw["experiments"]["main"]["recipes"].append("s")
    assert "config key sweeps.s.name: generated recipe name 'x\\n'" in refused(change)


# --- numbers: finite, in range, checked before the jobs ----------------------------------------------------------

@pytest.mark.parametrize("where, value", [
    (("training", "learning_rate"), float("inf")),
    (("training", "learning_rate"), float("nan")),
    (("training", "max_grad_norm"), float("nan")),
    (("recipes", "dtm_task_arithmetic", "composition", "merge", "lambda"), float("nan")),
    (("recipes", "sft_random50", "selection", "fraction"), float("nan")),
    (("recipes", "sftmix", "objective", "mu"), float("inf")),
    (("training", "lora", "dropout"), float("nan")),
    (("warmup", "fraction"), float("-inf")),
])
def test_a_number_that_is_not_finite_is_refused_naming_its_key(where, value):
    assert refused(setting(where, value)).startswith(f"config key {'.'.join(where)}: {value} is not a finite number")


def test_merge_weights_that_sum_to_zero_are_refused_before_the_members_train():
    def change(raw):
        raw["recipes"]["dtm"]["composition"]["merge"]["weights"] = [1.0, -1.0]
    message = refused(change)
    assert message.startswith("config key recipes.dtm.composition.merge.weights: merge method 'average': weights must")


def test_empty_or_repeated_reference_checkpoints_are_refused():
    for value in ([], [1, 1]):
        assert "config key reference.checkpoints:" in refused(lambda raw: raw["reference"].update(checkpoints=value))


def test_ambiguous_with_one_reference_checkpoint_is_refused():
    message = refused(lambda raw: raw["reference"].update(checkpoints=[1]))
    assert message.startswith("config key reference.checkpoints: [1] is one checkpoint, but recipe 'sftmix_ambiguous'")


def test_no_heldout_examples_with_a_heldout_benchmark_is_refused():
    message = refused(lambda raw: raw["datasets"]["demo"].update(heldout=0))
    assert message.startswith("config key datasets.demo.heldout: 0 held-out examples, but benchmark 'heldout_em'")

    def exam_only(raw):  # an exam over its own files reads no held-out examples
        raw["datasets"]["demo"]["heldout"] = 0
        raw["experiments"] = {"e": {"models": ["tiny"], "datasets": ["demo"], "recipes": ["sft"],
                                    "benchmarks": ["mc_demo", "exam_nll"]}}
    raw = copy.deepcopy(TINY)
    exam_only(raw)
    assert prepare(raw)["datasets"]["demo"]["heldout"] == 0


def test_a_local_dataset_path_that_is_a_directory_is_refused(tmp_path):
    def config(**tables):
        return {"datasets": {}, "models": {}, "benchmarks": {}, "judges": {}, **tables}
    with pytest.raises(ConfigError, match=r"^config key datasets.d.path: .* is a directory"):
        check_local_files(config(datasets={"d": {"source": "local", "path": str(tmp_path), "format": "alpaca"}}))
    (tmp_path / "d.jsonl").write_text("")
    check_local_files(config(datasets={"d": {"source": "local", "path": str(tmp_path / "d.jsonl")}}))


def test_local_inputs_that_do_not_exist_are_refused_naming_their_key(tmp_path):
    """They were a missing input file (data_dir, the dataset), or a job's failure (a local model)."""
    missing = str(tmp_path / "missing")
    cases = {"datasets.d.path": {"datasets": {"d": {"source": "local", "path": missing}}},
             "models.m.path": {"models": {"m": {"source": "local", "path": missing}}},
             "benchmarks.b.data_dir": {"benchmarks": {"b": {"type": "lm_eval", "data_dir": missing}}},
             "benchmarks.b.include_path": {"benchmarks": {"b": {"type": "lm_eval", "include_path": missing}}},
             "judges.j.model": {"judges": {"j": {"type": "hf", "model": missing}}}}
    for key, tables in cases.items():
        with pytest.raises(ConfigError, match=f"^config key {key}: .* does not exist"):
            check_local_files({"datasets": {}, "models": {}, "benchmarks": {}, "judges": {}, **tables})


def test_a_path_the_file_system_cannot_hold_is_refused_naming_its_key():
    """Found by the fuzz test: a 5,000-character data_dir crashed planning with OSError (file name too long)."""
    with pytest.raises(ConfigError, match=r"^config key benchmarks.b.data_dir: not a usable path \(File name too long"):
        check_local_files({"datasets": {}, "models": {}, "judges": {},
                           "benchmarks": {"b": {"type": "lm_eval", "data_dir": "a" * 5000}}})


def test_a_validation_subtask_a_demo_dataset_lacks_is_refused():
    """Found by the fuzz test: any string passed, and the warmup's validation set came out empty in a job."""
    message = refused(lambda raw: raw["validation"]["target"].update(subtasks=["arithmetic", "Count"]))
    assert message.startswith("config key validation.target.subtasks[1]: demo dataset 'demo' has no family 'Count'")


@pytest.mark.parametrize("bad", ["r11 ", " r11", "r12\nx", "r13\t"])
def test_an_id_with_surrounding_whitespace_or_a_line_break_is_a_bad_row(bad):
    def row(row_id):
        return {"id": row_id, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    rows = [("f.jsonl:1", row("r10")), ("f.jsonl:2", row(bad))]
    with pytest.raises(DataError, match="f.jsonl:2: id .* surrounding whitespace or a line break"):
        convert(rows, "messages", source="s")
    assert [it["id"] for it in convert(rows, "messages", source="s", on_bad_rows="skip")] == ["r10"]


# --- secrets ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["gsk_8fJ2kLm9QpR3xT7vW1zY4bN6", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz12",
                                 "Xk9fj3LmQ82pZr7TbW1vN4sd"])
def test_an_api_key_pasted_as_api_key_env_is_refused_without_being_repeated(key):
    def change(raw):
        raw["judges"]["gpt"] = {"type": "openai", "model": "gpt-4", "api_key_env": key}
    message = refused(change)
    assert message.startswith("config key judges.gpt.api_key_env: must be the NAME of an environment variable")
    assert "which this value looks like" in message and key not in message


def test_variable_names_are_not_taken_for_keys():
    for name in ("OPENAI_API_KEY", "HF_TOKEN", "GROQ_API_KEY", "AZURE_OPENAI_API_KEY_FOR_PRODUCTION", "KEY_2024"):
        assert not looks_like_secret(name)


@pytest.mark.parametrize("url", ["https://user:pass@host/v1", "https://host/v1?api-key=abc",
                                 "http://host/v1?token=x&v=1", "https://host/v1?x=sk-abcdefghijklmnop"])
def test_credentials_in_a_url_are_refused_without_being_repeated(url):
    def change(raw):
        raw["judges"]["gpt"] = {"type": "openai", "model": "gpt-4", "base_url": url}
    message = refused(change)
    assert message.startswith("config key judges.gpt.base_url: the URL carries credentials") and url not in message


def test_a_url_as_printed_is_masked():
    assert redact_url("https://user:pass@host:8000/v1?api-key=abc&v=2") == "https://***@host:8000/v1?api-key=***&v=***"
    assert redact_url("https://api.openai.com/v1") == "https://api.openai.com/v1"
    assert url_secrets("https://x.openai.azure.com/openai?api-version=2024-06-01") == []


def test_the_judge_prints_its_url_masked(monkeypatch):
    from sftlab.evaluation.judges import OpenAIJudge

    monkeypatch.setenv("SFTLAB_TEST_KEY", "k")
    judge = OpenAIJudge("m", base_url="http://user:secret@127.0.0.1:9/v1", api_key_env="SFTLAB_TEST_KEY")
    assert "secret" not in repr(judge) and judge.url == "http://***@127.0.0.1:9/v1/chat/completions"


# --- YAML aliases ----------------------------------------------------------------------------------------------

def test_an_alias_bomb_is_refused(tmp_path):
    """Ten copies a level, six levels: a million values from 60 in the file (nine levels hung planning)."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    tiny = (ROOT / "configs" / "tiny.yaml").read_text()
    path = tmp_path / "bomb.yaml"
    path.write_text("_anchors:\n" + "".join(f"  {line}\n" for line in levels)
                    + tiny.replace("description: plain SFT on the whole pool", "description: *a6"))
    raw = read_yaml(path)
    del raw["_anchors"]
    with pytest.raises(ConfigError, match=r"^the config holds more than 100,000 values with its YAML aliases expanded"):
        prepare(raw)


# --- found by the fuzz test (test_config_fuzz.py) ----------------------------------------------------------------

def test_a_key_that_yaml_reads_as_a_number_or_bool_is_refused():
    """`0:` or `yes:` as a model's name passed the name pattern (JSON Schema checks strings only)."""
    for key in (0, True, None, 1.5):
        message = refused(lambda raw: raw["models"].update({key: {"source": "random"}}))
        assert message.startswith(f"config key models.{key}: a key must be a string")


def test_an_unknown_benchmark_type_is_named_as_such():
    """It was reported as its first setting, `max_new_tokens: unknown key (known here: ['type'])`."""
    message = refused(lambda raw: raw["benchmarks"]["heldout_em"].update(type="exactmatch"))
    assert message.startswith("config key benchmarks.heldout_em.type: 'exactmatch' is not one of ['exact_match',")


@pytest.mark.parametrize("where, value", [
    (("recipes", "dtm", "composition", "k"), 1e300),  # JSON Schema's integer: a float equal to an integer
    (("recipes", "dtm", "composition", "k"), 2.0),
    (("training", "max_length"), 64.0),
])
def test_an_integer_setting_given_as_a_float_is_refused(where, value):
    assert f"config key {'.'.join(where)}:" in refused(setting(where, value))


def test_a_huge_shard_count_is_refused_before_its_members_are_listed():
    """k = 10**12 listed 10**12 member names at plan time (MemoryError)."""
    message = refused(lambda raw: raw["recipes"]["dtm"]["composition"].update(k=10**12))
    assert message.startswith("config key recipes.dtm.composition.k:")
    assert refused(lambda raw: raw["recipes"]["dtm"]["composition"].update(k=2000)).startswith(
        "config key recipes.dtm.composition.k: 2000 is greater than the maximum of 1024")


def test_a_number_beyond_any_setting_is_refused():
    message = refused(lambda raw: raw["training"].update(max_steps=10**30))
    assert message.startswith("config key training.max_steps: 1e+30 is beyond any meaningful setting")


@pytest.mark.parametrize("where", [("training", "seed"), ("reference", "tsne_seed"), ("seeds", 0),
                                   ("recipes", "seed_soup", "composition", "seeds", 0)])
def test_a_seed_outside_numpys_range_is_refused(where):
    """np.random.seed (transformers' set_seed) refuses -1 and 2**32 in the job."""
    for value in (-1, 2**32):
        message = refused(lambda raw: (raw.setdefault("seeds", [0]), setting(where, value)(raw)))
        assert message.startswith(f"config key {'.'.join(map(str, where))}: seed {value} is outside 0..4294967295")


def test_a_sweep_value_of_the_wrong_type_is_named_at_its_grid_key():
    """It was reported as an invalid generated recipe name (`sft_lr,>`}...`) at sweeps.s.name."""
    def change(raw):
        raw["sweeps"] = {"s": {"recipe": "sft", "grid": {"training.learning_rate": [1e-3, "1e-3;x"]}}}
        raw["experiments"]["main"]["recipes"].append("s")
    message = refused(change)
    assert message.startswith("config key sweeps.s.grid.training.learning_rate[1]: generated recipe 'sft_lr1e-3;x'")


def test_a_sweep_of_more_than_ten_thousand_recipes_is_refused():
    def change(raw):
        raw["sweeps"] = {"s": {"recipe": "sft", "grid": {f"training.{k}": list(range(1, 23)) for k in
                                                         ("batch_size", "eval_steps", "save_steps")}}}
    assert refused(change).startswith("config key sweeps.s.grid: 10,648 combinations; a sweep generates at most")


def test_a_name_longer_than_a_file_name_allows_is_refused():
    """Found by the fuzz test: a 5,000-character recipe name planned, to fail as a file name in the first job."""
    message = refused(lambda raw: raw["recipes"].update({"a" * 5000: {}}))
    assert message.startswith("config key recipes: key 'aaaa") and "is longer than 100 characters" in message


def test_a_data_dir_holding_the_working_directory_or_empty_is_refused(tmp_path, monkeypatch):
    """Found by the fuzz test: data_dir '.' or '..' made every file of the project (results/ too) an input."""
    monkeypatch.chdir(tmp_path)
    for value, error in ((".", "holds the working directory itself"), ("..", "holds the working directory itself"),
                         ("", "an empty path")):
        with pytest.raises(ConfigError, match=f"^config key benchmarks.b.data_dir: .*{error}"):
            check_local_files({"datasets": {}, "models": {}, "judges": {},
                               "benchmarks": {"b": {"type": "lm_eval", "data_dir": value}}})
    (tmp_path / "exam").mkdir()
    check_local_files({"datasets": {}, "models": {}, "judges": {},
                       "benchmarks": {"b": {"type": "lm_eval", "data_dir": "exam"}}})


def test_a_validation_set_whose_demo_dataset_has_none_of_its_items_is_refused():
    """Found by the fuzz test: preference_pairs: 0 planned, and the warmup's validation set was empty in the job."""
    message = refused(lambda raw: raw["datasets"]["demo"].update(preference_pairs=0))
    assert message.startswith("config key datasets.demo.preference_pairs: 0, but validation set 'target' of "
                              "recipes.less_25.selection takes its 'pairs' items")
