"""AlpacaEval 2: model outputs, pairwise judging against reference outputs, win rate and length-controlled win rate.

Conventions are alpaca_eval's: in an annotation ``output_1`` is the reference (baseline) and ``output_2``
the model; ``preference`` is in [1, 2], 1 = reference better, 2 = model better, 1.5 = tie; the win rate
is mean(preference − 1) × 100, so a tie counts half. The two outputs are shown to the judge in a seeded
random order per instruction (undone before scoring) to cancel position bias, and identical outputs are
a tie without a judge call.

Annotators are registered by name. ``weighted_alpaca_eval_gpt4_turbo`` is alpaca_eval 0.6.6's default
AlpacaEval 2 annotator: its prompt (``alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt``), one output token,
and preference = 2 − P("m") / (P("m") + P("M")) from the top-5 log-probabilities. ``alpaca_eval_clf_text``
is the same prompt for judges without log-probabilities: the answer text "m" or "M" gives 1 or 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.generation import Generator, GenerationRequest, SamplingParams
from sftlab.evaluation.judges import Judge, JudgeRequest, JudgeResponse, JudgeUsage, run_judge
from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import DataError

log = logging.getLogger(__name__)

#: size of the official AlpacaEval set; the length-controlled GLM's per-instruction difficulty is indexed on it
OFFICIAL_SIZE = 805
HUB_DATASET = "tatsu-lab/alpaca_eval"
#: AlpacaEval 2's reference outputs (GPT-4 Turbo) in the hub dataset
HUB_EVAL_FILE = "alpaca_eval_gpt4_baseline.json"

# alpaca_eval 0.6.6, evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt (Apache-2.0), verbatim.
# ChatML markers split it into chat messages, as alpaca_eval's prompt_to_chatml does.
CLF_TEMPLATE = '''<|im_start|>system
You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) based on the quality of their responses to a given instruction. This process will be used to create a leaderboard reflecting the most accurate and human-preferred answers.
<|im_end|>
<|im_start|>user
I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{
    "instruction": """{instruction}""",
}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{
    {
        "model_identifier": "m",
        "output": """{output_1}"""
    },
    {
        "model_identifier": "M",
        "output": """{output_2}"""
    }
}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier
<|im_end|>'''

_PLACEHOLDER = re.compile(r"\{(instruction|output_1|output_2)\}")


def render_chatml(template: str, fields: dict[str, str]) -> list[dict]:
    """Fill the placeholders in one pass (an output containing "{output_2}" stays text) and split into messages."""
    prompt = _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template).strip()
    messages = []
    for block in prompt.split("<|im_start|>")[1:]:
        role, _, rest = block.partition("\n")
        messages.append({"role": role.strip(), "content": rest.split("<|im_end|>", 1)[0].strip()})
    return messages


def _logprob_preference(response: JudgeResponse) -> float | None:
    """2 − P(m)/(P(m)+P(M)) from the first position's top log-probabilities; None if neither token is there."""
    if not response.top_logprobs:
        return None
    top = response.top_logprobs[0]
    if "m" not in top and "M" not in top:
        return None
    p_m = math.exp(top["m"]) if "m" in top else 0.0
    p_big_m = math.exp(top["M"]) if "M" in top else 0.0
    return 2.0 - p_m / (p_m + p_big_m)


def _text_preference(response: JudgeResponse) -> float | None:
    return {"m": 1.0, "M": 2.0}.get(response.text.strip())


@dataclass(frozen=True)
class PairwiseAnnotator:
    name: str
    template: str
    max_tokens: int
    temperature: float
    top_logprobs: int
    #: preference between the outputs *as shown* (1 = first shown better), or None when unparsable
    parse: Callable[[JudgeResponse], float | None]


ANNOTATORS: dict[str, PairwiseAnnotator] = {
    a.name: a
    for a in (
        # alpaca_eval's config samples at temperature 1; with one token and log-probabilities it makes no difference
        PairwiseAnnotator("weighted_alpaca_eval_gpt4_turbo", CLF_TEMPLATE, 1, 1.0, 5, _logprob_preference),
        PairwiseAnnotator("alpaca_eval_clf_text", CLF_TEMPLATE, 1, 0.0, 0, _text_preference),
    )
}


def get_annotator(name: str) -> PairwiseAnnotator:
    if name not in ANNOTATORS:
        raise ValueError(f"unknown AlpacaEval annotator {name!r}; known: {sorted(ANNOTATORS)}")
    return ANNOTATORS[name]


def is_switched(instruction: str, seed: int) -> bool:
    """Whether the model's output is shown first: a seeded coin per instruction."""
    return hashlib.sha256(f"{seed}\0{instruction}".encode()).digest()[0] % 2 == 1


def annotate_pairs(
    judge: Judge,
    cache: JudgmentCache,
    annotator: PairwiseAnnotator,
    items: Sequence[dict],
    seed: int = 0,
) -> tuple[list[dict], JudgeUsage]:
    """Judge each ``{"instruction", "output_1" (reference), "output_2" (model)}``; one annotation per item.

    An annotation adds ``preference`` (None when unparsable), ``is_switched``, the judge's raw text and
    first-position log-probabilities, and ``prompt_hash`` (None for identical outputs, never judged).
    """
    if annotator.top_logprobs and not judge.supports_logprobs:
        raise ValueError(f"annotator {annotator.name!r} needs log-probabilities, which judge {judge.id} cannot give")
    pending, requests_ = [], []
    annotations = []
    for i, item in enumerate(items):
        switched = is_switched(item["instruction"], seed)
        annotation = {**item, "is_switched": switched, "annotator": annotator.name}
        annotations.append(annotation)
        if item["output_1"] == item["output_2"]:
            annotation.update(preference=1.5, raw=None, top_logprobs=None, prompt_hash=None)
            continue
        shown = (item["output_2"], item["output_1"]) if switched else (item["output_1"], item["output_2"])
        messages = render_chatml(
            annotator.template, {"instruction": item["instruction"], "output_1": shown[0], "output_2": shown[1]}
        )
        pending.append(i)
        requests_.append(
            JudgeRequest(messages, annotator.max_tokens, annotator.temperature, annotator.top_logprobs)
        )
    judged = run_judge(judge, requests_, cache)
    for i, response, key in zip(pending, judged.responses, judged.keys):
        shown_preference = annotator.parse(response)
        preference = shown_preference
        if shown_preference is not None and annotations[i]["is_switched"]:
            preference = 3.0 - shown_preference
        annotations[i].update(
            preference=preference,
            raw=response.text,
            top_logprobs=response.top_logprobs[0] if response.top_logprobs else None,
            prompt_hash=key,
        )
    return annotations, judged.usage


def win_rate(
    preferences: Sequence[float | None], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Win rate (%) = mean(preference − 1) × 100 over parsable preferences, with a bootstrap CI and counts."""
    valid = [float(p) for p in preferences if p is not None]
    out = mean_with_ci([(p - 1.0) * 100.0 for p in valid], n_resamples=n_resamples, confidence=confidence, seed=seed)
    out.update(
        n_unparsable=len(preferences) - len(valid),
        n_wins=sum(p > 1.5 for p in valid),
        n_losses=sum(p < 1.5 for p in valid),
        n_draws=sum(p == 1.5 for p in valid),
    )
    return out


def length_controlled_win_rate(annotations: Sequence[dict], model_name: str, reference_name: str) -> dict:
    """alpaca_eval's own length-controlled win rate, or ``{"available": False, "reason"}`` when it cannot run.

    It needs the ``alpaca_eval`` package importable, the official 805-instruction set (the GLM's instruction
    difficulty is indexed by position in it) and its hub files; nothing here approximates it.
    """
    try:
        from alpaca_eval.metrics.glm_winrate import get_length_controlled_winrate
    except ImportError as exc:
        return {"available": False, "reason": f"alpaca_eval is not importable ({exc})"}
    if len(annotations) != OFFICIAL_SIZE:
        return {
            "available": False,
            "reason": f"needs the official {OFFICIAL_SIZE}-instruction eval set, got {len(annotations)} instructions",
        }
    import pandas as pd

    frame = pd.DataFrame(
        {
            "index": range(len(annotations)),
            "instruction": [a["instruction"] for a in annotations],
            "output_1": [a["output_1"] for a in annotations],
            "output_2": [a["output_2"] for a in annotations],
            "generator_1": reference_name,
            "generator_2": model_name,
            "annotator": [a["annotator"] for a in annotations],
            "preference": [float("nan") if a["preference"] is None else a["preference"] for a in annotations],
        }
    )
    try:
        metrics = get_length_controlled_winrate(frame, save_weights_dir=None, is_add_glm_preference_inplace=False)
    except Exception as exc:  # its hub downloads and GLM fit can fail in many ways; report, never substitute
        return {"available": False, "reason": f"alpaca_eval's length-controlled GLM failed ({type(exc).__name__}: {exc})"}
    return {
        "available": True,
        "value": float(metrics["length_controlled_winrate"]),
        "standard_error": float(metrics["lc_standard_error"]),
    }


def load_eval_set(path: str | Path) -> list[dict]:
    """A JSON list of ``{"instruction", "output", "generator", "dataset"}`` (reference outputs)."""
    items = json.loads(Path(path).read_text())
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of examples")
    for k, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("instruction"), str) or not isinstance(item.get("output"), str):
            raise DataError(f"{path}: item {k} needs string fields instruction and output")
    return items


def download_eval_set(out_path: str | Path, filename: str = HUB_EVAL_FILE) -> Path:
    """Copy AlpacaEval 2's eval set (805 instructions with GPT-4 Turbo reference outputs) from the hub."""
    from huggingface_hub import hf_hub_download

    from sftlab.io import write_text

    local = hf_hub_download(repo_id=HUB_DATASET, filename=filename, repo_type="dataset")
    items = load_eval_set(local)
    if len(items) != OFFICIAL_SIZE:
        raise DataError(f"{HUB_DATASET}/{filename}: expected {OFFICIAL_SIZE} items, got {len(items)}")
    write_text(out_path, Path(local).read_text())
    return Path(out_path)


def generate_model_outputs(
    generator: Generator,
    eval_set: Sequence[dict],
    generator_name: str,
    max_new_tokens: int = 2048,
    temperature: float = 0.0,
) -> list[dict]:
    """model_outputs records: ``{"instruction", "output", "generator", "dataset"}`` in eval-set order."""
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    generations = generator.generate(
        [GenerationRequest([{"role": "user", "content": item["instruction"]}], params) for item in eval_set]
    )
    return [
        {"instruction": item["instruction"], "output": g.text, "generator": generator_name, "dataset": item.get("dataset", "")}
        for item, g in zip(eval_set, generations)
    ]


def pair_with_reference(model_outputs: Sequence[dict], eval_set: Sequence[dict]) -> list[dict]:
    """Items for ``annotate_pairs``, matched by instruction (every eval-set instruction needs a model output)."""
    by_instruction = {o["instruction"]: o for o in model_outputs}
    missing = [item["instruction"][:60] for item in eval_set if item["instruction"] not in by_instruction]
    if missing:
        raise DataError(f"{len(missing)} eval-set instructions have no model output, e.g. {missing[0]!r}")
    return [
        {"instruction": item["instruction"], "output_1": item["output"], "output_2": by_instruction[item["instruction"]]["output"]}
        for item in eval_set
    ]


def score(
    annotations: Sequence[dict],
    model_name: str,
    reference_name: str,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    result = {"benchmark": "alpaca_eval", "metric": "win_rate"}
    result.update(win_rate([a["preference"] for a in annotations], n_resamples, confidence, seed))
    result["length_controlled"] = length_controlled_win_rate(annotations, model_name, reference_name)
    result["avg_output_chars"] = sum(len(a["output_2"]) for a in annotations) / max(len(annotations), 1)
    result.update(confidence=confidence, n_resamples=n_resamples, seed=seed)
    return result
