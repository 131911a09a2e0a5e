"""Predicted GPU-hours of a config, per cost phase and per rule, from the jobs Snakemake plans and per-unit costs.

Not a measurement: ``reports/tables/cost_papers.*`` (``sftlab.report.cost``) holds what a run really took. This
model prices each planned job from FLOP arithmetic (``gpu_cost.yaml`` states every assumption):

- training (``train``, ``train_member``, ``reference_run``, ``warmup``): ``k·N`` FLOPs a computed token, k = 6 for
  full fine-tuning (forward 2·N, backward 4·N) and 4 for LoRA (the frozen base's backward computes the activations'
  gradients only, 2·N; the adapters' own are negligible), at the MFU of the run's layout (``training_mfu``): a
  function of full vs LoRA and the tokens of a micro-batch (published measurements, interpolated in log tokens),
  gradient checkpointing (its recomputed forward, 2·N a token, is work MFU does not count: × k / (k + 2)) and the
  multi-GPU mode (``distributed``). Computed tokens are the run's examples × epochs × mean tokens, divided by the
  batch layout's real-token share measured by bench/batching.py. The held-out set is scored (2·N a token) before the
  first step and every ``eval_steps``;
- scoring (``ref_logprobs``, ``confidence``, lm-eval's log-likelihoods, the implicit reward): 2·N a token at
  ``gpu.mfu``;
- gradient features: ``sftlab.selection.gradient_cost`` (the LESS stage's own model) on this GPU;
- hidden-state features (RDS, RDS+): one forward pass, 2·N a token at ``gpu.mfu``, of the pool
  (``pool_hidden_states``, shared by every validation set) and of each selector's validation items (shots × subtasks,
  ``representation_scores``);
- generation: decoded tokens at the backend's assumed tokens/s of one GPU;
- log-likelihood scoring (``log_likelihood``, ``base_log_likelihood``): one forward pass of the benchmark's items, the
  pool's held-out examples at its mean length or an exam's ``benchmarks.nll.exam_tokens``;
- judging goes to an API (no GPU); every GPU job also pays ``startup_minutes`` on each of its GPUs (``STARTUP_ONLY``
  rules — disperse, merge, t-SNE — pay only that).

Every job that asks for a GPU is priced (one of a rule priced nowhere here is an error, never 0), under the cost phase
its rule tags on its ``benchmark:`` (``sftlab.report.dag.phase_benchmark``): the phases of the measured cost report,
read from the DAG's jobs, so no second list of rules is kept here.

``bench/gpu_smoke.py --calibrate FILE`` measures ``training_mfu`` on a GPU and writes it in this format.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Sequence

import yaml

from sftlab.compose.members import COMPOSITIONS
from sftlab.config import selector_id
from sftlab.evaluation.exams import run_exams
from sftlab.objectives import BASELINE_OBJECTIVE, OBJECTIVES
from sftlab.registry import lookup
from sftlab.report.dag import PHASES, DagJob
from sftlab.selection.gradient_cost import example_seconds
from sftlab.training.spec import RUN_TRAINING_RULES

ASSUMPTIONS = Path(__file__).with_name("gpu_cost.yaml")

#: GPU rules whose jobs the model prices at their startup alone (their work is small beside it)
STARTUP_ONLY = ("disperse", "merge", "tsne")


def load_assumptions(path: str | Path = ASSUMPTIONS) -> dict:
    return yaml.safe_load(Path(path).read_text())


def training_flops_per_token(params: float, finetuning: str) -> float:
    """Model FLOPs a computed training token: 6·N full fine-tuning, 4·N LoRA (frozen base)."""
    if finetuning not in ("full", "lora"):
        raise ValueError(f"finetuning must be 'full' or 'lora', got {finetuning!r}")
    return (6 if finetuning == "full" else 4) * params


def compute_seconds(flops: float, a: Mapping, mfu: float | None = None) -> float:
    """GPU-seconds of ``flops`` at ``mfu`` (default: the assumed ``gpu.mfu``) of the GPU's bf16 dense peak."""
    return flops / (a["gpu"]["bf16_dense_tflops"] * 1e12 * (a["gpu"]["mfu"] if mfu is None else mfu))


def interpolate_log(anchors: Mapping[float, float], x: float) -> float:
    """The value at ``x`` of the anchors {x: value}, linear in log x between the two around it, flat outside."""
    points = sorted((float(k), float(v)) for k, v in anchors.items())
    if not points:
        raise ValueError("no anchors to interpolate")
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * math.log(x / x0) / math.log(x1 / x0)
    return points[-1][1]


def training_mfu(table: Mapping, finetuning: str, micro_batch_tokens: float, gradient_checkpointing: bool = False,
                 distributed: str | None = None) -> float:
    """MFU of a training layout under ``gpu_cost.yaml``'s ``training_mfu`` table: the anchors of ``finetuning`` at
    ``micro_batch_tokens`` (computed tokens a micro-batch on one GPU), × k / (k + 2) with gradient checkpointing
    (k·N model FLOPs a token; the recomputed forward adds 2·N the GPU runs but MFU does not count), × the factor of
    the multi-GPU mode ``distributed`` (None: one GPU)."""
    if finetuning not in table:
        raise KeyError(f"gpu_cost.yaml training_mfu: no anchors for finetuning {finetuning!r}")
    mfu = interpolate_log(table[finetuning], micro_batch_tokens)
    if gradient_checkpointing:
        k = training_flops_per_token(1, finetuning)
        mfu *= k / (k + 2)
    if distributed is not None:
        factors = table.get("distributed", {})
        if distributed not in factors:
            raise KeyError(f"gpu_cost.yaml training_mfu.distributed: no factor for {distributed!r}")
        mfu *= factors[distributed]
    return mfu


class CostModel:
    """GPU-seconds of each planned job of ``config`` (the workflow's prepared config) under assumptions ``a``."""

    def __init__(self, config: Mapping, a: Mapping) -> None:
        self.config, self.a = config, a

    # -- look-ups, each naming what is missing --------------------------------------------------------------------
    def model(self, name: str) -> Mapping:
        repo = self.config["models"][name].get("repo_id", name)
        if repo not in self.a["models"]:
            raise KeyError(f"gpu_cost.yaml models: no entry for {repo!r} (model {name!r})")
        return self.a["models"][repo]

    def pool(self, dataset: str) -> Mapping:
        path = self.config["datasets"][dataset].get("path", dataset)
        if path not in self.a["pools"]:
            raise KeyError(f"gpu_cost.yaml pools: no entry for {path!r} (dataset {dataset!r})")
        return self.a["pools"][path]

    def benchmark(self, key: str) -> tuple[str, Mapping]:
        bench = self.config["benchmarks"][key]
        table = self.a["benchmarks"]
        if bench["type"] != "lm_eval":
            return bench["type"], table.get(bench["type"], {})
        tasks = table["lm_eval"]
        for name in (key, key.split("_")[0]):
            if name in tasks:
                return "lm_eval", tasks[name]
        raise KeyError(f"gpu_cost.yaml benchmarks.lm_eval: no entry for benchmark {key!r}")

    def test_pairs(self, key: str) -> int:
        """A preference benchmark's test pairs: its repository's, or the sum over the hub folders it loads."""
        name = self.config["benchmarks"][key]["dataset"]
        dataset = self.config["datasets"][name]
        pairs = self.a["benchmarks"]["test_sets"][dataset.get("path", name)]
        if not isinstance(pairs, Mapping):
            return pairs
        return sum(pairs[d] for d in dataset.get("data_dirs") or pairs)

    # -- training -------------------------------------------------------------------------------------------------
    def efficiency(self, training: Mapping, objective: str) -> float:
        eff = self.a["batch_efficiency"]
        if lookup(OBJECTIVES, "objective", objective).pairs_examples:  # its own sampler's pair batches
            return eff["pairs"]
        layout = training.get("batching", "auto")
        if layout == "auto":
            flash = str(training.get("attn_implementation", "sdpa")).startswith("flash_attention")
            layout = "packed" if flash else "length_grouped"
        return eff[layout]

    def micro_batch_tokens(self, dataset: str, training: Mapping, objective: str = BASELINE_OBJECTIVE) -> float:
        """Computed tokens of one GPU's micro-batch: ``batch_size`` examples of the pool's mean length over the
        layout's real-token share."""
        return training["batch_size"] * self.pool(dataset)["mean_tokens"] / self.efficiency(training, objective)

    def training_mfu(self, dataset: str, training: Mapping, gpus: int, objective: str = BASELINE_OBJECTIVE) -> float:
        """MFU of a run's layout: full vs LoRA, tokens a micro-batch, gradient checkpointing, multi-GPU mode."""
        return training_mfu(self.a["training_mfu"], training["finetuning"],
                            self.micro_batch_tokens(dataset, training, objective),
                            bool(training.get("gradient_checkpointing", False)),
                            training.get("distributed", "ddp") if gpus > 1 else None)

    def training_seconds(self, model: str, dataset: str, training: Mapping, examples: float, gpus: int,
                         objective: str = BASELINE_OBJECTIVE) -> float:
        """A run over ``examples`` examples for ``training['epochs']`` epochs on ``gpus`` GPUs (``examples`` × epochs
        computed tokens at the layout's real share and MFU, plus the held-out passes)."""
        n = self.model(model)["params"]
        pool = self.pool(dataset)
        tokens = examples * training["epochs"] * pool["mean_tokens"] / self.efficiency(training, objective)
        seconds = compute_seconds(tokens * training_flops_per_token(n, training["finetuning"]), self.a,
                                  self.training_mfu(dataset, training, gpus, objective))
        global_batch = training["batch_size"] * training.get("gradient_accumulation", 1) * max(1, gpus)
        steps = math.ceil(examples * training["epochs"] / global_batch)
        evals = 1 + steps // training["eval_steps"] if training.get("eval_steps") else 1
        heldout = self.config["datasets"][dataset].get("heldout", 0) or 0
        return seconds + compute_seconds(evals * heldout * pool["mean_tokens"] * 2 * n, self.a)

    def recipe_share(self, recipe: Mapping, member: str | None) -> float:
        """The share of the pool a run trains on: the selection's fraction, split K ways for a disperse member."""
        share = recipe.get("selection", {}).get("fraction", 1.0)
        composition = recipe.get("composition", {})
        if member is not None and composition.get("name") in COMPOSITIONS and COMPOSITIONS[composition["name"]].shards:
            share /= composition["k"]
        return share

    # -- one job --------------------------------------------------------------------------------------------------
    def job_seconds(self, rule: str, wildcards: Mapping[str, str], gpus: int) -> float:
        """GPU-seconds of one planned job (its work plus startup on each GPU); 0 for CPU and API jobs."""
        if gpus == 0:
            return 0.0
        return self.work_seconds(rule, wildcards, gpus) + 60 * self.a["startup_minutes"] * gpus

    def work_seconds(self, rule: str, w: Mapping[str, str], gpus: int) -> float:
        cfg = self.config
        if rule in (*RUN_TRAINING_RULES, "train_member"):
            recipe = cfg["recipes"][w["recipe"]]
            examples = self.pool(w["dataset"])["examples"] * self.recipe_share(recipe, w.get("member"))
            objective = recipe.get("objective", {}).get("name", BASELINE_OBJECTIVE)
            return self.training_seconds(w["model"], w["dataset"], recipe["training"], examples, gpus, objective)
        if rule == "reference_run":
            ref = cfg["reference"]
            training = {**cfg["training"], **ref.get("training", {}), "epochs": max(ref["checkpoints"])}
            return self.training_seconds(w["model"], w["dataset"], training, self.pool(w["dataset"])["examples"], gpus)
        if rule == "warmup":
            warmup = cfg["warmup"]
            examples = self.pool(w["dataset"])["examples"] * warmup["fraction"]
            return self.training_seconds(w["model"], w["dataset"], {**cfg["training"], **warmup["training"]},
                                         examples, gpus)
        if rule in ("ref_logprobs", "confidence"):
            pool = self.pool(w["dataset"])
            passes = len(cfg["reference"]["checkpoints"]) if rule == "confidence" else 1
            heldout = cfg["datasets"][w["dataset"]].get("heldout", 0) or 0
            tokens = passes * (pool["examples"] + heldout) * pool["mean_tokens"]
            return compute_seconds(2 * self.model(w["model"])["params"] * tokens, self.a)
        if rule in ("grad_features", "validation_grad_features"):
            return self.gradient_seconds(rule, w)
        if rule in ("pool_hidden_states", "representation_scores"):
            pool = self.pool(w["dataset"])
            sequences = pool["examples"] if rule == "pool_hidden_states" else self.validation_items(w["selector"])
            return compute_seconds(2 * self.model(w["model"])["params"] * sequences * pool["mean_tokens"], self.a)
        if rule == "generate":
            kind, bench = self.benchmark(w["benchmark"])
            prompts = self.test_pairs(w["benchmark"]) if kind == "preference" else bench["prompts"]
            backend = cfg["benchmarks"][w["benchmark"]].get("backend", "transformers")
            return prompts * bench["answer_tokens"] / self.a["decode_tokens_per_s"][backend]
        if rule == "evaluate":  # every exam of the run, the model loaded once
            return sum(self.exam_seconds(w["model"], b) for b in run_exams(cfg, w["model"], w["dataset"], w["recipe"]))
        if rule == "implicit_reward":
            bench = self.a["benchmarks"]["implicit_reward"]
            # policy and reference, chosen and rejected: 4 sequences a pair
            tokens = 4 * self.test_pairs(w["benchmark"]) * bench["sequence_tokens"]
            return compute_seconds(2 * self.model(w["model"])["params"] * tokens, self.a)
        if rule in ("log_likelihood", "base_log_likelihood"):  # one forward pass of the items
            tokens = self.item_tokens(w["dataset"], w["benchmark"])
            return compute_seconds(2 * self.model(w["model"])["params"] * tokens, self.a)
        if rule in STARTUP_ONLY:
            return 0.0
        raise KeyError(f"gpu_cost: no price for rule {rule!r}, which runs on a GPU; price its work in "
                       "CostModel.work_seconds (or add it to STARTUP_ONLY)")

    def item_tokens(self, dataset: str, benchmark: str) -> float:
        """Tokens of a log-likelihood benchmark's items: the pool's held-out examples at its mean length, or an
        exam's (``gpu_cost.yaml`` ``benchmarks.nll.exam_tokens``)."""
        if self.config["benchmarks"][benchmark]["items"] == "heldout":
            return (self.config["datasets"][dataset].get("heldout", 0) or 0) * self.pool(dataset)["mean_tokens"]
        return self.a["benchmarks"]["nll"]["exam_tokens"]

    def exam_seconds(self, model: str, benchmark: str) -> float:
        kind, bench = self.benchmark(benchmark)
        n = self.model(model)["params"]
        seconds = compute_seconds(2 * n * bench.get("forward_tokens", 0), self.a)
        # lm-eval's and our exact-match generation: transformers batches
        return seconds + bench.get("prompts", 0) * bench.get("answer_tokens", 0) / self.a["decode_tokens_per_s"][
            "transformers"]

    def gradient_seconds(self, rule: str, w: Mapping[str, str]) -> float:
        """``sftlab.selection.gradient_cost``'s per-example cost on this GPU: a shard of the pool, or the validation
        set (its shots × subtasks; a preference pair counts as two sequences)."""
        grads = self.config["gradients"]
        arch = self.model(w["model"])
        cost_models = grads.get("cost", {}).get("models", {})
        if w["model"] not in cost_models:
            raise KeyError(f"config key gradients.cost.models: no entry for {w['model']!r} (its LoRA parameters)")
        lora = cost_models[w["model"]]["lora_params"]
        pool = self.pool(w["dataset"])
        if rule == "grad_features":
            examples = pool["examples"] / grads["shards"]
        else:  # a preference pair (rose) counts as two sequences
            examples = 2 * self.validation_items(w["selector"])
        gpu = self.a["gpu"]
        per_example = example_seconds(pool["mean_tokens"], arch["params"], arch["layers"], arch["hidden_size"], lora,
                                      gpu["bf16_dense_tflops"], gpu["bandwidth_gbs"], gpu["mfu"],
                                      grads["projection"], grads["dim"])
        return examples * per_example


    def selection(self, selector: str) -> Mapping:
        """The selection of the config's recipes whose id (``sftlab.config.selector_id``) is ``selector``."""
        for recipe in self.config["recipes"].values():
            if "selection" in recipe and selector_id(recipe["selection"]) == selector:
                return recipe["selection"]
        raise KeyError(f"gpu_cost: no recipe's selection has the id {selector!r}")

    def validation_items(self, selector: str) -> int:
        """Items of a selection's validation set: its shots (the set's own where the selection gives none) × the set's
        subtasks (at least one)."""
        selection = self.selection(selector)
        validation = self.config["validation"][selection["validation"]]
        shots = selection.get("shots") or validation["shots"]
        return shots * max(1, len(validation.get("subtasks", [])))


def _hours(jobs: Sequence[DagJob], config: Mapping, a: Mapping, key) -> dict[str, float]:
    model = CostModel(config, a)
    hours: dict[str, float] = defaultdict(float)
    for job in jobs:
        if job.gpus:
            hours[key(job)] += model.job_seconds(job.rule, job.wildcards, job.gpus) / 3600
    return dict(hours)


def _phase(job: DagJob) -> str:
    if job.phase not in PHASES:
        raise ValueError(f"rule {job.rule} runs on a GPU but its benchmark file carries no cost phase: declare it "
                         f"with phase_benchmark(<one of {', '.join(PHASES)}>, ...)")
    return job.phase


def stage_hours(jobs: Sequence[DagJob], config: Mapping, a: Mapping) -> dict[str, float]:
    """GPU-hours of the planned ``jobs`` (``sftlab.report.dag``'s, with their GPUs and phases) per cost phase, in
    report order: every job that asks for a GPU, under the phase its rule declares."""
    hours = _hours(jobs, config, a, _phase)
    return {phase: hours[phase] for phase in PHASES if phase in hours}


def rule_hours(jobs: Sequence[DagJob], config: Mapping, a: Mapping) -> dict[str, float]:
    """GPU-hours of the planned ``jobs`` per rule, in the order the rules first appear (the DAG's rule order)."""
    return _hours(jobs, config, a, lambda job: job.rule)


def selection_hours(jobs: Sequence[DagJob], config: Mapping, a: Mapping) -> dict[tuple[str, str], dict[str, float]]:
    """GPU-hours per rule of the method preparation each (model, dataset) computes before any recipe trains (LESS /
    ROSE's warmup and gradient features, RDS's hidden states, SFTMix's reference run): the GPU jobs of phase
    "method preparation" without a recipe, by the model in their wildcards, so a selection with ``selection.model``
    (LESS-T) is priced beside one by each trained model."""
    by_pair: dict[tuple[str, str], list[DagJob]] = defaultdict(list)
    for job in jobs:
        if job.gpus and job.phase == "method preparation" and "recipe" not in job.wildcards:
            by_pair[(job.wildcards["model"], job.wildcards["dataset"])].append(job)
    return {pair: rule_hours(part, config, a) for pair, part in sorted(by_pair.items())}
