"""The plan's shards, members and merges (workflow/rules/merge.smk), and the DTM report's runs. Member runs: see
sftlab.compose.members."""

from __future__ import annotations

import os
from functools import cached_property

from snakemake.io import report

from sftlab.cluster import Resumable
from sftlab.compose.members import (member_names, member_owner, member_shard, member_training, merge_group_sizes,
                                    member_pattern as members_pattern)
from sftlab.compose.merge import MERGE_METHODS
from sftlab.report.dtm import draws_k_figure, dtm_runs as composed_runs


class CompositionPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""

    #: the DTM report's tables and its K figure (stems)
    dtm_tables = ["reports/tables/dtm_main", "reports/tables/dtm_merge_methods"]
    dtm_figure = "reports/figures/dtm_k_ablation"

    @property
    def member_pattern(self):
        """The member runs' directories under runs/{recipe}/, as the compositions declare them."""
        return members_pattern()

    def composition_of(self, wildcards):
        return self.recipe_of(wildcards)["composition"]

    def shard_ids(self, wildcards):
        return f"{self.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/shards/ids"

    def disperse_embedder(self, wildcards):
        """k-means with the default embedder reads the base model; a random split or a named embedder does not."""
        comp = self.composition_of(wildcards)
        return [f"resources/models/{wildcards.model}"] if comp["split"] == "kmeans" and "embedder" not in comp else []

    def disperse_runs_model(self, wildcards):
        """k-means embeds the examples with a model; a random split runs none."""
        return self.composition_of(wildcards)["split"] == "kmeans"

    def merge_runs_model(self, wildcards):
        """Fisher merging backpropagates through each member; the other methods combine tensors."""
        return self.composition_of(wildcards)["merge"]["method"] == "fisher"

    # Parameter functions take the wildcards only: Snakemake records (and compares, for the params rerun trigger)
    # only parameters that do not depend on the input files.
    def disperse_args(self, wildcards):
        comp = self.composition_of(wildcards)
        args = ["--k", str(comp["k"]), "--method", comp["split"], "--seed", str(comp["seed"])]
        if comp["split"] == "kmeans":
            args += ["--embedder", comp["embedder"]] if "embedder" in comp else (
                ["--base-model", self.disperse_embedder(wildcards)[0]])
        return args

    def member_ids(self, wildcards):
        """What a member run trains on: the shards of the recipe's selection (DTM), or the whole selection (soup)."""
        shard = member_shard(self.composition_of(wildcards), wildcards.member)
        return self.shard_ids(wildcards) if shard else self.selection_path(wildcards)

    def member_ids_file(self, wildcards):
        shard = member_shard(self.composition_of(wildcards), wildcards.member)
        return f"{self.shard_ids(wildcards)}/{shard}.ids" if shard else self.selection_path(wildcards)

    def member_training_settings(self, wildcards):
        return self.as_json(member_training(self.recipe_of(wildcards), wildcards.member))

    @cached_property
    def member_run(self):
        """How a member run's job resumes from its checkpoints (res(..., resumes=))."""
        return Resumable(lambda wildcards: member_training(self.recipe_of(wildcards), wildcards.member),
                         self.recipe_objective_name)

    def member_checkpoints(self, wildcards):
        return f"{self.run_dir(wildcards.model, wildcards.dataset, wildcards.recipe)}/{wildcards.member}/checkpoints"

    def member_models(self, wildcards):
        return [f"{d}/model" for d in self.member_dirs(wildcards)]

    def member_logs(self, wildcards):
        return [f"{d}/train_log.csv" for d in self.member_dirs(wildcards)]

    def member_owner_dir(self, wildcards):
        """The directory of the recipe whose directory holds the member runs a composed recipe merges."""
        return self.run_dir(wildcards.model, wildcards.dataset, member_owner(self.cfg["recipes"], wildcards.recipe))

    def member_dirs(self, wildcards):
        """The member runs a composed recipe merges, in the directory of the recipe that owns them."""
        owner = self.member_owner_dir(wildcards)
        return [f"{owner}/{member}" for member in member_names(self.composition_of(wildcards))]

    def fisher_ids(self, wildcards):
        """Fisher merging: each member's own training ids (a DTM shard, or a seed-soup member's whole selection)."""
        comp, owner = self.composition_of(wildcards), self.member_owner_dir(wildcards)
        shards = [member_shard(comp, m) for m in member_names(comp)]
        return [f"{owner}/shards/ids/{s}.ids" if s else self.selection_path(wildcards) for s in shards]

    def fisher_inputs(self, wildcards):
        """What Fisher merging reads besides the models: the pool and the members' ids (their shard directory)."""
        if self.composition_of(wildcards)["merge"]["method"] != "fisher":
            return []
        ids = sorted({os.path.dirname(p) if "/shards/ids/" in p else p for p in self.fisher_ids(wildcards)})
        return [f"results/data/{wildcards.dataset}/train.jsonl", *ids]

    def merge_args(self, wildcards):
        """The merge inputs (adapter directories in adapter space) and the method's parameters, as arguments."""
        comp = self.composition_of(wildcards)
        merge = comp["merge"]
        leaf = "model/adapter" if merge["merge_space"] == "adapter" else "model"
        inputs = [f"{member}/{leaf}" for member in self.member_dirs(wildcards)]
        params = {k: merge[k] for k in MERGE_METHODS[merge["method"]].params if k in merge}
        args = ["--inputs", *inputs, "--method", merge["method"], "--merge-space", merge["merge_space"],
                "--seed", str(merge["seed"]), "--params", self.as_json(params)]
        groups = merge_group_sizes(comp)
        if groups:
            args += ["--groups", self.as_json(groups)]
        if merge["method"] == "fisher":
            args += ["--fisher-examples", self.fisher_inputs(wildcards)[0], "--fisher-ids", *self.fisher_ids(wildcards),
                     "--max-length", str(self.recipe_of(wildcards)["training"]["max_length"])]
        return args

    @cached_property
    def dtm_runs(self):
        """The DTM report's runs (sftlab.report.dtm.dtm_runs) among the experiments' runs."""
        return composed_runs(self.cfg["recipes"], self.experiment_runs())

    def dtm_benchmarks(self):
        """Benchmark name → the key of the paper's numbers (its lm-eval task where it has one), in report order."""
        runs = self.experiment_runs()
        used = {b for r in self.dtm_runs for b in runs[(r["model"], r["dataset"], r["recipe"])]}
        return {b: self.cfg["benchmarks"][b].get("task", b) for b in self.report_benchmarks() if b in used}

    def dtm_score_files(self):
        runs = self.experiment_runs()
        keys = [(r["model"], r["dataset"], r["recipe"]) for r in self.dtm_runs]
        return self.run_score_files({key: runs[key] for key in keys})

    def dtm_figure_outputs(self):
        """The DTM report's figure outputs: the K figure's, when the DTM runs have two values of K or more."""
        if not (self.dtm_runs and draws_k_figure(self.dtm_runs)):
            return {}
        return {"figure_png": report(f"{self.dtm_figure}.png", caption="../report/dtm_k_ablation.rst",
                                     category="Disperse-Then-Merge", subcategory="Figures"),
                "figure_pdf": f"{self.dtm_figure}.pdf"}

    def dtm_figure_args(self, wildcards):
        return ["--k-figure", self.dtm_figure] if self.dtm_figure_outputs() else []

    def dtm_report_files(self):
        """The DTM tables, and the K figure when it is drawn."""
        if not self.dtm_runs:
            return []
        figure = [f"{self.dtm_figure}.{ext}" for ext in ("png", "pdf")] if self.dtm_figure_outputs() else []
        return [f"{t}.{ext}" for t in self.dtm_tables for ext in ("md", "csv", "tex")] + figure
