"""The published judgments a judge calibration re-judges: where they are (URL + sha256), a seeded sample of them, and
the re-judging with the configured judge (``benchmarks.<name>.calibration``; statistics: ``sftlab.evaluation.calibration``).

- **AlpacaEval 2**: alpaca_eval's leaderboard annotations by its default annotator
  ``weighted_alpaca_eval_gpt4_turbo`` (gpt-4-1106-preview), ``results/<model>/weighted_alpaca_eval_gpt4_turbo/
  annotations.json`` in tatsu-lab/alpaca_eval at ``ALPACAEVAL_COMMIT``: each annotation holds the instruction, the
  reference output (``output_1``, GPT-4 Turbo's), the model's (``output_2``) and the original ``preference``. Ours is
  the benchmark's own annotator on the same pair (``sftlab.benchmarks.alpacaeval.annotate_pairs``).
- **MT-Bench**: FastChat's released GPT-4 single-answer judgments (``gpt-4_single.jsonl``, LMSYS's Hugging Face space
  that ``fastchat/llm_judge/download_mt_bench_pregenerated.py`` reads): each holds the model, question, turn, the
  judge prompt's name and the exact user prompt GPT-4 (gpt-4-0613) rated, with its ``score``. Ours sends the same
  prompt, with the system prompt of that judge prompt from the benchmark's ``judge_prompts.jsonl``, decoded as the
  benchmark judges (``sftlab.benchmarks.mtbench.parse_rating``, greedy).

A sample is the same ``items`` items (seeded, among those every sampled model has) for every model, so the
per-model means compare like with like.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from sftlab.config import ConfigError
from sftlab.io import DataError, download, iter_jsonl

ALPACAEVAL_REPOSITORY = "tatsu-lab/alpaca_eval"
#: tatsu-lab/alpaca_eval's main on 2025-08-09 (the digests below were computed from its blobs at this commit)
ALPACAEVAL_COMMIT = "cd543a149df89434d8a54582c0151c0b945c3d20"
ALPACAEVAL_ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
ALPACAEVAL_RAW_URL = "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval"
#: model → sha256 of its annotations.json at ALPACAEVAL_COMMIT (computed from the repository's blobs), with its
#: published win rate against GPT-4 Turbo (the mean preference − 1 over the 805 annotations)
ALPACAEVAL_SHA256 = {
    "FuseChat-Gemma-2-9B-Instruct": "72945b6a549eadcd18940fee835343d62985fced144e5b7a2b69c79e120d3cab",    # 70.5
    "FuseChat-Llama-3.1-8B-Instruct": "7ef73623093cb690473d201417d3c6dfcb0e8d1c1f329180d802ab7dec81b1dc",  # 63.3
    "gpt4_1106_preview": "2a05177cffbab8fa409adf7ee1f0f90414cab169afe391b861489a5734c79363",   # 50 (the reference)
    "claude-2.1": "8dfc94501f8b783d96facd9158e0333dc83c30112c5c1927838fdcc2ee00d213",          # 15.7
    "gpt-3.5-turbo-1106": "4558bed562144780dfcdd5ff55cafc17d76eea62eca143cfcc7ac5f3c154de10",  # 9.2
    "vicuna-7b": "86387fd674fc860d352750ff022c4d3b12daaf2fc51f0c70e62da81205f0a4f4",           # 4.2
    "alpaca-7b": "41047c654c6c5ddc0290fb207367e3f458d22692045eb41927eb64103a2cb764",           # 2.6
    "falcon-7b-instruct": "b15d77fa3fa266fb74058c4f9d42a5856dcc07431b2dcea528867306002207fe",  # 2.1
}
#: the models sampled by default: a spread of win rates to rank (GPT-4 Turbo itself is left out: its outputs are the
#: reference's, every item a tie that no judge is asked about)
ALPACAEVAL_MODELS = ("FuseChat-Gemma-2-9B-Instruct", "FuseChat-Llama-3.1-8B-Instruct", "claude-2.1",
                     "gpt-3.5-turbo-1106", "vicuna-7b", "alpaca-7b")

#: FastChat's released GPT-4 single-answer judgments (download_mt_bench_pregenerated.py). The file lives on the
#: Hugging Face hub, which this project could not reach when it was pinned: its sha256 is a required config value
#: (``benchmarks.<name>.calibration.sha256``: {gpt-4_single.jsonl: <digest>})
MTBENCH_JUDGMENTS = "gpt-4_single.jsonl"
MTBENCH_JUDGMENTS_URL = ("https://huggingface.co/spaces/lmsys/mt-bench/resolve/main/data/mt_bench/model_judgment/"
                         "gpt-4_single.jsonl")
MTBENCH_ORIGINAL_JUDGE = "gpt-4"
#: the six models of the MT-Bench paper's tables, from GPT-4 down to LLaMA-13B
MTBENCH_MODELS = ("gpt-4", "claude-v1", "gpt-3.5-turbo", "vicuna-13b-v1.3", "alpaca-13b", "llama-13b")


def sample_ids(ids_per_model: dict[str, set], n: int, seed: int) -> list:
    """``n`` item ids (all if fewer) drawn with ``seed`` among the ids every model has, in sorted order."""
    common = sorted(set.intersection(*ids_per_model.values()), key=str) if ids_per_model else []
    return sorted(random.Random(seed).sample(common, min(n, len(common))), key=str)


def _score(value) -> float | None:
    """A published score as a number; None for a missing, NaN or negative (FastChat's −1: unparsed) one."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) or value < 0 else value


class CalibrationSource(ABC):
    """The published judgments of one benchmark type: files, their reading, sampling and re-judging."""

    kind: ClassVar[str]           # "rating" or "preference" (sftlab.evaluation.calibration)
    original_judge: ClassVar[str]

    @abstractmethod
    def default_models(self) -> tuple[str, ...]:
        """The models sampled when ``calibration.models`` is absent."""

    @abstractmethod
    def files(self, calib: dict, key: str) -> dict[str, tuple[str, str | None]]:
        """File (relative path under ``data_dir`` / the download folder) → (URL, pinned sha256); ConfigError naming
        ``key`` where a download has no digest to check."""

    @abstractmethod
    def sample(self, folder: Path, models: list[str], n: int, seed: int) -> list[dict]:
        """Sample rows ``{"model", "item", "original", ...}`` with what re-judging them needs."""

    def models(self, calib: dict) -> list[str]:
        return list(calib.get("models") or self.default_models())


class AlpacaEvalSource(CalibrationSource):
    kind = "preference"
    original_judge = f"alpaca_eval {ALPACAEVAL_ANNOTATOR} (gpt-4-1106-preview)"

    def default_models(self):
        return ALPACAEVAL_MODELS

    @staticmethod
    def path(model: str) -> str:
        return f"{model}/{ALPACAEVAL_ANNOTATOR}/annotations.json"

    def files(self, calib, key):
        # a local copy (data_dir) is checked against the digests the config gives, a download against the pinned ones
        pinned = {**({} if "data_dir" in calib else ALPACAEVAL_SHA256), **calib.get("sha256", {})}
        out = {}
        for model in self.models(calib):
            if "data_dir" not in calib and model not in pinned:
                raise ConfigError(f"config key {key}.sha256: model {model!r} has no pinned digest of its alpaca_eval "
                                  f"annotations (pinned: {sorted(ALPACAEVAL_SHA256)}); give its sha256 as "
                                  f"{key}.sha256.{model}")
            out[self.path(model)] = (f"{ALPACAEVAL_RAW_URL}/{ALPACAEVAL_COMMIT}/results/{self.path(model)}",
                                     pinned.get(model))
        return out

    def load(self, folder: Path, model: str) -> dict[str, dict]:
        path = folder / self.path(model)
        annotations = json.loads(path.read_text())
        if not isinstance(annotations, list):
            raise DataError(f"{path}: expected a JSON list of annotations")
        out = {}
        for k, a in enumerate(annotations):
            if not all(isinstance(a.get(f), str) for f in ("instruction", "output_1", "output_2")):
                raise DataError(f"{path}: annotation {k} needs string fields instruction, output_1 and output_2")
            out[a["instruction"]] = a
        return out

    def sample(self, folder, models, n, seed):
        loaded = {m: self.load(folder, m) for m in models}
        rows = []
        for instruction in sample_ids({m: set(a) for m, a in loaded.items()}, n, seed):
            for model in models:
                a = loaded[model][instruction]
                rows.append({"model": model, "item": instruction, "original": _score(a.get("preference")),
                             "instruction": instruction, "output_1": a["output_1"], "output_2": a["output_2"]})
        return rows

    def rejudge(self, judge, cache, sample, data_dir, settings, judge_config):
        from sftlab.benchmarks import alpacaeval

        annotator = alpacaeval.get_annotator(settings["annotator"])
        items = [{k: r[k] for k in ("instruction", "output_1", "output_2")} for r in sample]
        annotations, usage = alpacaeval.annotate_pairs(judge, cache, annotator, items, seed=settings["seed"])
        rows = [{"model": r["model"], "item": r["item"], "original": r["original"], "ours": a["preference"]}
                for r, a in zip(sample, annotations)]
        return rows, usage, alpacaeval.annotator_version(settings["annotator"])


class MTBenchSource(CalibrationSource):
    kind = "rating"
    original_judge = "FastChat gpt-4 (gpt-4-0613) single-answer grading"

    def default_models(self):
        return MTBENCH_MODELS

    def files(self, calib, key):
        digest = calib.get("sha256", {}).get(MTBENCH_JUDGMENTS)
        if "data_dir" not in calib and digest is None:
            raise ConfigError(f"config key {key}.sha256: FastChat's GPT-4 judgments ({MTBENCH_JUDGMENTS_URL}) have no "
                              f"pinned sha256 in sftlab (the Hugging Face hub was out of reach when it was pinned): "
                              f"download the file once, and give its digest (sha256sum) as "
                              f"{key}.sha256.{MTBENCH_JUDGMENTS}, or set {key}.data_dir to a folder holding it")
        return {MTBENCH_JUDGMENTS: (MTBENCH_JUDGMENTS_URL, digest)}

    def load(self, folder: Path, models: list[str]) -> dict[str, dict]:
        """(model, question_id, turn) → the original judge's judgment, for ``models``."""
        path = folder / MTBENCH_JUDGMENTS
        wanted, out = set(models), {}
        for lineno, j in iter_jsonl(path):
            judge = j.get("judge")
            if not (isinstance(judge, list) and len(judge) == 2 and isinstance(j.get("user_prompt"), str)
                    and j.get("turn") in (1, 2) and "question_id" in j and "model" in j):
                raise DataError(f"{path}:{lineno}: a single-answer judgment needs question_id, model, judge "
                                f"[judge model, prompt name], user_prompt, turn (1 or 2) and score")
            if judge[0] == MTBENCH_ORIGINAL_JUDGE and j["model"] in wanted:
                out[(j["model"], j["question_id"], j["turn"])] = j
        return out

    def sample(self, folder, models, n, seed):
        loaded = self.load(folder, models)
        questions = {m: {q for (model, q, _) in loaded if model == m} for m in models}
        missing = [m for m, qs in questions.items() if not qs]
        if missing:
            raise DataError(f"{folder / MTBENCH_JUDGMENTS}: no {MTBENCH_ORIGINAL_JUDGE} judgments of models {missing}")
        rows = []
        for question in sample_ids(questions, n, seed):
            for model in models:
                for turn in (1, 2):
                    j = loaded.get((model, question, turn))
                    if j is not None:
                        rows.append({"model": model, "item": f"{question}.{turn}", "original": _score(j.get("score")),
                                     "question_id": question, "turn": turn, "prompt_name": j["judge"][1],
                                     "user_prompt": j["user_prompt"]})
        return rows

    def rejudge(self, judge, cache, sample, data_dir, settings, judge_config):
        from sftlab.benchmarks.base import file_sha256
        from sftlab.benchmarks import mtbench
        from sftlab.evaluation.judges import JudgeRequest, run_judge

        prompts = mtbench.load_judge_prompts(Path(data_dir) / "judge_prompts.jsonl")
        unknown = sorted({r["prompt_name"] for r in sample} - set(prompts))
        if unknown:
            raise DataError(f"{data_dir}/judge_prompts.jsonl lacks the judge prompts {unknown} of the published "
                            "judgments")
        max_tokens = judge_config.get("max_tokens", mtbench.JUDGE_MAX_TOKENS)
        requests_ = [JudgeRequest(messages=[{"role": "system", "content": prompts[r["prompt_name"]]["system_prompt"]},
                                            {"role": "user", "content": r["user_prompt"]}],
                                  max_tokens=max_tokens, temperature=0.0) for r in sample]
        judged = run_judge(judge, requests_, cache)
        rows = [{"model": r["model"], "item": r["item"], "original": r["original"],
                 "ours": mtbench.parse_rating(response.text)} for r, response in zip(sample, judged.responses)]
        version = f"FastChat judge_prompts.jsonl sha256:{file_sha256(Path(data_dir) / 'judge_prompts.jsonl')[:12]}"
        return rows, judged.usage, version


SOURCES: dict[str, CalibrationSource] = {"alpacaeval": AlpacaEvalSource(), "mtbench": MTBenchSource()}


def source_of(benchmark_type: str, key: str) -> CalibrationSource:
    if benchmark_type not in SOURCES:
        raise ConfigError(f"config key {key}: benchmark type {benchmark_type!r} has no published original-judge "
                          f"scores to calibrate against (types with them: {sorted(SOURCES)})")
    return SOURCES[benchmark_type]


def gather(benchmark_type: str, calib: dict, key: str, out_dir: str | Path, timeout_s: float = 120.0) -> dict:
    """Copy (``data_dir``) or download the published files into ``out_dir``, each checked against its pinned
    sha256 (a download that differs is refused), and return the record of where they came from."""
    import hashlib

    source = source_of(benchmark_type, key)
    out_dir = Path(out_dir)
    record = {"original_judge": source.original_judge, "files": {}}
    for name, (url, digest) in source.files(calib, key).items():
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if "data_dir" in calib:
            shutil.copyfile(Path(calib["data_dir"]) / name, target)
            origin = str(Path(calib["data_dir"]) / name)
        else:
            content = download(url, timeout_s)
            target.write_bytes(content)
            origin = url
        actual = hashlib.sha256(target.read_bytes()).hexdigest()
        if digest is not None and actual != digest:
            raise DataError(f"{origin}: sha256 {actual} differs from the pinned {digest} ({key}.sha256)")
        record["files"][name] = {"source": origin, "sha256": actual}
    return record


def sample(benchmark_type: str, calib: dict, key: str, folder: str | Path) -> list[dict]:
    """The pinned sample of the gathered files in ``folder`` (models × ``items``, seeded by ``seed``)."""
    source = source_of(benchmark_type, key)
    return source.sample(Path(folder), source.models(calib), int(calib.get("items", 10)), int(calib.get("seed", 0)))


def check_calibrations(config: dict) -> None:
    """At plan time: every ``benchmarks.<name>.calibration`` names a type with published judgments and a digest for
    every file it downloads."""
    for name, bench in config["benchmarks"].items():
        if "calibration" in bench:
            key = f"benchmarks.{name}.calibration"
            source_of(bench["type"], key).files(bench["calibration"], key)
