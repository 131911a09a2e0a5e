"""AlpacaEval 2: the model's outputs judged pairwise against the reference outputs (win rate, length-controlled)."""

from __future__ import annotations

import json
from pathlib import Path

from sftlab.io import DataError

from .base import BenchmarkType, file_sha256, register_benchmark_type


@register_benchmark_type("alpacaeval")
class AlpacaEval(BenchmarkType):
    scored_by = "judge"
    gathers_files = True
    answer_format = "json"
    generation_input = "eval_set.json"
    max_new_tokens = 2048
    paper_key = "alpacaeval2_wr"
    paper_lc_key = "alpacaeval2_lc_wr"

    def sources(self, bench):
        return {"eval_set": f"{bench['data_dir']}/eval_set.json"} if "data_dir" in bench else {}

    def prepare(self, bench, out, pairs_path):
        """eval_set.json: copied from ``data_dir`` or AlpacaEval 2's set from the hub."""
        from sftlab.evaluation import alpacaeval

        if "data_dir" in bench:
            src = Path(bench["data_dir"]) / "eval_set.json"
            source = {"data_dir": str(src.parent), "sha256": file_sha256(src)}
        else:
            src = alpacaeval.download_eval_set(out / "eval_set.json")
            source = {"hub_dataset": alpacaeval.HUB_DATASET, "file": alpacaeval.HUB_EVAL_FILE,
                      "sha256": file_sha256(src)}
        items = alpacaeval.load_eval_set(src)[: bench.get("limit")]
        if len({item["instruction"] for item in items}) != len(items):
            raise DataError(f"{src}: instructions must be unique (model outputs are matched by instruction)")
        (out / "eval_set.json").write_text(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
        return {**source, "n": len(items)}

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        from sftlab.evaluation import alpacaeval

        eval_set = alpacaeval.load_eval_set(Path(data_dir) / self.generation_input)
        return alpacaeval.generate_model_outputs(generator, eval_set, model_id, max_new_tokens=max_new_tokens,
                                                 temperature=temperature)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        from sftlab.evaluation import alpacaeval

        eval_set = alpacaeval.load_eval_set(Path(data_dir) / "eval_set.json")
        outputs = alpacaeval.load_eval_set(answers_path)
        items = alpacaeval.pair_with_reference(outputs, eval_set)
        judgments, usage = alpacaeval.annotate_pairs(judge, cache, alpacaeval.get_annotator(settings["annotator"]),
                                                     items, seed=settings["seed"])
        scores = alpacaeval.score(judgments,
                                  model_name=outputs[0].get("generator", "model") if outputs else "model",
                                  reference_name=eval_set[0].get("generator", "reference") if eval_set else "reference",
                                  **settings["stats"])
        scores["annotator"] = settings["annotator"]
        return judgments, usage, scores

    def item_values(self, judgments):
        from sftlab.evaluation import alpacaeval

        return alpacaeval.win_items(judgments, "instruction")

    def judge_prompt_version(self, data_dir, settings):
        from sftlab.evaluation import alpacaeval

        return alpacaeval.annotator_version(settings["annotator"])
