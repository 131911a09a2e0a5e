"""Turn the dataset formats researchers have into the normalised schema.

SFT formats yield normalised examples ``{"id", "messages", "source"}``; preference formats yield
preference pairs ``{"id", "prompt", "chosen", "rejected", "subtask"}`` (and, for SFT on them,
the prompt with its chosen answer). Each loader is registered under the config's ``format`` name.
Rows come with a location (``file:line`` or ``hub-path[row]``) so that a bad row is reported there.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator
from urllib.parse import urlparse

from sftlab.io import DataError, iter_jsonl

log = logging.getLogger(__name__)

ROLES = {"system", "user", "assistant"}
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "system": "system"}

FORMATS: dict[str, Callable[[dict, str], dict]] = {}
PREFERENCE_FORMATS = {"hh_rlhf", "shp", "stackexchange"}
# the key under which a hub row loaded from one folder of its repository (``data_dirs``) carries that folder
FOLDER_KEY = "_data_dir"


class BadRow(ValueError):
    """A row that does not fit its format; the loader adds the location."""


def register_format(name: str):
    def wrap(fn):
        FORMATS[name] = fn
        return fn

    return wrap


def _field(row: dict, name: str, kind=str):
    if name not in row or row[name] is None:
        raise BadRow(f"missing field {name!r}")
    value = row[name]
    if not isinstance(value, kind):
        raise BadRow(f"field {name!r} should be {kind.__name__ if isinstance(kind, type) else kind}, got {type(value).__name__}")
    return value


def check_messages(messages: list) -> list[dict]:
    """Validate a normalised message list: known roles, string contents, a non-empty assistant turn."""
    if not isinstance(messages, list) or not messages:
        raise BadRow("messages must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise BadRow(f"messages[{i}] must be {{'role': system|user|assistant, 'content': str}}")
        out.append({"role": m["role"], "content": m["content"]})
    assistants = [m for m in out if m["role"] == "assistant"]
    if not assistants:
        raise BadRow("no assistant turn")
    if any(not m["content"].strip() for m in assistants):
        raise BadRow("empty assistant turn")
    if out[-1]["role"] != "assistant":
        out = out[: max(i for i, m in enumerate(out) if m["role"] == "assistant") + 1]
    return out


def first_turn(messages: list[dict]) -> list[dict]:
    """System prompt (if any), first user turn, first assistant answer."""
    end = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[: end + 1]


@register_format("alpaca")
def from_alpaca(row: dict, source: str) -> dict:
    instruction = _field(row, "instruction")
    extra = row.get("input") or ""
    output = _field(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return {"messages": check_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]),
            "source": source}


@register_format("messages")
def from_messages(row: dict, source: str) -> dict:
    messages = check_messages(_field(row, "messages", list))
    out = {"messages": messages, "source": row.get("dataset") or row.get("source") or source}
    row_id = row.get("id") or row.get("prompt_id")  # Tulu-v2 has "id", UltraChat-200K "prompt_id"
    if row_id is not None:
        out["id"] = str(row_id)
    return out


@register_format("sharegpt")
def from_sharegpt(row: dict, source: str) -> dict:
    turns = _field(row, "conversations", list)
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise BadRow(f"conversations[{i}] must have 'from' and 'value'")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise BadRow(f"conversations[{i}]: unknown speaker {turn['from']!r}")
        messages.append({"role": role, "content": turn["value"]})
    return {"messages": check_messages(messages), "source": source, **({"id": str(row["id"])} if "id" in row else {})}


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def parse_hh_transcript(text: str) -> list[dict]:
    """'\\n\\nHuman: ...\\n\\nAssistant: ...' → messages."""
    parts = _HH_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise BadRow("not an HH-RLHF transcript ('\\n\\nHuman: ... \\n\\nAssistant: ...')")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


# Anthropic/hh-rlhf's red-team-attempts folder: one red team conversation per row, with harmlessness ratings
# (transcript, rating, min_harmlessness_score_transcript, ...): there is no second answer to prefer or reject
RED_TEAM_REASON = ("Anthropic/hh-rlhf's red-team-attempts holds single red team transcripts with harmlessness ratings "
                   "(transcript, rating, min_harmlessness_score_transcript), not chosen/rejected pairs, so no "
                   "preference pair can be built from it; its pair folders are harmless-base, helpful-base, "
                   "helpful-online and helpful-rejection-sampled")


def refused_folder(fmt: str | None, data_dir: str) -> str | None:
    """Why a hub folder cannot be read in format ``fmt`` (None when it can): checked when the config is planned."""
    if fmt == "hh_rlhf" and PurePosixPath(data_dir).name == "red-team-attempts":
        return RED_TEAM_REASON
    return None


def folder_name(row: dict) -> str | None:
    """The hub folder a row was loaded from (``data_dirs``), its last path component; None for other rows."""
    folder = row.get(FOLDER_KEY)
    return PurePosixPath(folder).name if folder else None


@register_format("hh_rlhf")
def from_hh_rlhf(row: dict, source: str) -> dict:
    if "transcript" in row and "chosen" not in row:
        raise BadRow(RED_TEAM_REASON)
    chosen = parse_hh_transcript(_field(row, "chosen"))
    rejected = parse_hh_transcript(_field(row, "rejected"))
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise BadRow("transcript does not end with an assistant turn")
    if chosen[:-1] != rejected[:-1]:
        raise BadRow("chosen and rejected transcripts differ before the last assistant turn")
    if not chosen[-1]["content"]:
        raise BadRow("empty assistant turn")
    # the subtask is the hh-rlhf folder (harmless-base, helpful-base, ...) when the rows were loaded per folder
    return {"prompt": chosen[:-1], "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"],
            "subtask": row.get("subtask") or folder_name(row) or "hh_rlhf", "source": source}


@register_format("shp")
def from_shp(row: dict, source: str) -> dict:
    history = _field(row, "history")
    a, b = _field(row, "human_ref_A"), _field(row, "human_ref_B")
    label = _field(row, "labels", int)
    if label not in (0, 1):
        raise BadRow(f"field 'labels' should be 0 or 1, got {label}")
    chosen, rejected = (a, b) if label == 1 else (b, a)
    if not chosen.strip():
        raise BadRow("empty assistant turn")
    # SHP's domain is the subreddit and the split ("askculinary_validation"): the subtask is the subreddit, so that a
    # validation set's subtasks are named as the test set's (and as ROSE's 18 SHP subtasks)
    domain = re.sub(r"_(train|validation|test)$", "", str(row.get("domain", "shp")))
    out = {"prompt": [{"role": "user", "content": history}], "chosen": chosen, "rejected": rejected,
           "subtask": domain, "source": source}
    if "post_id" in row:
        out["id"] = f"{row['post_id']}-{row.get('c_root_id_A', '')}-{row.get('c_root_id_B', '')}"
    return out


def stackexchange_site(host: str) -> str:
    """A Stack Exchange site's short name, as ROSE names its subtasks: 'academia.stackexchange.com' → 'academia',
    'askubuntu.com' → 'askubuntu'."""
    host = host.removesuffix(".stackexchange.com")
    return host.removesuffix(".com")


@register_format("stackexchange")
def from_stackexchange(row: dict, source: str) -> dict:
    """A HuggingFaceH4/stack-exchange-preferences question as ROSE pairs it (the DPO authors' get_se, which ROSE's
    released files follow): chosen is the answer with the highest pm_score, rejected the one with the lowest, each
    the first such answer in the row's order when scores tie. Subtask: the site, short ('academia')."""
    question = _field(row, "question")
    answers = _field(row, "answers", list)
    if len(answers) < 2:
        raise BadRow("needs at least two answers")
    for i, ans in enumerate(answers):
        if not isinstance(ans, dict) or not isinstance(ans.get("text"), str) or not isinstance(ans.get("pm_score"), int):
            raise BadRow(f"answers[{i}] must have 'text' (str) and 'pm_score' (int)")
    scores = [ans["pm_score"] for ans in answers]
    best = max(range(len(answers)), key=scores.__getitem__)
    worst = min(range(len(answers)), key=scores.__getitem__)
    # ROSE keeps such a question as a pair of one answer with itself, whose DPO gradient is zero (19 of the 485
    # pairs of its 50-shot StackExchange file): here it is a bad row
    if scores[best] == scores[worst]:
        raise BadRow("all answers have the same score")
    if not answers[best]["text"].strip():
        raise BadRow("empty assistant turn")
    host = folder_name(row)
    meta = row.get("metadata") or []
    if host is None and meta and isinstance(meta[0], str):
        host = urlparse(meta[0]).netloc
    out = {"prompt": [{"role": "user", "content": question}], "chosen": answers[best]["text"],
           "rejected": answers[worst]["text"], "subtask": stackexchange_site(host) if host else "stackexchange",
           "source": source}
    if "qid" in row:
        out["id"] = f"{out['subtask']}-{row['qid']}"
    return out


LETTERS = "ABCDEFGH"
# multiple-choice exam schemas: where each one keeps the question, the options and the answer
EXAM_SCHEMAS = {
    "mmlu": {"question": "question", "choices": "choices", "answer": "answer", "subject": "subject"},  # cais/mmlu
    "ceval": {"question": "question", "choices": list("ABCD"), "answer": "answer", "subject": None},  # C-Eval, FinEval
    "financeiq": {"question": "Question", "choices": list("ABCD"), "answer": "Answer", "subject": None},  # FinanceIQ
}
EXAM_ANSWER_PROMPT = "答案："


def exam_item(row: dict, schema: str) -> dict:
    """A multiple-choice item in the cais/mmlu schema: question, choices (list), answer (index), subject."""
    spec = EXAM_SCHEMAS[schema]
    question = _field(row, spec["question"])
    if isinstance(spec["choices"], str):
        choices = _field(row, spec["choices"], list)
    else:
        choices = [str(_field(row, c, (str, int, float))) for c in spec["choices"]]
    answer = row.get(spec["answer"])
    if isinstance(answer, str) and answer.strip().upper() in LETTERS[: len(choices)]:
        answer = LETTERS.index(answer.strip().upper())
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(choices):
        raise BadRow(f"field {spec['answer']!r} must name one of {len(choices)} options, got {row.get(spec['answer'])!r}")
    subject = str(row.get(spec["subject"]) or "") if spec["subject"] else ""
    return {"question": question, "choices": choices, "answer": answer, "subject": subject}


def exam_prompt(item: dict, answer_prompt: str = EXAM_ANSWER_PROMPT) -> str:
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(item["choices"]))
    return f"{item['question'].strip()}\n{options}\n{answer_prompt}"


def _exam_format(schema: str):
    def load(row: dict, source: str) -> dict:
        """An exam item as an SFT example (the answer letter as response); the item itself is kept under ``exam``
        so that an exam benchmark can score the held-out part of the same pool."""
        item = exam_item(row, schema)
        messages = [{"role": "user", "content": exam_prompt(item)},
                    {"role": "assistant", "content": LETTERS[item["answer"]]}]
        # no id from the row: exams number items per subject, so ids repeat across subjects
        return {"messages": messages, "source": f"{source}/{item['subject']}" if item["subject"] else source,
                "exam": item}

    return load


for _schema in EXAM_SCHEMAS:
    register_format(f"exam_{_schema}")(_exam_format(_schema))


MMLU_LETTERS = "ABCDEFGHIJ"


@register_format("mmlu")
def from_mmlu(row: dict, source: str) -> dict:
    """``cais/mmlu`` rows (question, subject, choices, answer index) as LESS prompts them; subtask = subject."""
    question, subject = _field(row, "question"), _field(row, "subject")
    choices, answer = _field(row, "choices", list), _field(row, "answer", int)
    if not 0 <= answer < len(choices) <= len(MMLU_LETTERS):
        raise BadRow(f"answer {answer} is not an index into {len(choices)} choices")
    options = "".join(f"\n{MMLU_LETTERS[i]}. {c}" for i, c in enumerate(choices))
    prompt = (f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
              f"{question}{options}\nAnswer:")
    return {"messages": check_messages([{"role": "user", "content": prompt},
                                        {"role": "assistant", "content": MMLU_LETTERS[answer]}]),
            "source": source, "subtask": subject}


@register_format("tydiqa")
def from_tydiqa(row: dict, source: str) -> dict:
    """TyDi QA gold passage rows (``google-research-datasets/tydiqa``, secondary_task) with the open-instruct
    English template LESS uses; subtask = the language, the prefix of the id (``english-...``)."""
    row_id, context, question = _field(row, "id"), _field(row, "context"), _field(row, "question")
    answers = _field(row, "answers", dict).get("text") or []
    if not answers or not isinstance(answers[0], str) or not answers[0].strip():
        raise BadRow("no answer text")
    prompt = ("Answer the following question based on the information in the given passage.\n"
              f"Passage: {context}\nQuestion: {question}")
    return {"id": str(row_id), "messages": check_messages([{"role": "user", "content": prompt},
                                                           {"role": "assistant", "content": answers[0]}]),
            "source": source, "subtask": row_id.split("-")[0]}


def lm_eval_fewshot_examples(task_dir: str, source: str) -> list[dict]:
    """SFT examples from the few-shot exemplars that lm-eval's task YAMLs in ``lm_eval/tasks/{task_dir}`` carry.

    E.g. ``bbh/fewshot``: BIG-Bench Hard's three exemplars per task, which are not test items (LESS's BBH
    validation set). The prompt is the task's description and ``doc_to_text``, the answer its ``doc_to_target``,
    both rendered from the exemplar as lm-eval renders them; subtask = the task's ``dataset_name``.
    """
    import lm_eval
    import yaml
    from jinja2.sandbox import SandboxedEnvironment

    tasks = (Path(lm_eval.__file__).parent / "tasks").resolve()
    root = (tasks / task_dir).resolve()
    if not root.is_relative_to(tasks):
        raise DataError(f"lm-eval task directory {task_dir!r} is outside lm-eval's tasks ({tasks})")
    # the templates are lm-eval's; rendered sandboxed all the same, as data
    jinja = SandboxedEnvironment()
    if not root.is_dir():
        raise DataError(f"lm-eval has no task directory {task_dir!r} (looked in {root})")
    examples = []
    for path in sorted(root.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if not isinstance(spec, dict) or not spec.get("fewshot_config", {}).get("samples"):
            continue
        if "include" in spec:
            spec = {**yaml.safe_load((root / spec["include"]).read_text()), **spec}
        subtask = spec.get("dataset_name") or path.stem
        for k, sample in enumerate(spec["fewshot_config"]["samples"]):
            prompt = jinja.from_string(spec["doc_to_text"]).render(**sample)
            target = jinja.from_string(spec["doc_to_target"]).render(**sample)
            messages = [{"role": "user", "content": spec.get("description", "") + prompt},
                        {"role": "assistant", "content": target}]
            examples.append({"id": f"{source}-{subtask}-{k}", "messages": check_messages(messages), "source": source,
                             "subtask": subtask})
    if not examples:
        raise DataError(f"no few-shot exemplars in lm-eval task directory {task_dir!r}")
    return examples


def pair_to_example(pair: dict) -> dict:
    """A preference pair as an SFT example: the prompt and its chosen answer."""
    return {"id": pair["id"], "messages": pair["prompt"] + [{"role": "assistant", "content": pair["chosen"]}],
            "source": pair.get("source", pair.get("subtask", ""))}


def _utf8(data: bytes) -> str | BadRow:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRow(f"not valid UTF-8 (byte {data[exc.start]:#04x} at column {exc.start + 1})")


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict | BadRow]]:
    """(file:line, object) per non-blank line; a line that is no JSON object comes as a BadRow (skippable)."""
    with path.open("rb") as fh:
        for lineno, data in enumerate(fh, start=1):
            line = _utf8(data.removeprefix(b"\xef\xbb\xbf") if lineno == 1 else data)
            if isinstance(line, str):
                if not line.strip():
                    continue
                try:
                    line = json.loads(line)
                except json.JSONDecodeError as exc:
                    line = BadRow(f"invalid JSON ({exc.msg}, column {exc.colno})")
            if isinstance(line, dict | BadRow):
                yield f"{path}:{lineno}", line
            else:
                yield f"{path}:{lineno}", BadRow(f"expected a JSON object, got {type(line).__name__}")


def iter_rows_local(path: str | Path) -> Iterator[tuple[str, dict | BadRow]]:
    """(location, row) of a local JSON, JSONL or CSV file. A row that cannot be read (bad JSON, bad UTF-8) comes as a
    BadRow, which ``convert`` skips or reports like a row that does not fit its format; a .json file that does not
    parse as a whole has no rows to skip and raises at its line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".json":
        data = path.read_bytes()
        try:
            rows = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise DataError(f"{path}:{line}: not valid UTF-8 (byte {data[exc.start]:#04x})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: a .json dataset must be a list of objects")
        for i, row in enumerate(rows):
            yield f"{path}[{i}]", row if isinstance(row, dict) else BadRow(f"expected a JSON object, got "
                                                                           f"{type(row).__name__}")
    elif path.suffix == ".csv":
        import csv

        # undecodable bytes become lone surrogates, so that the row holding them is known and can be skipped
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            reader = csv.DictReader(f)
            for row in reader:
                location = f"{path}:{reader.line_num}"
                bad = ["a cell beyond the header" if k is None else f"field {k!r}" for k, v in row.items()
                       if _has_surrogates(k) or _has_surrogates(v)]
                yield location, BadRow(f"not valid UTF-8 ({bad[0]})") if bad else dict(row)
    else:
        yield from _jsonl_rows(path)


def _has_surrogates(value) -> bool:
    if isinstance(value, list):  # csv's restkey: the cells beyond the header
        return any(_has_surrogates(v) for v in value)
    return isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value)


def load_hub_split(path: str, name: str | None, split: str, revision: str | None, data_dir: str | None = None):
    """One split of a hub dataset (one folder of it with ``data_dir``): from the datasets cache offline
    (HF_DATASETS_OFFLINE=1, as in jobs on cluster nodes: sftlab.offline), where the login node filled it."""
    import datasets

    from sftlab.offline import PREFLIGHT, NotCached

    try:
        return datasets.load_dataset(path, name, data_dir=data_dir, split=split, revision=revision)
    except (ConnectionError, FileNotFoundError, ValueError) as exc:
        if not datasets.config.HF_HUB_OFFLINE:
            raise
        where = f"{path}/{data_dir}" if data_dir else path
        raise NotCached(f"hub dataset {where} ({name or 'default'}, {split}) is not in the datasets cache "
                        f"({datasets.config.HF_DATASETS_CACHE}) and this job reads it offline "
                        f"({type(exc).__name__}: {exc}); fetch it: {PREFLIGHT}") from None


def iter_rows_hub(path: str, name: str | None, split: str, revision: str | None,
                  data_dirs: list[str] | None = None) -> Iterator[tuple[str, dict]]:
    """(location, row) of a hub dataset. With ``data_dirs``, each folder of the repository is loaded on its own
    (``load_dataset``'s ``data_dir``: only that folder's files download, e.g. 10 sites of a 20 GB repository),
    ``split`` applies within each folder, and each row carries its folder under FOLDER_KEY (the loaders' subtask)."""
    for data_dir in data_dirs or [None]:
        data = load_hub_split(path, name, split, revision, data_dir)
        where = f"{path}/{data_dir}" if data_dir else path
        for i, row in enumerate(data):
            yield f"{where}[{split}][{i}]", {**row, FOLDER_KEY: data_dir} if data_dir else dict(row)


def convert(rows: Iterable[tuple[str, dict | BadRow]], fmt: str, source: str, on_bad_rows: str = "error",
            first_turn_only: bool = False, origin: str | None = None) -> list[dict]:
    """Convert rows of format ``fmt``; a bad row (unreadable, not fitting the format, a repeated id) raises DataError
    at its location, or is skipped and counted. ``origin`` (the file or hub path) names the data when none is left."""
    if fmt not in FORMATS:
        raise DataError(f"unknown dataset format {fmt!r}; known: {sorted(FORMATS)}")
    loader = FORMATS[fmt]
    out, skipped, first_at = [], 0, {}
    for location, row in rows:
        try:
            if isinstance(row, BadRow):
                raise row
            item = loader(row, source)
            item.setdefault("id", f"{source}-{len(out) + skipped:07d}")
            if item["id"] != item["id"].strip() or not item["id"].isprintable():
                # an id is a line of the selection's id files: "r11 " or "r12\nx" would come back as another id
                raise BadRow(f"id {item['id']!r} has surrounding whitespace or a line break / control character")
            if item["id"] in first_at:
                raise BadRow(f"duplicate id {item['id']!r} (first at {first_at[item['id']]})")
        except BadRow as exc:
            if on_bad_rows == "skip":
                skipped += 1
                log.warning("skipped %s: %s", location, exc)
                continue
            raise DataError(f"{location}: {exc} (set on_bad_rows: skip to skip such rows)") from None
        first_at[item["id"]] = location
        if first_turn_only and "messages" in item:
            item["messages"] = first_turn(item["messages"])
        out.append(item)
    where = origin or source
    if skipped:
        log.warning("%d bad rows skipped", skipped)
        if not out:
            raise DataError(f"{where}: every one of its {skipped} rows was bad and skipped (on_bad_rows: skip); the "
                            "log names each row and what was wrong")
    if not out:
        raise DataError(f"{where}: no rows (an empty file?)")
    return out
