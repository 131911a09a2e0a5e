"""Multiple-choice exams: the exam_* loaders, the FinanceIQ / FinEval task YAMLs shipped for lm-eval (run over
fixtures in the hub files' own columns), and scoring the held-out part of an exam the model trained on."""

from pathlib import Path

import pytest
import yaml

from sftlab.data.loaders import convert, iter_rows_local
from sftlab.benchmarks.lm_eval import run_lm_eval, write_exam_dir
from sftlab.io import DataError

ROOT = Path(__file__).resolve().parents[1]
EXAMS = Path(__file__).parent / "fixtures" / "exams"
TASKS = ROOT / "workflow" / "benchmarks" / "lm_eval_tasks"
# answers of the fixtures, read off the files by hand: A=0, B=1, C=2, D=3
FINANCEIQ_TEST = [1, 1, 2, 1, 1, 0]
FINEVAL_VAL = [1, 0, 1, 2, 1, 0]


def test_exam_loaders_keep_items_and_answer_letters():
    rows = list(iter_rows_local(EXAMS / "financeiq" / "test.csv"))
    assert rows[0][0].endswith("test.csv:2")  # line numbers count the header
    examples = convert(rows, "exam_financeiq", source="fiq")
    assert [e["exam"]["answer"] for e in examples] == FINANCEIQ_TEST
    first = examples[0]
    assert first["messages"][0]["content"] == (
        "我国商业银行的法定存款准备金由哪个机构规定？\nA. 财政部\nB. 中国人民银行\nC. 国家金融监督管理总局\nD. 商业银行自身\n答案：")
    assert first["messages"][1] == {"role": "assistant", "content": "B"}
    fineval = convert(iter_rows_local(EXAMS / "fineval" / "val.csv"), "exam_ceval", source="fe")
    assert [e["exam"]["answer"] for e in fineval] == FINEVAL_VAL
    assert len({e["id"] for e in fineval}) == len(fineval)


def test_exam_loader_names_the_bad_row(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,A,B,C,D,Answer\nq1,a,b,c,d,A\nq2,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad.csv:3: field 'Answer' must name one of 4 options"):
        convert(iter_rows_local(bad), "exam_financeiq", source="x")


def _local_task(name: str, tmp_path: Path, files: dict) -> Path:
    """The shipped task YAML with its hub files swapped for the local fixtures (nothing else changed)."""
    spec = yaml.safe_load((TASKS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert set(spec["dataset_kwargs"]["data_files"]) == set(files)
    spec["dataset_kwargs"]["data_files"] = {k: str(v) for k, v in files.items()}
    out = tmp_path / name
    out.mkdir()
    (out / f"{name}.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return out


@pytest.mark.parametrize("name,files,answers", [
    ("financeiq", {"test": EXAMS / "financeiq" / "test.csv", "dev": EXAMS / "financeiq" / "dev.csv"}, FINANCEIQ_TEST),
    ("fineval", {"val": EXAMS / "fineval" / "val.csv", "dev": EXAMS / "fineval" / "dev.csv"}, FINEVAL_VAL),
])
def test_shipped_task_yamls_read_the_hub_columns(name, files, answers, tmp_path):
    from lm_eval.tasks import TaskManager

    task = TaskManager(include_path=str(_local_task(name, tmp_path, files))).load([name])["tasks"][name]
    docs = list(task.test_docs())
    assert [task.doc_to_target(d) for d in docs] == answers
    assert task.doc_to_text(docs[0]).endswith("\nD. " + docs[0]["D"] + "\n答案：")
    assert task.doc_to_choice(docs[0]) == ["A", "B", "C", "D"]


def test_ceval_valid_is_lm_evals_own_task():
    from lm_eval.tasks import TaskManager

    assert "ceval-valid" in TaskManager().all_tasks


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sftlab.data.tokenize import ensure_chat_template
    from sftlab.models.materialise import materialise

    path = tmp_path_factory.mktemp("base") / "model"
    materialise({"source": "random"}, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_chat_template(tokenizer)
    return AutoModelForCausalLM.from_pretrained(path).eval(), tokenizer


def test_heldout_exam_items_are_scored(tiny, tmp_path):
    model, tokenizer = tiny
    examples = convert(iter_rows_local(EXAMS / "fineval" / "val.csv"), "exam_ceval", source="fe")
    data_dir = write_exam_dir(tmp_path, [e["exam"] for e in examples[:4]], [e["exam"] for e in examples[4:]])
    score = run_lm_eval(model, tokenizer, "fe_heldout", num_fewshot=1, batch_size=4, data_dir=data_dir,
                        answer_prompt="答案：")
    assert score["n"] == 4
    # four items: accuracy is a multiple of 25%
    assert score["value"] in (0.0, 25.0, 50.0, 75.0, 100.0)
    assert score["ci_low"] <= score["value"] <= score["ci_high"]


def test_no_exam_items_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no exam items"):
        write_exam_dir(tmp_path, [], [])
