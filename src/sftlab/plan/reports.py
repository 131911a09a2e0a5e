"""The plan's mechanism tables (workflow/rules/mechanisms.smk), the methods' reports (methods_report.smk) and the cost
report (cost.smk).

A mechanism spec is plain data (files, runs, baselines) passed to scripts/mechanisms.py as a param, so a change of what
is compared reruns that report; an empty spec means the config has nothing to show for that paper and the report is
not built. The papers' names are the ones their objective, selector and composition classes declare (``paper``).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from snakemake.io import report

from sftlab.compose.members import COMPOSITIONS
from sftlab.config import selector_id
from sftlab.objectives import BASELINE_OBJECTIVE, OBJECTIVES, objective_label, paper_objectives, reference_objectives
from sftlab.selection import SELECTORS

#: shown in reports/report.html: the tables (CSV) and figures (PNG), each under its subcategory
SUBCATEGORY = {".csv": "Tables", ".png": "Figures"}


def shown(path, caption, category):
    """``path`` as an output: shown in report.html under ``category`` when it is a table or figure."""
    suffix = Path(path).suffix
    return report(path, caption=caption, category=category, subcategory=SUBCATEGORY[suffix]) if (
        suffix in SUBCATEGORY) else path


class ReportPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""

    # ------------------------------------------------------------------------------------------- mechanism tables
    @cached_property
    def mechanism_papers(self):
        """Mechanism table → its report category: the paper its method's classes declare (``nll``: the main one)."""
        return {"sftmix": OBJECTIVES["sftmix"].paper, "selection": SELECTORS["less"].paper,
                "minorsft": OBJECTIVES["minorsft"].paper, "dtm": COMPOSITIONS["disperse_merge"].paper, "nll": "Main"}

    def base_recipe(self, recipe):
        """(recipe without its seed suffix, seed or None)."""
        return tuple(self.cfg["_seeds"].get(recipe, (recipe, None)))

    def nll_benchmarks(self, items):
        bench = self.cfg["benchmarks"]
        return [b for b in self.report_benchmarks() if bench[b]["type"] == "nll" and bench[b]["items"] == items]

    def scored_runs(self, benchmark):
        """(model, dataset) → {base recipe: [(recipe, seed), ...]} of the experiment runs scored on ``benchmark``."""
        out = {}
        for (m, d, r), benches in self.experiment_runs().items():
            if benchmark in benches:
                base, seed = self.base_recipe(r)
                out.setdefault((m, d), {}).setdefault(base, []).append((r, seed))
        return out

    def answers_entries(self, m, d, benchmark, runs):
        """Answers files of the per-seed runs of these base recipes on a benchmark."""
        return [{"model": m, "dataset": d, "benchmark": benchmark, "recipe": base, "seed": seed,
                 "path": f"{self.run_dir(m, d, r)}/answers/{benchmark}.jsonl"}
                for base, seeded in sorted(runs.items()) for r, seed in seeded]

    def knows_quality(self, dataset):
        """Only the demo corpus records each example's true quality (source demo/{family}/{quality})."""
        return self.cfg["datasets"][dataset]["source"] == "demo"

    def sftmix_mechanism_spec(self):
        pairs = [(m, d) for (m, d) in self.confidence_pairs() if self.knows_quality(d)]
        return {"n_resamples": 2000, "seed": 0,
                "pairs": [{"model": m, "dataset": d, "confidence": f"results/{m}/{d}/confidence.parquet",
                           "train": f"results/data/{d}/train.jsonl"} for m, d in pairs]}

    def selection_mechanism_spec(self):
        pairs = {}
        for (m, d, r) in self.experiment_runs():
            sel = self.cfg["recipes"][r]["selection"]
            if sel["name"] == "full" or not self.knows_quality(d):
                continue
            entry = {"selector": selector_id(sel), "name": sel["name"], "fraction": float(sel["fraction"]),
                     "ids": self.recipe_selection_ids(m, d, self.cfg["recipes"][r]),
                     "validation": sel.get("validation")}
            pairs.setdefault((m, d), {})[entry["ids"]] = entry
        out = []
        for (m, d), selections in sorted(pairs.items()):
            names = sorted({s["validation"] for s in selections.values() if s["validation"]})
            out.append({"model": m, "dataset": d, "train": f"results/data/{d}/train.jsonl",
                        "selections": [selections[k] for k in sorted(selections)],
                        "validation": {n: f"results/data/{self.cfg['validation'][n]['dataset']}/validation/{n}.jsonl"
                                       for n in names}})
        return {"pairs": out}

    def _single_full(self, recipe):
        r = self.cfg["recipes"][recipe]
        return r["composition"]["name"] == "single" and r["selection"]["name"] == "full"

    def minorsft_mechanism_spec(self):
        """Per held-out nll benchmark and model × dataset: the full-data single runs of SFT, MinorSFT and DPO-SFT,
        grouped by learning rate; a group needs its SFT run (report.baseline where it qualifies, else the first NTP
        one)."""
        recipes, deviation = self.cfg["recipes"], reference_objectives()  # their loss compares the policy with πref
        groups, answers = [], []
        for b in self.nll_benchmarks("heldout"):
            for (m, d), runs in sorted(self.scored_runs(b).items()):
                by_lr = {}
                for base in sorted(runs):
                    r = recipes[base]
                    if self._single_full(base) and r["objective"]["name"] in (BASELINE_OBJECTIVE, *deviation):
                        by_lr.setdefault(r["training"]["learning_rate"], []).append(base)
                for lr, bases in sorted(by_lr.items()):
                    sft = [x for x in bases if recipes[x]["objective"]["name"] == BASELINE_OBJECTIVE]
                    if not sft or not any(recipes[x]["objective"]["name"] in deviation for x in bases):
                        continue
                    baseline = self.cfg["report"]["baseline"] if self.cfg["report"]["baseline"] in sft else sft[0]
                    chosen = [baseline] + [x for x in bases if x not in sft]
                    groups.append({"model": m, "dataset": d, "benchmark": b, "baseline": baseline,
                                   "runs": [{"recipe": x, "objective": recipes[x]["objective"]["name"],
                                             "learning_rate": lr, "seeds": len(runs[x])} for x in chosen]})
                    answers += self.answers_entries(m, d, b, {x: runs[x] for x in chosen})
        return {"groups": groups, "answers": answers}

    def dtm_mechanism_spec(self):
        """Per exam nll benchmark and model × dataset: each composed recipe beside the full-data single run with the
        same objective, both scored on the exam; the held-out nll benchmark both have, if any, beside it."""
        recipes, groups, answers = self.cfg["recipes"], [], []
        heldout = self.nll_benchmarks("heldout")
        for b in self.nll_benchmarks("exam"):
            for (m, d), runs in sorted(self.scored_runs(b).items()):
                pairs = []
                for base in sorted(runs):
                    r = recipes[base]
                    if r["composition"]["name"] == "single":
                        continue
                    match = [x for x in sorted(runs) if self._single_full(x)
                             and recipes[x]["objective"] == r["objective"]]
                    if match:
                        pairs.append({"recipe": base, "baseline": match[0], "composition": r["composition"]["name"],
                                      "seeds": len(runs[base])})
                if not pairs:
                    continue
                names = {x for p in pairs for x in (p["recipe"], p["baseline"])}
                held = next((h for h in heldout if names <= set(self.scored_runs(h).get((m, d), {}))), None)
                groups.append({"model": m, "dataset": d, "benchmark": b, "heldout_benchmark": held, "pairs": pairs})
                answers += self.answers_entries(m, d, b, {x: runs[x] for x in names})
                if held:
                    answers += self.answers_entries(m, d, held, {x: self.scored_runs(held)[(m, d)][x] for x in names})
        return {"groups": groups, "answers": answers}

    def nll_mechanism_spec(self):
        groups, answers = [], []
        for b in self.nll_benchmarks("heldout") + self.nll_benchmarks("exam"):
            for (m, d), runs in sorted(self.scored_runs(b).items()):
                groups.append({"model": m, "dataset": d, "benchmark": b, "baseline": self.cfg["report"]["baseline"],
                               "recipes": sorted(runs)})
                answers += self.answers_entries(m, d, b, runs)
        return {"groups": groups, "answers": answers}

    def mechanism_spec(self, paper):
        return getattr(self, f"{paper}_mechanism_spec")()

    def mechanism_built(self, paper):
        spec = self.mechanism_spec(paper)
        return bool(spec.get("pairs") or spec.get("groups"))

    def mechanism_inputs(self, paper):
        """Every file the paper's spec names."""
        spec = self.mechanism_spec(paper)
        files = [e["path"] for e in spec.get("answers", [])]
        for pair in spec.get("pairs", []):
            files += [pair["train"]] + ([pair["confidence"]] if "confidence" in pair else [])
            files += [s["ids"] for s in pair.get("selections", [])] + list(pair.get("validation", {}).values())
        return sorted(set(files))

    def mechanism_files(self, paper):
        return [f"reports/tables/mechanism_{paper}.{ext}" for ext in ("md", "csv", "tex")] + [
            f"reports/figures/mechanism_{paper}.{ext}" for ext in ("png", "pdf")]

    def mechanism_outputs(self, paper):
        """The files by name (table, table_csv, table_tex, figure, figure_pdf); the table (CSV) and figure (PNG) are
        shown in report.html under the paper's category."""
        names = ("table", "table_csv", "table_tex", "figure", "figure_pdf")
        return {name: shown(f, f"../report/mechanism_{paper}.rst", self.mechanism_papers[paper])
                for name, f in zip(names, self.mechanism_files(paper))}

    def mechanism_reports(self):
        """The mechanism tables and figures the config has something to show for (its paper reports)."""
        built = [paper for paper in self.mechanism_papers if self.mechanism_built(paper)]
        return [f for paper in built for f in self.mechanism_files(paper)]

    # ------------------------------------------------------------------------------------ the methods' reports
    #: paper-shaped reports of SFTMix and MinorSFT, by the objective that names the paper (its ``paper``)
    method_report_files = {
        "sftmix": [f"reports/tables/sftmix_{t}.{ext}" for t in ("main", "ablation") for ext in ("md", "csv", "tex")],
        "minorsft": [f"reports/tables/minorsft_accuracy.{ext}" for ext in ("md", "csv", "tex")]
        + [f"reports/figures/minorsft_{f}.{ext}" for f in ("grid", "deviation") for ext in ("png", "pdf")],
    }

    def method_report_outputs(self, paper):
        """The paper's files; its tables (CSV) and figures (PNG) shown in reports/report.html under the paper's
        category, each with its caption workflow/report/<file stem>.rst."""
        return [shown(f, f"../report/{Path(f).stem}.rst", OBJECTIVES[paper].paper)
                for f in self.method_report_files[paper]]

    def method_report_runs(self, paper):
        """Single-model runs of the model × dataset pairs where some recipe uses the paper's objective, with their
        settings (composed runs — merged shards, seed soups — belong to the DTM report, not to these papers'
        tables)."""
        recipes, objectives = self.cfg["recipes"], paper_objectives(OBJECTIVES[paper].paper)
        runs = [k for k in self.experiment_runs() if recipes[k[2]]["composition"]["name"] == "single"]
        pairs = {(m, d) for (m, d, r) in runs if recipes[r]["objective"]["name"] in objectives}
        return [{"model": m, "dataset": d, "recipe": r, "objective": recipes[r]["objective"],
                 "selection": recipes[r]["selection"], "learning_rate": recipes[r]["training"]["learning_rate"]}
                for (m, d, r) in runs if (m, d) in pairs]

    def method_report_inputs(self, paper):
        keys = {(r["model"], r["dataset"], r["recipe"]) for r in self.method_report_runs(paper)}
        scores = self.run_score_files({k: v for k, v in self.experiment_runs().items() if k in keys})
        logs = [f"{self.run_dir(m, d, r)}/train_log.csv" for (m, d, r) in sorted(keys)]
        return {"scores": scores, "logs": logs}

    def method_reports(self):
        """The methods' reports the config has runs for (its paper reports)."""
        return [f for paper, files in self.method_report_files.items() if self.method_report_runs(paper) for f in files]

    # ---------------------------------------------------------------------------------------------- cost report
    #: the cost report's tables (stems)
    cost_tables = {"pipeline": "reports/tables/cost", "papers": "reports/tables/cost_papers"}

    @cached_property
    def cost_papers(self):
        """The papers of the cost report, in its order: the SFT baseline, then those the objectives, selectors and
        compositions declare (a combined recipe draws on several)."""
        classes = [*OBJECTIVES.values(), *SELECTORS.values(), *COMPOSITIONS.values()]
        return [objective_label(BASELINE_OBJECTIVE), *dict.fromkeys(c.paper for c in classes if c.paper)]

    def recipe_papers(self, name):
        """The papers whose method a recipe uses (its row in cost_papers); none of them: the SFT baseline."""
        recipe = self.cfg["recipes"][name]
        papers = {OBJECTIVES[recipe["objective"]["name"]].paper, SELECTORS[recipe["selection"]["name"]].paper,
                  COMPOSITIONS[recipe["composition"]["name"]].paper}
        return [p for p in self.cost_papers if p in papers] or self.cost_papers[:1]

    def cost_report_files(self):
        return [f"{stem}.{ext}" for stem in self.cost_tables.values() for ext in ("md", "csv", "tex")]

    def reports_before_cost(self, wildcards):
        """Every other report of the run: the cost report runs last, after every job whose benchmark file it reads."""
        own = set(self.cost_report_files())
        return [path for path in self.report_outputs() if path not in own]

    def cost_recipe_papers(self, wildcards):
        """Recipe → the papers it draws on, for the recipes the experiments run."""
        return self.as_json({r: self.recipe_papers(r) for r in sorted({r for (m, d, r) in self.experiment_runs()})})
