"""The exams of a run scored in one job (rule ``evaluate``): the model loads once for all of them.

Snakemake reruns a job whole, so a change to one exam's settings reruns the run's evaluate job. Each exam's result is
kept under a key of everything it depends on (its settings, the bytes of the files it reads, the model's files, the
meaning of its scoring code and the packages it runs on); the rerun takes the exams whose key is unchanged from there and scores only
the others, loading the model only if any is left.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Iterable

from sftlab.io import write_json

#: the packages an exam's score depends on besides sftlab
PACKAGES = ("torch", "transformers", "lm_eval", "datasets")


def run_benchmarks(config: dict) -> dict[tuple[str, str, str], set[str]]:
    """Every (model, dataset, recipe) the experiments ask for, each once, with the benchmarks it is scored on."""
    runs: dict[tuple[str, str, str], set[str]] = {}
    for exp in config["experiments"].values():
        for m in exp["models"]:
            for d in exp["datasets"]:
                for r in exp["recipes"]:
                    runs.setdefault((m, d, r), set()).update(exp["benchmarks"])
    return runs


def run_exams(config: dict, model: str, dataset: str, recipe: str) -> list[str]:
    """The benchmarks of a run scored in-process (``scored_by`` evaluate), in name order: one job scores them all."""
    from sftlab.benchmarks import benchmark_type

    benchmarks = run_benchmarks(config).get((model, dataset, recipe), set())
    return sorted(b for b in benchmarks if benchmark_type(config["benchmarks"][b]["type"]).scored_by == "evaluate")


def _digest_files(h, root: Path, files: Iterable[Path]) -> None:
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)


def content_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's relative paths and bytes."""
    p, h = Path(path), hashlib.sha256()
    if p.is_dir():
        _digest_files(h, p, [f for f in p.rglob("*") if f.is_file()])
    else:
        _digest_files(h, p.parent, [p])
    return h.hexdigest()


def model_signature(model_dir: str | Path) -> list:
    """The model directory's files with their sizes and modification times: a retrained model has other times
    (hashing a 16 GB model's bytes would take longer than its exams)."""
    root = Path(model_dir)
    return [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns]
            for f in sorted(root.rglob("*")) if f.is_file()]


def code_digest(script: str | Path, type_module: str) -> str:
    """The meaning of the code scoring one exam — the script and the sftlab code it reaches with the exam type's
    module (sftlab.fingerprint: comments and docstrings do not count) — and the versions of the packages it runs on."""
    from sftlab.fingerprint import fingerprint

    h = hashlib.sha256(fingerprint(Path(script), [type_module])[0].encode())
    for name in PACKAGES:
        try:
            h.update(f"{name}=={importlib.metadata.version(name)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{name} missing".encode())
    return h.hexdigest()


def exam_key(config: dict, inputs: dict[str, str], model: list, code: str, device: str) -> str:
    """The key of one exam's result: its settings, the files it reads (its inputs, and any ``data_dir`` or
    ``include_path``), the model's signature, the code digest and the device it is scored on."""
    files = {name: content_digest(path) for name, path in sorted(inputs.items())}
    for key in ("data_dir", "include_path"):
        if config.get(key):
            files[key] = content_digest(config[key])
    record = {"config": config, "files": files, "model": model, "code": code, "device": device}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def cached_result(cache_dir: str | Path, name: str, key: str) -> tuple[dict, list[dict]] | None:
    """(scores, answers) of exam ``name`` kept under ``key``, or None."""
    path = Path(cache_dir) / f"{name}.json"
    if not path.exists():
        return None
    entry = json.loads(path.read_text())
    return (entry["scores"], entry["answers"]) if entry.get("key") == key else None


def keep_result(cache_dir: str | Path, name: str, key: str, scores: dict, answers: list[dict]) -> None:
    """Keep exam ``name``'s latest result under ``key`` (replacing the one it had)."""
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(cache_dir) / f"{name}.json", {"key": key, "scores": scores, "answers": answers})
