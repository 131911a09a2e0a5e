"""A rehearsal of a paper config: the same DAG at CPU size, offline (``--config rehearsal=true``).

``overlay(paper)`` returns the config a rehearsal plans, derived from the paper config itself at plan time (never a
hand-copied file), so the two cannot drift. Every recipe, rule, benchmark type, objective, selector, composition, merge
method, resource stage and profile setting stays; what changes is size and place:

- each hub model → a random tiny model (``source: random``) standing in for it, of its family (Llama-2, Mistral,
  Llama-3, Qwen2: a tokenizer like the real one's); its ``prompt_format`` stays;
- each hub dataset → the same entry (format, name, split and its slice, data_dirs, sources) with ``path`` a local
  directory in that hub repository's layout (tests/fixtures/hub/<repo>), a few dozen rows;
- each lm-eval task over a hub dataset → the same task, its ``dataset_path`` read from those directories
  (``dataset_paths``); MT-Bench, AlpacaEval, Arena-Hard and IFEval → their offline sets in the official formats;
- a judge calibration → the local published judgments of workflow/benchmarks/calibration_demo (their formats);
- each API judge → ``rehearsal.judge_url``, an OpenAI-compatible server on 127.0.0.1 (tests/_openai_stub.py) answering
  in each judge protocol's format; generation with vLLM → transformers (vLLM needs CUDA);
- training keeps finetuning and objective; FSDP / DeepSpeed → DDP (neither shards on CPU processes); bf16 / fp16 →
  auto (the trainer refuses half precision without a GPU; auto is bf16 on a GPU that has it);
  lengths, batches, epochs, LoRA rank, projection dimension, shards, held-out sets and item limits shrink;
- numeric grid axes (sweeps), training seeds and seed soups collapse to their first values (an axis of kinds, e.g.
  merge methods, stays whole), disperse-merge to 2 shards; so does
  each experiment's benchmark axis: every run is scored on the cheapest benchmark, every benchmark on the first recipe
  of each model × dataset (split_experiments);
- resources keep every stage and whether it asks for GPUs, at most 2 a job (a multi-GPU job
  stays multi-process, DDP on CPU), 1 CPU per GPU, memory and time that fit a small node.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from sftlab.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_JUDGE_URL = "http://127.0.0.1:8765/v1"

# repo_id patterns → family of the random stand-in (the first match wins: Llama-3 before any Llama)
FAMILIES = (
    (r"llama-?3", "llama3"),
    (r"llama-?2", "llama2"),
    (r"mistral", "mistral"),
    (r"qwen2", "qwen2"),
)
# the stand-in's shape: every model the same size, a few hundred thousand parameters
RANDOM_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128, "seed": 0}

# upper bounds of the sizes that shrink (a smaller value in the paper config stays)
MAX_LENGTH = 128
TRAINING_CAPS = {"max_length": MAX_LENGTH, "batch_size": 2, "gradient_accumulation": 2, "epochs": 1,
                 "eval_steps": 4, "save_steps": 50, "warmup_steps": 1, "logging_steps": 1}
LORA_RANK = 8
BENCHMARK_CAPS = {"batch_size": 4, "max_new_tokens": 8, "max_length": MAX_LENGTH, "n_resamples": 100,
                  "num_fewshot": 2, "limit": 2}
# benchmark types whose schema default of a size is larger than a stand-in model takes
SIZED_DEFAULTS = {"max_new_tokens": ("exact_match", "mtbench", "alpacaeval", "preference", "ifeval", "arena_hard"),
                  "max_length": ("nll", "implicit_reward")}
DATASET_CAPS = {"heldout": 4, "max_examples": 48}
WARMUP_MAX_LENGTH = 512
GRADIENT_CAPS = {"dim": 64, "shards": 2, "max_tokens": 2 * WARMUP_MAX_LENGTH}
REFERENCE_CHECKPOINTS = 2   # SFTMix's confidence and the ambiguous selector's variability need two
POOL_EXAMPLES = 64          # gradients.cost: the pool's size the grad_features jobs' runtime is predicted for
MAX_GPUS = 2
# a recipe's selected share of a pool of a few dozen rows: 5% is one or two examples, and SFTMix on a selection
# (all.yaml's rose_sftmix) needs examples of both confidence halves in it; half a pool holds both. A sweep's fractions
# keep their first value (its recipes' names carry it), and NTP trains on any number of examples
MIN_FRACTION = 0.5
RESOURCE_CAPS = {"cpus": 1, "mem_mb": 4000, "runtime": 30, "processes": MAX_GPUS}
# the offline sets of the judged benchmarks, in the official formats (their data_dir)
OFFLINE_SETS = {"mtbench": "mt_bench", "alpacaeval": "alpaca_eval", "arena_hard": "arena_hard", "ifeval": "ifeval"}
# a judge calibration's published judgments → local ones in the published formats, the same models' names
CALIBRATION_SETS = ROOT / "workflow" / "benchmarks" / "calibration_demo"
CALIBRATION_ITEMS = 2


# `--config rehearsal=true` reaches the config as the string 'true' (Snakemake's command-line parsing)
_TRUE, _FALSE = (True, "true", "True", "yes", "1"), (False, None, "false", "False", "no", "0")


def settings(value) -> dict:
    """The ``rehearsal`` config key as settings: ``true`` or a mapping (``judge_url``)."""
    if value in _TRUE:
        return {"judge_url": DEFAULT_JUDGE_URL}
    if isinstance(value, dict) and set(value) <= {"judge_url"}:
        return {"judge_url": DEFAULT_JUDGE_URL, **value}
    raise ConfigError(f"config key rehearsal: true, false or a mapping with judge_url, got {value!r}")


def requested(config: dict) -> bool:
    value = config.get("rehearsal", False)
    return isinstance(value, dict) or value not in _FALSE


def family(repo_id: str, where: str) -> str:
    for pattern, name in FAMILIES:
        if re.search(pattern, repo_id, flags=re.I):
            return name
    raise ConfigError(f"config key {where}.repo_id: a rehearsal has no random stand-in for {repo_id!r} "
                      f"(known families: {[f for _, f in FAMILIES]})")


def hub_fixtures(fixtures: Path = FIXTURES) -> dict[str, str]:
    """Hub repository id → its local stand-in directory (tests/fixtures/hub/<owner>/<name>)."""
    hub = Path(fixtures) / "hub"
    return {f"{owner.name}/{repo.name}": str(repo) for owner in sorted(hub.iterdir()) if owner.is_dir()
            for repo in sorted(owner.iterdir()) if repo.is_dir()}


def _cap(block: dict, caps: dict) -> None:
    for key, most in caps.items():
        if isinstance(block.get(key), (int, float)) and not isinstance(block[key], bool) and block[key] > most:
            block[key] = type(block[key])(most)


def shrink_training(block: dict) -> dict:
    """A training block at rehearsal size: finetuning, objective-relevant settings and precision stay."""
    out = copy.deepcopy(block)
    _cap(out, TRAINING_CAPS)
    if out.get("max_steps", -1) > 0:
        out["max_steps"] = min(out["max_steps"], 4)
    if out.get("precision") in ("bf16", "fp16"):
        out["precision"] = "auto"    # the trainer refuses half precision without a GPU; auto is bf16 on one
    if out.get("distributed") in ("fsdp", "deepspeed"):
        out["distributed"] = "ddp"   # neither shards a model over CPU processes
    lora = out.get("lora")
    if isinstance(lora, dict) and lora.get("r", 0) > LORA_RANK:
        scale = lora["r"] / LORA_RANK
        lora["r"] = LORA_RANK
        if "alpha" in lora:
            lora["alpha"] = lora["alpha"] / scale   # the same alpha / r, the same update scale
    return out


def _shrink_dotted(key: str, value):
    """A sweep grid's value at rehearsal size (its axis keeps its name)."""
    head, _, leaf = key.rpartition(".")
    if head == "training":
        return shrink_training({leaf: value})[leaf]
    if key == "composition.k":
        return min(value, 2)
    return value


def collapse_axis(key: str, values: list) -> list:
    """A sweep axis at rehearsal size: a numeric axis (learning rates, β, fractions, k) collapses to its first value;
    an axis of kinds (merge methods, selectors, splits: strings or blocks) stays whole, each kind is code to run."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return [_shrink_dotted(key, values[0])]
    return [_shrink_dotted(key, v) for v in values]


def _shrink_composition(composition: dict) -> None:
    if isinstance(composition.get("k"), int):
        composition["k"] = min(composition["k"], 2)
    if isinstance(composition.get("seeds"), list):
        composition["seeds"] = composition["seeds"][:2]   # a soup needs two
    merge = composition.get("merge")
    if isinstance(merge, dict) and isinstance(merge.get("fisher_samples"), int):
        merge["fisher_samples"] = min(merge["fisher_samples"], 4)


def random_model(name: str, model: dict) -> dict:
    """A hub model's random stand-in of its family (tokenizer like the real one's); non-hub models stay."""
    if model.get("source") != "hub":
        return copy.deepcopy(model)
    out = {"source": "random", "family": family(model["repo_id"], f"models.{name}"), **RANDOM_MODEL,
           "description": f"rehearsal stand-in for {model['repo_id']}"}
    if "prompt_format" in model:
        out["prompt_format"] = model["prompt_format"]
    return out


def hub_dataset(name: str, dataset: dict, fixtures: dict[str, str]) -> dict:
    out = copy.deepcopy(dataset)
    _cap(out, DATASET_CAPS)
    if out.get("source") == "hub":
        if out["path"] not in fixtures:
            raise ConfigError(f"config key datasets.{name}.path: no rehearsal fixture for hub dataset "
                              f"{out['path']!r} (add one under tests/fixtures/hub/{out['path']}, in that repository's "
                              f"layout)")
        out["path"] = fixtures[out["path"]]
        out.pop("revision", None)   # a local directory has no revisions
    return out


def shrink_benchmark(bench: dict, fixtures: dict[str, str], fixture_root: Path) -> dict:
    out = copy.deepcopy(bench)
    _cap(out, BENCHMARK_CAPS)
    out.setdefault("limit", BENCHMARK_CAPS["limit"])
    # the schema's defaults are paper-sized too (IFEval's 1,280 new tokens exceed the stand-in's 512 positions)
    for key, types in SIZED_DEFAULTS.items():
        if out.get("type") in types:
            out.setdefault(key, BENCHMARK_CAPS[key])
    if out.get("backend") == "vllm":
        out["backend"] = "transformers"   # vLLM needs CUDA; bench/ GPU smoke covers it
    kind = out.get("type")
    if kind in OFFLINE_SETS and "data_dir" not in out:
        out["data_dir"] = str(fixture_root / OFFLINE_SETS[kind])
        out.pop("revision", None)
        out.pop("fastchat_commit", None)
        out.pop("arena_hard_commit", None)
    if isinstance(out.get("calibration"), dict) and kind in OFFLINE_SETS:
        out["calibration"] = calibration_stand_in(out["calibration"], OFFLINE_SETS[kind])
    if kind == "lm_eval":
        # lm-eval's generate_until tasks bring their own lengths (BBH with chain of thought: 1,024 tokens, beyond
        # the stand-in's 512 positions)
        out["max_gen_toks"] = min(out.get("max_gen_toks", BENCHMARK_CAPS["max_new_tokens"]),
                                  BENCHMARK_CAPS["max_new_tokens"])
    if kind == "lm_eval" and "data_dir" not in out and "exam_from" not in out:
        # lm-eval's own task, its hub datasets read from the local stand-ins
        out["dataset_paths"] = dict(fixtures)
    return out


def calibration_stand_in(calibration: dict, offline_set: str, sets: Path = CALIBRATION_SETS) -> dict:
    """A judge calibration over the local sample of its published judgments (every model the sample has, a couple of
    items each) instead of the download; seed and the judging stay."""
    folder = Path(sets) / offline_set
    models = sorted(p.name for p in folder.iterdir() if p.is_dir()) if offline_set == "alpaca_eval" else sorted(
        {json.loads(line)["model"] for line in (folder / "gpt-4_single.jsonl").read_text().splitlines() if line})
    out = {k: v for k, v in calibration.items() if k not in ("sha256", "data_dir", "models")}
    out.update(data_dir=str(folder), models=models, items=min(calibration.get("items", CALIBRATION_ITEMS),
                                                              CALIBRATION_ITEMS))
    return out


# benchmark types by the cost of scoring one run (a scoring job, or a generation and a judging job)
CHEAPEST_FIRST = ("implicit_reward", "nll", "exact_match", "lm_eval", "ifeval", "preference", "alpacaeval", "mtbench",
                  "arena_hard")


def cheapest(benchmarks: list[str], types: dict[str, str]) -> str:
    """The benchmark of the cheapest type (the first of that type); unknown types last."""
    rank = {kind: i for i, kind in enumerate(CHEAPEST_FIRST)}
    return min(benchmarks, key=lambda b: (rank.get(types.get(b), len(rank)), benchmarks.index(b)))


def split_experiments(experiments: dict, types: dict[str, str]) -> dict:
    """Each experiment's benchmark axis collapsed as its grids are: every run scored on the experiment's cheapest
    benchmark (``types``: benchmark → type), and every benchmark on each model × dataset's first recipe
    (``<name>_benchmarks``), so that every run trains and is scored, every benchmark is scored on every model and
    dataset, and the scoring jobs stay few."""
    out = {}
    for name, exp in experiments.items():
        benchmarks, recipes = exp.get("benchmarks", []), exp.get("recipes", [])
        if len(benchmarks) <= 1 or len(recipes) <= 1:
            out[name] = copy.deepcopy(exp)
            continue
        out[name] = {**copy.deepcopy(exp), "benchmarks": [cheapest(benchmarks, types)]}
        extra = f"{name}_benchmarks"
        if extra in experiments:
            raise ConfigError(f"config key experiments.{extra}: the rehearsal names its split of experiment {name!r} so")
        out[extra] = {**copy.deepcopy(exp), "recipes": recipes[:1]}
    return out


def shrink_resources(resources: dict) -> dict:
    out = {}
    for stage, request in resources.items():
        request = copy.deepcopy(request)
        _cap(request, RESOURCE_CAPS)
        if request.get("gpus"):
            request["gpus"] = min(request["gpus"], MAX_GPUS)
        out[stage] = request
    return out


def _reference_epochs(cfg: dict) -> int | None:
    """The reference run's epochs as a raw config sets them (its own, else its last checkpoint's); None if unset."""
    ref = cfg.get("reference", {})
    epochs = (ref.get("training") or {}).get("epochs")
    checkpoints = ref.get("checkpoints")
    return epochs if epochs is not None else max(checkpoints) if isinstance(checkpoints, list) and checkpoints else None


def _keep_reference_epochs(paper: dict, cfg: dict) -> None:
    """A recipe trained for as many epochs as the paper's reference run trains as many as the rehearsal's, so that a
    recipe run that is the paper's reference run (sftlab.training.spec) is the rehearsal's too, as in its plan."""
    paper_epochs, epochs = _reference_epochs(paper), _reference_epochs(cfg)
    if paper_epochs is None or epochs is None:
        return
    default = paper.get("training", {}).get("epochs")
    for name, recipe in paper.get("recipes", {}).items():
        if (recipe.get("training") or {}).get("epochs", default) == paper_epochs:
            cfg["recipes"][name].setdefault("training", {})["epochs"] = epochs


def overlay(paper: dict, judge_url: str = DEFAULT_JUDGE_URL, fixture_root: Path = FIXTURES) -> dict:
    """The rehearsal of ``paper`` (a raw config, before validation); ``paper`` itself is left as it is."""
    fixtures = hub_fixtures(fixture_root)
    cfg = copy.deepcopy(paper)
    cfg["models"] = {n: random_model(n, m) for n, m in paper.get("models", {}).items()}
    cfg["datasets"] = {n: hub_dataset(n, d, fixtures) for n, d in paper.get("datasets", {}).items()}
    # the global block with every capped size set: the schema's defaults are paper-sized (batch 8, 512 tokens, ...)
    sizes = {key: TRAINING_CAPS[key] for key in ("max_length", "batch_size", "gradient_accumulation", "epochs",
                                                 "eval_steps", "save_steps")}
    cfg["training"] = shrink_training({**sizes, **cfg.get("training", {})})
    for section in ("reference", "warmup"):
        if isinstance(cfg.get(section, {}).get("training"), dict):
            cfg[section]["training"] = shrink_training(cfg[section]["training"])
    # the warmup's subset is a few examples: one a step, so that an epoch has steps past the learning-rate warmup
    # (LESS weighs each checkpoint by its epoch's mean lr; one step at lr 0 leaves nothing to weigh)
    training = cfg.setdefault("warmup", {}).setdefault("training", {})
    training.update(batch_size=1, gradient_accumulation=1, epochs=min(training.get("epochs", 4), 1))
    # its max_length is the validation items' too: LESS's MMLU prompts run past 128 tokens of a stand-in tokenizer
    # (all 285 items were skipped, leaving nothing to rank by); the stand-in's 512 positions hold them
    training["max_length"] = WARMUP_MAX_LENGTH
    if isinstance(cfg.get("reference", {}).get("checkpoints"), list):
        cfg["reference"]["checkpoints"] = cfg["reference"]["checkpoints"][:REFERENCE_CHECKPOINTS]
    for recipe in cfg.get("recipes", {}).values():
        if isinstance(recipe.get("training"), dict):
            recipe["training"] = shrink_training(recipe["training"])
        if isinstance(recipe.get("composition"), dict):
            _shrink_composition(recipe["composition"])
        selection = recipe.get("selection")
        if isinstance(selection, dict) and isinstance(selection.get("fraction"), (int, float)):
            selection["fraction"] = max(selection["fraction"], MIN_FRACTION)
    _keep_reference_epochs(paper, cfg)
    for sweep in cfg.get("sweeps", {}).values():
        sweep["grid"] = {key: collapse_axis(key, values) for key, values in sweep["grid"].items()}
    if cfg.get("seeds"):
        cfg["seeds"] = cfg["seeds"][:1]
    if "gradients" in cfg:
        _cap(cfg["gradients"], GRADIENT_CAPS)
        for pool in cfg["gradients"].get("cost", {}).get("pools", {}).values():
            _cap(pool, {"examples": POOL_EXAMPLES})
    cfg["benchmarks"] = {n: shrink_benchmark(b, fixtures, fixture_root) for n, b in paper.get("benchmarks", {}).items()}
    for judge in cfg.get("judges", {}).values():
        if judge.get("type") == "openai":
            judge["base_url"] = judge_url
            judge["max_retries"] = min(judge.get("max_retries", 6), 1)
    types = {name: bench.get("type") for name, bench in paper.get("benchmarks", {}).items()}
    cfg["experiments"] = split_experiments(paper.get("experiments", {}), types)
    if "resources" in cfg:
        cfg["resources"] = shrink_resources(cfg["resources"])
    cfg["rehearsal"] = {"judge_url": judge_url}
    return cfg


def apply(config: dict) -> dict:
    """``config`` as the workflow plans it: its rehearsal when ``rehearsal`` is set, else itself."""
    if not requested(config):
        # `--config rehearsal=false` arrives as a string: the schema takes a boolean
        return {**config, "rehearsal": False} if "rehearsal" in config else config
    return overlay(config, **settings(config["rehearsal"]))
