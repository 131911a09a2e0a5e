"""A judged benchmark's input files gathered in one directory, whatever their origin, checked on the way in.

The workflow writes them to ``results/benchmarks/{benchmark}/``; generation and judging read only from there, so
both see the same items (``limit`` applied once) and a run records where its questions came from (``SOURCE.json``).

- ``mtbench``: ``question.jsonl``, ``judge_prompts.jsonl``, ``reference_answer/gpt-4.jsonl`` — copied from
  ``data_dir`` (files in FastChat's formats) or downloaded from FastChat at the pinned commit.
- ``alpacaeval``: ``eval_set.json`` — copied from ``data_dir`` or AlpacaEval 2's set from the hub.
- ``preference`` / ``implicit_reward``: ``pairs.jsonl`` — the preference pairs of a prepared dataset.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sftlab.evaluation import alpacaeval, mtbench
from sftlab.io import DataError, read_jsonl, write_json, write_jsonl

PAIR_FIELDS = ("id", "prompt", "chosen", "rejected")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mtbench(bench: dict, out: Path) -> dict:
    if "data_dir" in bench:
        src = Path(bench["data_dir"])
        for name in mtbench.OFFICIAL_FILES:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, out / name)
        source = {"data_dir": str(src), "files": {name: {"sha256": _sha256(out / name)} for name in mtbench.OFFICIAL_FILES}}
    else:
        source = mtbench.download_official(out, commit=bench.get("fastchat_commit", mtbench.FASTCHAT_COMMIT))
    questions = mtbench.load_questions(out / "question.jsonl")
    prompts = mtbench.load_judge_prompts(out / "judge_prompts.jsonl")
    references = mtbench.load_answers(out / "reference_answer/gpt-4.jsonl")
    missing = sorted(set(mtbench.JUDGE_PROMPT_NAMES.values()) - set(prompts))
    if missing:
        raise DataError(f"{out}/judge_prompts.jsonl lacks the judge prompts {missing}")
    questions = questions[: bench.get("limit")]
    unreferenced = [q["question_id"] for q in questions
                    if q["category"] in mtbench.NEED_REF_CATEGORIES and q["question_id"] not in references]
    if unreferenced:
        raise DataError(f"MT-Bench questions {unreferenced} need a reference answer and have none")
    write_jsonl(out / "question.jsonl", questions)
    return {**source, "n": len(questions)}


def _alpacaeval(bench: dict, out: Path) -> dict:
    if "data_dir" in bench:
        src = Path(bench["data_dir"]) / "eval_set.json"
        source = {"data_dir": str(src.parent), "sha256": _sha256(src)}
    else:
        src = alpacaeval.download_eval_set(out / "eval_set.json")
        source = {"hub_dataset": alpacaeval.HUB_DATASET, "file": alpacaeval.HUB_EVAL_FILE, "sha256": _sha256(src)}
    items = alpacaeval.load_eval_set(src)[: bench.get("limit")]
    if len({item["instruction"] for item in items}) != len(items):
        raise DataError(f"{src}: instructions must be unique (model outputs are matched by instruction)")
    (out / "eval_set.json").write_text(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
    return {**source, "n": len(items)}


def _pairs(bench: dict, out: Path, pairs_path: str | Path | None) -> dict:
    if pairs_path is None:
        raise ValueError(f"a {bench['type']} benchmark needs the preference pairs of dataset {bench['dataset']!r}")
    pairs = read_jsonl(pairs_path)
    for pair in pairs:
        missing = [k for k in PAIR_FIELDS if k not in pair]
        if missing:
            raise DataError(f"{pairs_path}: pair {pair.get('id', '?')!r} lacks {missing}")
    if not pairs:
        raise DataError(f"{pairs_path}: dataset {bench['dataset']!r} has no preference pairs to test on")
    pairs = pairs[: bench.get("limit")]
    write_jsonl(out / "pairs.jsonl", pairs)
    return {"dataset": bench["dataset"], "pairs": str(pairs_path), "n": len(pairs)}


def prepare_benchmark_files(bench: dict, out_dir: str | Path, pairs_path: str | Path | None = None) -> dict:
    """Fill ``out_dir`` with the benchmark's files (config entry ``bench``); return and write ``SOURCE.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = bench["type"]
    if kind == "mtbench":
        source = _mtbench(bench, out)
    elif kind == "alpacaeval":
        source = _alpacaeval(bench, out)
    elif kind in ("preference", "implicit_reward"):
        source = _pairs(bench, out, pairs_path)
    else:
        raise ValueError(f"benchmark type {kind!r} has no input files to prepare")
    source = {"type": kind, "limit": bench.get("limit"), **source}
    write_json(out / "SOURCE.json", source)
    return source
