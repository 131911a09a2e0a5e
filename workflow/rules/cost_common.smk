"""Look-ups of the cost report (cost.smk). The jobs it reports come from Snakemake's own DAG, built in the job
(sftlab.report.dag); here only what the DAG cannot know: the papers each recipe draws on."""

# the papers a recipe draws on, in report order (a combined recipe draws on several; a plain one is the SFT baseline)
COST_PAPERS = ["SFT", "SFTMix", "MinorSFT", "LESS / ROSE", "Disperse-Then-Merge"]
COST_TABLES = {"pipeline": "reports/tables/cost", "papers": "reports/tables/cost_papers"}


def recipe_papers(name):
    """The papers whose method a recipe uses (its row in cost_papers); none of them: the SFT baseline."""
    recipe = CFG["recipes"][name]
    papers = {OBJECTIVES[recipe["objective"]["name"]].paper}
    if PLAN.uses_confidence(recipe):
        papers.add("SFTMix")
    if SELECTORS[recipe["selection"]["name"]].targeted:  # LESS, ROSE and the baselines of their tables
        papers.add("LESS / ROSE")
    if recipe["composition"]["name"] != "single":
        papers.add("Disperse-Then-Merge")
    return [p for p in COST_PAPERS if p in papers] or ["SFT"]


def cost_report_files():
    return [f"{stem}.{ext}" for stem in COST_TABLES.values() for ext in ("md", "csv", "tex")]


def reports_before_cost(wildcards):
    """Every other report of the run: the cost report runs last, after every job whose benchmark file it reads."""
    own = set(cost_report_files())
    return [path for path in PLAN.report_outputs() if path not in own]


def cost_recipe_papers(wildcards):
    """Recipe → the papers it draws on, for the recipes the experiments run."""
    return PLAN.as_json({r: recipe_papers(r) for r in sorted({r for (m, d, r) in PLAN.experiment_runs()})})
