"""The plan's references, πref tables, warmup, gradients and influence, the selection baselines.

LESS / ROSE (rules in influence.smk): a warmup LoRA run on a random subset, gradient features of the pool per
checkpoint × shard and of a selector's validation set, an influence table per selector. The baselines of their tables
(baselines.smk) score the pool against the same validation sets: from its words (the lexical ones) or a model's hidden
states (the representation ones), as each selector class declares (``Selector.features``). The references
(reference.smk): log πref of the untrained model, SFTMix's reference run.
"""

from __future__ import annotations

import functools
import hashlib

from snakemake.exceptions import WorkflowError
from snakemake.io import report

from sftlab.cluster import Resumable
from sftlab.config import deep_merge, influence_selectors, selector_id, targeted_selectors
from sftlab.objectives import OBJECTIVES
from sftlab.report.selection import draws_fraction_curve
from sftlab.selection import SELECTORS
from sftlab.selection.gradient_cost import grad_features_runtime, model_memory_gb

#: the training settings a run's forward path depends on (sftlab.training.forward_path)
FORWARD_PATH_KEYS = ("finetuning", "lora", "precision", "distributed", "attn_implementation")


def selectors_with(**declared) -> tuple[str, ...]:
    """The registered selectors whose classes declare these values, e.g. ``features="lexical"``."""
    return tuple(name for name, cls in SELECTORS.items()
                 if all(getattr(cls, key) == value for key, value in declared.items()))


class SelectionPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""

    def selector_id_pattern(self, **declared) -> str:
        """The selection ids of the selectors declaring ``declared`` (a score rule's ``selector`` wildcard)."""
        return f"({self._alternation(selectors_with(**declared))})-[^/]+"

    def _targeted_selection(self, selector: str, names) -> dict:
        """The selection of one of the selectors ``names`` that a selector id names (any of its fractions: they share
        one score table)."""
        for recipe in self.cfg["recipes"].values():
            sel = recipe["selection"]
            if sel["name"] in names and selector_id(sel) == selector:
                return sel
        raise WorkflowError(f"no recipe selects with {selector}")

    # the warmup

    @functools.cached_property
    def warmup_epochs(self) -> list[int]:
        return list(range(1, self.cfg["warmup"]["training"]["epochs"] + 1))

    def warmup_training(self) -> dict:
        """The warmup run: the global training settings under the warmup's own (LESS defaults)."""
        return deep_merge(self.cfg["training"], self.cfg["warmup"]["training"])

    @functools.cached_property
    def warmup_run(self) -> Resumable:
        return Resumable(lambda wildcards: self.warmup_training())

    def warmup_ids(self, wildcards) -> str:
        return self.selection_ids(wildcards.model, wildcards.dataset, self.warmup_selection())

    def warmup_dir(self, wildcards) -> str:
        return f"results/{wildcards.model}/{wildcards.dataset}/warmup"

    def warmup_checkpoints(self, wildcards) -> list[str]:
        return [f"{self.warmup_dir(wildcards)}/checkpoint-{c}" for c in self.warmup_epochs]

    def warmup_trainer_checkpoints(self, wildcards) -> str:
        """The Trainer's own checkpoint-{step} directories, apart from the epoch checkpoints."""
        return f"{self.warmup_dir(wildcards)}/trainer-checkpoints"

    # the validation sets

    def validation_subtasks(self, wildcards) -> list[str]:
        return self.cfg["validation"][wildcards.name].get("subtasks", [])

    def validation_seed(self, wildcards) -> int:
        return self.cfg["validation"][wildcards.name]["seed"]

    def validation_path(self, name: str) -> str:
        return f"results/data/{self.cfg['validation'][name]['dataset']}/validation/{name}.jsonl"

    def validation_source(self, wildcards) -> str:
        vset = self.cfg["validation"][wildcards.name]
        if vset["dataset"] != wildcards.dataset:
            raise WorkflowError(f"validation set {wildcards.name} comes from dataset {vset['dataset']}, "
                                f"not {wildcards.dataset}")
        return f"results/data/{wildcards.dataset}/{vset['split']}.jsonl"

    # gradient features and influence

    @functools.cached_property
    def grad_shards(self) -> list[int]:
        return list(range(self.cfg["gradients"]["shards"]))

    def influence_selection(self, wildcards) -> dict:
        """The less / rose selection named by a selector id (any of its fractions: they share the influence table)."""
        return self._targeted_selection(wildcards.selector, influence_selectors())

    def influence_validation_file(self, wildcards) -> str:
        """The validation set whose gradients a less / rose selector compares with."""
        return self.validation_path(self.influence_selection(wildcards)["validation"])

    def gradient_flags(self) -> list[str]:
        """Command-line settings of every gradient-feature job (also its params: a change reruns the features)."""
        g = self.cfg["gradients"]
        return ["--projection", g["projection"], "--dim", str(g["dim"]), "--seed", str(g["seed"]),
                "--max-tokens", str(g["max_tokens"]), "--cache-mb", str(g["cache_mb"]), "--dtype", g["dtype"],
                "--max-length", str(self.warmup_training()["max_length"])]

    def grad_features_resources(self) -> dict:
        """res("grads"); with `gradients.cost`, each job's runtime from the cost model (per model and pool), and a
        batch of max_tokens checked against the GPU's memory before any job starts."""
        g = self.cfg["gradients"]
        cost = g.get("cost")
        if not cost:
            return self.res("grads", model=True)
        for model in cost["models"]:
            need = model_memory_gb(cost, model, g)
            if need > cost["gpu"]["memory_gb"]:
                raise WorkflowError(f"invalid configuration: config key gradients.max_tokens: a batch of "
                                    f"{g['max_tokens']} tokens of {model} needs about {need:.0f} GB, over "
                                    f"gradients.cost.gpu.memory_gb {cost['gpu']['memory_gb']}")
        return self.res("grads", model=True, runtime=self.grad_features_minutes)

    def grad_features_minutes(self, wildcards) -> int:
        gradients = self.cfg["gradients"]
        try:
            return grad_features_runtime(gradients["cost"], gradients, len(self.grad_shards), wildcards.model,
                                         wildcards.dataset)
        except KeyError as exc:
            raise WorkflowError(f"invalid configuration: {exc.args[0]}") from None

    def validation_flags(self, wildcards) -> list[str]:
        sel = self.influence_selection(wildcards)
        kind = SELECTORS[sel["name"]].validation_loss
        return ["--kind", kind, "--shots", str(sel["shots"])] + (["--beta", str(sel["beta"])] if kind == "dpo" else [])

    # the selection report

    def comparison_key(self, recipe: dict) -> str:
        """Recipes compared in the curve share everything but the selection (a short digest of the rest)."""
        rest = self.as_json({k: recipe[k] for k in ("objective", "composition", "training")})
        return hashlib.sha256(rest.encode()).hexdigest()[:8]

    def curve_runs(self) -> dict:
        """Experiment runs in the fraction curve: on a (model, dataset) with a targeted run (less, rose, bm25, dsir,
        rds, rds_plus), the targeted / random / full recipes that share that run's objective, composition and
        training (the curve compares selectors on equal terms)."""
        recipes, targeted = self.cfg["recipes"], targeted_selectors()
        runs = self.experiment_runs()
        keys = {(m, d, self.comparison_key(recipes[r])) for (m, d, r) in runs
                if recipes[r]["selection"]["name"] in targeted}
        return {(m, d, r): benches for (m, d, r), benches in runs.items()
                if recipes[r]["selection"]["name"] in (*targeted, "random", "full")
                and (m, d, self.comparison_key(recipes[r])) in keys}

    def curve_recipes(self) -> dict:
        """recipe → what the report needs to place it: selector id and name, fraction, shots, validation set, group,
        the model that selects (selection.model; None: the trained one)."""
        out = {}
        for (m, d, r) in self.curve_runs():
            recipe = self.cfg["recipes"][r]
            sel = recipe["selection"]
            out[r] = {"selector": selector_id(sel), "name": sel["name"], "fraction": sel["fraction"],
                      "shots": sel.get("shots"), "validation": sel.get("validation"),
                      "objective": recipe["objective"]["name"], "group": self.comparison_key(recipe),
                      "selection_model": sel.get("model")}
        return out

    def curve_score_files(self) -> list[str]:
        return self.run_score_files(self.curve_runs())

    def curve_runs_json(self, wildcards) -> str:
        return self.as_json(sorted(self.curve_runs()))

    @functools.cached_property
    def selection_report(self) -> dict[str, str]:
        """The selection report's output stems: the fraction curve only when its axis has two fractions or more (the
        main table says otherwise)."""
        curve = draws_fraction_curve(self.curve_recipes())
        return {**({"curve": "reports/figures/selection_fraction_curve"} if curve else {}),
                "shots": "reports/tables/selection_shots",
                "cost": "reports/tables/selection_cost",
                "main": "reports/tables/selection_main"}

    def selection_curve_outputs(self) -> dict:
        """The selection report's figure outputs: the fraction curve's, when it is drawn."""
        if "curve" not in self.selection_report:
            return {}
        stem = self.selection_report["curve"]
        return {"curve_png": report(f"{stem}.png", caption="../report/selection_fraction_curve.rst",
                                    category="LESS / ROSE", subcategory="Figures"),
                "curve_pdf": f"{stem}.pdf"}

    def less_paper_keys(self) -> dict[str, str]:
        """Benchmark name → the key of the LESS paper's numbers: its lm-eval task where it has one, else its name."""
        return {b: self.cfg["benchmarks"][b].get("task", b) for b in self.report_benchmarks()}

    def selection_report_outputs(self) -> list[str]:
        if not self.curve_runs():
            return []
        stems = self.selection_report
        curve = [f"{stems['curve']}.{ext}" for ext in ("png", "pdf")] if "curve" in stems else []
        return curve + [f"{stems[t]}.{ext}" for t in ("shots", "cost", "main") for ext in ("md", "csv", "tex")]

    # the references: log πref, SFTMix's reference run

    def _pair_runs(self, wildcards) -> list[dict]:
        """The recipes of the experiment runs on the wildcards' model × dataset."""
        return [self.cfg["recipes"][r] for (m, d, r) in self.experiment_runs()
                if (m, d) == (wildcards.model, wildcards.dataset)]

    def ref_logprobs_max_length(self, wildcards) -> int:
        """The truncation of log πref: that of the runs on this model × dataset, whose own log-probs it is compared
        with (MinorSFT / DPO-SFT weights, the deviation m_θ). One table per pair, so its runs must truncate alike."""
        lengths = {recipe["training"]["max_length"] for recipe in self._pair_runs(wildcards)}
        if len(lengths) > 1:
            raise WorkflowError(f"runs on {wildcards.model} × {wildcards.dataset} use training.max_length "
                                f"{sorted(lengths)}: their reference log-probs are one table, so use one max_length "
                                "per model and dataset")
        return lengths.pop() if lengths else self.cfg["training"]["max_length"]

    def ref_logprobs_training(self, wildcards) -> str:
        """The training settings (JSON) whose forward path log πref is scored through: those of the runs on this
        model × dataset whose loss compares their own log-probs with it (MinorSFT, DPO-SFT), so that r = 0 at step 0;
        else those of all its runs. One table per pair, so those runs must share the path: finetuning, precision,
        sharding."""
        runs = self._pair_runs(wildcards)
        users = [r for r in runs if OBJECTIVES[r["objective"]["name"]].needs_reference()] or runs
        sharded = self.processes_of("train") > 1
        paths = {(r["training"]["finetuning"], r["training"]["precision"], sharded and r["training"]["distributed"])
                 for r in users}
        if len(paths) > 1:
            raise WorkflowError(f"runs on {wildcards.model} × {wildcards.dataset} use training.finetuning / "
                                f"precision / distributed {sorted(map(str, paths))}: their reference log-probs are "
                                "one table, scored through their forward path, so use one of each per model and "
                                "dataset")
        training = users[0]["training"] if users else self.cfg["training"]
        # only what the path depends on: another learning rate is the same table
        keys = [k for k in FORWARD_PATH_KEYS if k in training and (k != "lora" or training["finetuning"] == "lora")]
        return self.as_json({k: training[k] for k in keys})

    def ref_logprobs_processes(self, wildcards) -> int:
        return self.processes_of("train")

    def reference_dir(self, wildcards) -> str:
        return f"results/{wildcards.model}/{wildcards.dataset}/reference"

    def reference_trainer_checkpoints(self, wildcards) -> str:
        return f"{self.reference_dir(wildcards)}/trainer-checkpoints"

    def reference_checkpoint_dirs(self, wildcards) -> list[str]:
        return self.reference_checkpoints(wildcards.model, wildcards.dataset)

    def reference_checkpoint_args(self, wildcards) -> list[str]:
        """train_reference's extra arguments: the run saves the reference checkpoints beside its model."""
        return ["--epoch-models", f"{self.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/reference",
                "--save-epochs", *map(str, self.REFERENCE_CHECKPOINTS)]

    def reference_run_alternation(self, position: int) -> str:
        """The models, datasets or recipes (``position`` 0, 1, 2) of the runs that are their pair's reference run."""
        return self._alternation({(m, d, r)[position] for (m, d), r in self.REFERENCE_RUNS.items()})

    def tsne_model_dirs(self, wildcards) -> list[str]:
        return list(self.tsne_models(wildcards).values())

    def tsne_model_args(self, wildcards) -> list[str]:
        return self.table_args("--model", self.tsne_models(wildcards))

    # the selection baselines (bm25, dsir: lexical; rds, rds_plus: representations)

    def baseline_selection(self, wildcards) -> dict:
        """The selection of a baseline (a selector scoring from its ``features``) named by a selector id (any of its
        fractions: one score table)."""
        baselines = [name for name, cls in SELECTORS.items() if cls.features]
        return self._targeted_selection(wildcards.selector, baselines)

    def baseline_validation_file(self, wildcards) -> str:
        return self.validation_path(self.baseline_selection(wildcards)["validation"])

    def pool_hidden_states_file(self, wildcards) -> str:
        """The pool's hidden states pooled as the selector pools them (rds: last token; rds_plus: weighted mean)."""
        pooling = SELECTORS[self.baseline_selection(wildcards)["name"]].pooling
        return f"results/{wildcards.model}/{wildcards.dataset}/hidden_states/{pooling}.pt"

    def baseline_flags(self, wildcards) -> list[str]:
        """The scoring method and its settings (also the rule's params: a change rescores)."""
        sel = self.baseline_selection(wildcards)
        return ["--method", sel["name"], "--shots", str(sel["shots"]), "--min-words", str(sel.get("min_words", 0))]

    def representation_flags(self) -> list[str]:
        """The forward pass takes the gradient features' truncation, token budget and dtype (LESS's RDS beside
        LESS)."""
        g = self.cfg["gradients"]
        return ["--max-length", str(self.warmup_training()["max_length"]), "--max-tokens", str(g["max_tokens"]),
                "--dtype", g["dtype"]]
