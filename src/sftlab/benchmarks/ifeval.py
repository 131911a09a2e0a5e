"""IFEval: verifiable instructions ("answer in fewer than 50 words", "no commas", ...), checked by rules, no judge.

Scored through lm-eval's own ``ifeval`` task (its prompts, generation settings, instruction checkers and metrics):
sftlab only swaps the task's dataset for the gathered ``ifeval_input_data.jsonl`` — google/IFEval at a pinned
revision, or a fixture in the same format (``key``, ``prompt``, ``instruction_id_list``, ``kwargs``). The checkers
need langdetect, immutabledict and nltk; sentence counts need nltk's ``punkt_tab``, which scoring reads from
``sftlab.offline.nltk_data_dir()`` and never downloads (the preflight fetches it on the login node; scoring without
it stops before generation).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from sftlab.io import DataError, read_jsonl, write_jsonl

from .base import BenchmarkType, file_sha256, register_benchmark_type
from .lm_eval import lm_eval_score

HUB_DATASET = "google/IFEval"
HUB_FILE = "ifeval_input_data.jsonl"
HUB_REVISION = "966cd89545d6b6acfd7638bc708b98261ca58e84"
FIELDS = ("key", "prompt", "instruction_id_list", "kwargs")
TASK = "sftlab_ifeval"


def task_spec(data_file: Path, max_new_tokens: int) -> dict:
    """lm-eval's ifeval task over ``data_file``: everything but the dataset (and the answer cap) is lm-eval's."""
    import lm_eval

    return {
        "include": str(Path(lm_eval.__file__).parent / "tasks" / "ifeval" / "ifeval.yaml"),
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"train": str(Path(data_file).resolve())}},
        "generation_kwargs": {"until": [], "do_sample": False, "temperature": 0.0, "max_gen_toks": max_new_tokens},
    }


def ifeval_score(lm, data_file: Path, max_new_tokens: int, metric: str, limit: int | None = None,
                 apply_chat_template: bool = True) -> dict:
    """The score dict of an lm-eval ``LM`` on the IFEval items of ``data_file``, with the other three metrics."""
    from sftlab.offline import require_punkt_tab

    # before lm-eval's ifeval module is imported: it would try to download punkt_tab, and fail only at the first count
    require_punkt_tab()
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / f"{TASK}.yaml").write_text(yaml.safe_dump(task_spec(data_file, max_new_tokens)))
        manager = TaskManager(include_path=tmp)
        return lm_eval_score(lm, TASK, manager, 0, metric, limit=limit, apply_chat_template=apply_chat_template,
                             report=METRICS)


METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


@register_benchmark_type("ifeval")
class IFEval(BenchmarkType):
    gathers_files = True
    data_keys = ("revision",)

    def job_downloads(self, name, bench):
        from sftlab.offline import NltkData

        return [NltkData(f"benchmarks.{name}")]

    def require_local_data(self, bench):
        from sftlab.offline import require_punkt_tab

        require_punkt_tab()

    def sources(self, bench):
        return {"input_data": f"{bench['data_dir']}/{HUB_FILE}"} if "data_dir" in bench else {}

    def prepare(self, bench, out, pairs_path):
        """``ifeval_input_data.jsonl``: copied from ``data_dir`` or downloaded from the hub at ``revision``."""
        if "data_dir" in bench:
            src = Path(bench["data_dir"]) / HUB_FILE
            source = {"data_dir": str(src.parent)}
        else:
            from huggingface_hub import hf_hub_download

            revision = bench.get("revision", HUB_REVISION)
            src = Path(hf_hub_download(HUB_DATASET, HUB_FILE, repo_type="dataset", revision=revision))
            source = {"hub_dataset": HUB_DATASET, "file": HUB_FILE, "revision": revision}
        items = read_jsonl(src)
        for i, item in enumerate(items, 1):
            missing = [k for k in FIELDS if k not in item]
            if missing:
                raise DataError(f"{src} line {i}: an IFEval item lacks {missing}")
            if len(item["instruction_id_list"]) != len(item["kwargs"]):
                raise DataError(f"{src} line {i}: {len(item['instruction_id_list'])} instructions but "
                                f"{len(item['kwargs'])} kwargs")
        if not items:
            raise DataError(f"{src}: no IFEval items")
        items = items[: bench.get("limit")]
        write_jsonl(out / HUB_FILE, items)
        return {**source, "sha256": file_sha256(src), "n": len(items)}

    def evaluate(self, model, tokenizer, bench, inputs):
        from lm_eval.models.huggingface import HFLM

        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=bench["batch_size"], device=str(model.device))
        score = ifeval_score(lm, Path(inputs["data"]) / HUB_FILE, bench["max_new_tokens"], bench["metric"],
                             apply_chat_template=bench["chat_template"])
        return score, []
