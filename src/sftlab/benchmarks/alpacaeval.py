"""AlpacaEval 2: the model's outputs judged pairwise against the reference outputs (win rate, length-controlled).

Conventions are alpaca_eval's: in an annotation ``output_1`` is the reference (baseline) and ``output_2``
the model; ``preference`` is in [1, 2], 1 = reference better, 2 = model better, 1.5 = tie; the win rate
is mean(preference − 1) × 100, so a tie counts half. The two outputs are shown to the judge in a seeded
random order per instruction (undone before scoring) to cancel position bias, and identical outputs are
a tie without a judge call.

Annotators are registered by name and read from the installed ``alpaca_eval`` package (a pinned dependency):
its ``evaluators_configs/<name>/configs.yaml`` gives the prompt template file and the decoding, so the prompt
is the package's own text, never a copy here. ``weighted_alpaca_eval_gpt4_turbo`` is alpaca_eval's default
AlpacaEval 2 annotator: one output token and preference = 2 − P("m") / (P("m") + P("M")) from the top
log-probabilities. ``alpaca_eval_clf_text`` (ours) is the same prompt for judges without log-probabilities:
greedy, the answer text "m" or "M" gives 1 or 2. The ``preference`` benchmark type judges with the same annotators.

The length-controlled win rate is alpaca_eval's GLM (``alpaca_eval.metrics.glm_winrate``), see
``length_controlled_win_rate``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from sftlab.evaluation.cache import JudgmentCache
from sftlab.evaluation.generation import Generator, GenerationRequest, SamplingParams
from sftlab.evaluation.judges import Judge, JudgeRequest, JudgeResponse, JudgeUsage, run_judge
from sftlab.evaluation.stats import mean_with_ci
from sftlab.io import DataError

from .base import BenchmarkType, file_sha256, register_benchmark_type

log = logging.getLogger(__name__)

#: size of the official AlpacaEval set; the length-controlled GLM's per-instruction difficulty is indexed on it
OFFICIAL_SIZE = 805
HUB_DATASET = "tatsu-lab/alpaca_eval"
#: AlpacaEval 2's reference outputs (GPT-4 Turbo) in the hub dataset
HUB_EVAL_FILE = "alpaca_eval_gpt4_baseline.json"

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


def evaluators_config_dir() -> Path:
    """``alpaca_eval``'s directory of annotator configs, found without importing the package (which is slow)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the alpaca_eval package (a pinned dependency of sftlab) is not installed")
    return Path(spec.submodule_search_locations[0]) / "evaluators_configs"


def annotator_from_package(
    name: str, parse: Callable[[JudgeResponse], float | None], config: str | None = None, config_dir: Path | None = None,
    **decoding_overrides,
) -> PairwiseAnnotator:
    """Annotator ``name`` with the prompt and decoding of alpaca_eval's annotator config ``config`` (default: ``name``)."""
    config = config or name
    config_dir = config_dir or evaluators_config_dir()
    path = config_dir / config / "configs.yaml"
    entry = yaml.safe_load(path.read_text())[config]
    completions = entry["completions_kwargs"]
    decoding = {
        "max_tokens": int(completions["max_tokens"]),
        # alpaca_eval samples at temperature 1; with one token and log-probabilities it makes no difference
        "temperature": float(completions.get("temperature", 0.0)),
        "top_logprobs": int(completions.get("top_logprobs", 0)) if completions.get("logprobs") else 0,
    }
    decoding.update(decoding_overrides)
    template = (config_dir / entry["prompt_template"]).read_text()
    return PairwiseAnnotator(name, template, parse=parse, **decoding)


#: our annotator name → (alpaca_eval config it is read from, parser, decoding overrides)
ANNOTATOR_SOURCES: dict[str, tuple[str, Callable[[JudgeResponse], float | None], dict]] = {
    "weighted_alpaca_eval_gpt4_turbo": ("weighted_alpaca_eval_gpt4_turbo", _logprob_preference, {}),
    "alpaca_eval_clf_text": ("weighted_alpaca_eval_gpt4_turbo", _text_preference, {"temperature": 0.0, "top_logprobs": 0}),
}


def get_annotator(name: str) -> PairwiseAnnotator:
    if name not in ANNOTATOR_SOURCES:
        raise ValueError(f"unknown AlpacaEval annotator {name!r}; known: {sorted(ANNOTATOR_SOURCES)}")
    config, parse, overrides = ANNOTATOR_SOURCES[name]
    return annotator_from_package(name, parse, config=config, **overrides)


def annotator_version(name: str) -> str:
    """The annotator, the alpaca_eval release its prompt comes from and a hash of the prompt's text."""
    from importlib.metadata import version

    template = get_annotator(name).template
    return (f"alpaca_eval {version('alpaca_eval')} {name} "
            f"(template sha256:{hashlib.sha256(template.encode('utf-8')).hexdigest()[:12]})")


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


def win_items(annotations: Sequence[dict], key: str) -> dict[str, list[float]]:
    """Per annotated item (named by its ``key``): [its win (preference − 1) × 100, 1]; unparsable ones left out."""
    return {str(a[key]): [(a["preference"] - 1.0) * 100.0, 1.0] for a in annotations if a["preference"] is not None}


#: alpaca_eval's GLM on the official set: length, per-instruction difficulty and a pull towards its precomputed
#: length-gamed baselines, the last two indexed by position in the 805 instructions and read from the hub
OFFICIAL_GLM = "length_controlled_v1"
#: the same GLM without those two official-set terms, for any other eval set (the demo's, a fixture, a `limit`)
CUSTOM_GLM = "length_controlled_minimal"
#: hub file holding the official GLM's instruction difficulties and gamed-baseline annotations
GLM_HUB_FILE = "df_gamed.csv"


def _annotation_frame(annotations: Sequence[dict], model_name: str, reference_name: str):
    import pandas as pd

    return pd.DataFrame(
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


def _import_glm():
    with warnings.catch_warnings():
        # alpaca_eval 0.6.6 imports pkg_resources (hence the setuptools pin), which warns on import
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from alpaca_eval.metrics import glm_winrate
    return glm_winrate


def fetch_glm_data() -> Path:
    """The official GLM's hub file, downloaded into the Hugging Face cache where alpaca_eval looks for it."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=HUB_DATASET, filename=GLM_HUB_FILE, repo_type="dataset"))
    except Exception as exc:  # offline, gated, moved: many exception types, one meaning
        raise DataError(
            f"AlpacaEval 2's length-controlled win rate needs {HUB_DATASET}/{GLM_HUB_FILE} from the Hugging Face hub "
            f"(instruction difficulties and gamed baselines of alpaca_eval's GLM) and could not get it: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def _official_glm(frame, glm_winrate) -> dict:
    fetch_glm_data()
    metrics = glm_winrate.get_length_controlled_winrate(
        frame, glm_name=OFFICIAL_GLM, save_weights_dir=None, is_add_glm_preference_inplace=False
    )
    return {"value": float(metrics["length_controlled_winrate"]), "standard_error": float(metrics["lc_standard_error"])}


def _custom_glm(frame, glm_winrate) -> dict:
    """alpaca_eval's minimal GLM fitted with its own design matrix and cross-validated fit, on features built as
    ``glm_winrate._get_featurized_data`` builds them (which itself always downloads the official set's file).

    Two fits say nothing and are reported unavailable rather than as the 50 % they print: every preference on one
    side (liblinear then drops the empty class: a model that lost everything scores 50), and a fit whose L1
    cross-validation zeroed the win-rate term (on a few instructions it picks the strongest penalty, whatever the data).
    """
    import pandas as pd

    info = glm_winrate.GLM_INFO[CUSTOM_GLM]
    delta = frame["output_1"].str.len() - frame["output_2"].str.len()
    spread = delta.std()
    features = pd.DataFrame(
        {
            "preference": frame["preference"].astype(float).replace({0.0: 1.5}) - 1,
            # equal length differences everywhere (or one instruction): there is no length effect to control for
            "std_delta_len": delta / spread if spread > 0 else 0.0,
            "not_gamed_baseline": True,
        }
    )
    no_length_gap = features[["not_gamed_baseline"]].assign(std_delta_len=0.0)
    train, test = glm_winrate.make_dmatrix_for_model(features, no_length_gap, formula=info["formula"])
    train = train[train["preference"].notna()]
    if (train["preference"] <= 0).all() or (train["preference"] >= 1).all():
        side = "loss" if (train["preference"] <= 0).all() else "win"
        return {"available": False, "reason": f"every parsable preference is a {side}: the GLM has nothing to fit"}
    model = glm_winrate.fit_LogisticRegressionCV(train, "preference", is_ytrue_proba=True, **info["kwargs"])
    weights = dict(zip(test.columns, map(float, model.coef_[0])))
    if weights["not_gamed_baseline.astype(float)"] == 0.0:
        return {"available": False, "reason": f"alpaca_eval's cross-validated GLM zeroed its win-rate term on "
                                              f"{len(train)} instructions: too few for a length-controlled estimate"}
    return {"value": float(model.predict_proba(test)[:, 1].mean() * 100), "glm_weights": weights}


def length_controlled_win_rate(annotations: Sequence[dict], model_name: str, reference_name: str) -> dict:
    """The win rate had the model's outputs been as long as the reference's: alpaca_eval's logistic GLM of the
    preference on tanh(standardised length difference), predicted at zero difference.

    On the official 805-instruction set this is AlpacaEval 2's LC win rate exactly (``length_controlled_v1``, with
    ``standard_error`` as alpaca_eval reports it); on any other set the GLM drops the two terms only the official
    set has (``length_controlled_minimal``, with its fitted ``glm_weights``). ``{"available": False, "reason"}``
    when a small custom set cannot support the fit (too few parsable preferences for alpaca_eval's 5-fold
    cross-validation, or a degenerate fit, see ``_custom_glm``).
    """
    glm_winrate = _import_glm()
    glm = OFFICIAL_GLM if len(annotations) == OFFICIAL_SIZE else CUSTOM_GLM
    n_folds = glm_winrate.GLM_INFO[glm]["kwargs"]["n_splits"]
    n_parsable = sum(a["preference"] is not None for a in annotations)
    if n_parsable < n_folds:
        return {"available": False, "reason": f"alpaca_eval's GLM is fitted with {n_folds}-fold cross-validation: "
                                              f"needs {n_folds} instructions with a parsable preference, got {n_parsable}"}
    frame = _annotation_frame(annotations, model_name, reference_name)
    with warnings.catch_warnings():
        # scikit-learn's notices about its own 1.10 API, not about this fit
        warnings.simplefilter("ignore", FutureWarning)
        fitted = _official_glm(frame, glm_winrate) if glm == OFFICIAL_GLM else _custom_glm(frame, glm_winrate)
    if fitted.get("available") is False:
        return fitted
    return {"available": True, "glm": glm, **fitted}


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
    fetch_glm_data()  # now, while the hub is reachable: the judge job needs it for the length-controlled win rate
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
        if "data_dir" in bench:
            src = Path(bench["data_dir"]) / "eval_set.json"
            source = {"data_dir": str(src.parent), "sha256": file_sha256(src)}
        else:
            src = download_eval_set(out / "eval_set.json")
            source = {"hub_dataset": HUB_DATASET, "file": HUB_EVAL_FILE, "sha256": file_sha256(src)}
        items = load_eval_set(src)[: bench.get("limit")]
        if len({item["instruction"] for item in items}) != len(items):
            raise DataError(f"{src}: instructions must be unique (model outputs are matched by instruction)")
        (out / "eval_set.json").write_text(json.dumps(items, indent=2, ensure_ascii=False) + "\n")
        return {**source, "n": len(items)}

    def generate(self, generator, data_dir, model_id, max_new_tokens, temperature):
        eval_set = load_eval_set(Path(data_dir) / self.generation_input)
        return generate_model_outputs(generator, eval_set, model_id, max_new_tokens=max_new_tokens,
                                      temperature=temperature)

    def judge(self, judge, cache, data_dir, answers_path, settings, judge_config):
        eval_set = load_eval_set(Path(data_dir) / "eval_set.json")
        outputs = load_eval_set(answers_path)
        items = pair_with_reference(outputs, eval_set)
        judgments, usage = annotate_pairs(judge, cache, get_annotator(settings["annotator"]), items,
                                          seed=settings["seed"])
        scores = score(judgments,
                       model_name=outputs[0].get("generator", "model") if outputs else "model",
                       reference_name=eval_set[0].get("generator", "reference") if eval_set else "reference",
                       **settings["stats"])
        scores["annotator"] = settings["annotator"]
        return judgments, usage, scores

    def item_values(self, judgments):
        return win_items(judgments, "instruction")

    def judge_prompt_version(self, data_dir, settings):
        return annotator_version(settings["annotator"])
