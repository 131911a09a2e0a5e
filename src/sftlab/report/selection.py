"""LESS / ROSE report: score against selected fraction (full data as a line) and the shots ablation.

The fraction curve is drawn only when its selection runs have two fractions or more (``draws_fraction_curve``);
otherwise the main table says so.

Both read the Scores files (``tables.load_scores``) and a description of each recipe, as the workflow
passes it: ``{recipe: {"selector", "name", "fraction", "shots", "validation", "objective", "group",
"selection_model"}}``, where ``group`` is the same for recipes that differ in nothing but their selection (only those
are compared with each other) and ``selection_model`` is the model that selected (None: the trained one).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sftlab.config import targeted_selectors
from sftlab.report.dag import DagJob
from sftlab.selection import SELECTORS
from sftlab.training.spec import RUN_TRAINING_RULES
from sftlab.report.papers import paper_columns
from sftlab.report.tables import MISSING, fmt_cell, judge_mark

def targeted() -> tuple[str, ...]:
    """The selectors that score the pool against a validation set, as the LESS table orders its rows: the baselines
    (BM25, DSIR, RDS, RDS+), then the influence selectors (LESS, ROSE), each in registration order."""
    return tuple(sorted(targeted_selectors(), key=lambda name: SELECTORS[name].influence))


def method_order() -> tuple[str, ...]:
    """Rows of the main table within a model × dataset: full data, random, then the targeted selectors."""
    return ("full", "random", *targeted())


def selector_label(name: str) -> str:
    """How the papers name a selector (its class's ``label``), else its config name."""
    cls = SELECTORS.get(name)
    return cls.label if cls is not None and cls.label else name


DODGE = 0.025  # log10 units between neighbouring selectors' points at one fraction


def curve_frame(scores: pd.DataFrame, recipes: dict[str, dict]) -> pd.DataFrame:
    """Scores of the described recipes with their selection settings, one row per (run, benchmark); a selection made
    by another model than the run's (LESS-T) is a selector of its own (``less-mmlu-5shot (selected by llama2_7b)``),
    so that it never shares a line with the trained model's own selection."""
    info = pd.DataFrame([{"recipe": r, **d} for r, d in recipes.items()],
                        columns=["recipe", "selector", "name", "fraction", "shots", "validation", "objective", "group",
                                 "selection_model"])
    frame = scores.merge(info, on="recipe", how="inner")
    by = [selected_by(m, sm) for m, sm in zip(frame.model, frame.selection_model)]
    frame["selector"] = [sel if b is None else f"{sel} (selected by {b})" for sel, b in zip(frame.selector, by)]
    return frame


def curve_fractions(recipes: dict[str, dict]) -> list[float]:
    """The fraction curve's axis: the distinct fractions of its selection runs (full-data runs are lines on it)."""
    return sorted({float(d["fraction"]) for d in recipes.values() if d["name"] != "full"})


def draws_fraction_curve(recipes: dict[str, dict]) -> bool:
    """Whether the fraction curve is a figure: its axis has at least two fractions (one is a point, not a curve)."""
    return len(curve_fractions(recipes)) >= 2


def fraction_curve_note(recipes: dict[str, dict]) -> str:
    """The report's sentence in place of a fraction curve that is not drawn ("" when it is drawn)."""
    if draws_fraction_curve(recipes):
        return ""
    fractions = curve_fractions(recipes)
    return (f" No fraction curve: the selection runs have one fraction ({fractions[0]:g}); it is drawn when they "
            "have two or more." if fractions else " No fraction curve: no selection run.")


def _panels(frame: pd.DataFrame, benchmarks: list[str]) -> list[tuple[tuple, pd.DataFrame]]:
    keys = []
    for (model, dataset, group), part in frame.groupby(["model", "dataset", "group"], sort=True):
        for bench in benchmarks:
            sub = part[part.benchmark == bench]
            # a panel with the full-data line only (no selection run scored on it) shows nothing about selection
            if (sub.name != "full").any():
                keys.append(((model, dataset, group, bench), sub))
    return keys


def fraction_curve(frame: pd.DataFrame, benchmarks: list[str], stem: str | Path) -> list[Path]:
    """One panel per model × dataset × comparison group × benchmark with a selection run, in rows of three: a line per selector (value against
    fraction, log scale, 95% CI as error bars) and a dashed line per full-data recipe."""
    # matplotlib only when drawing: the workflow imports this module to plan (draws_fraction_curve)
    import matplotlib.pyplot as plt

    from sftlab.report.figures import STYLE, grid, save
    panels = _panels(frame, benchmarks)
    several_groups = frame["group"].nunique() > 1
    # one colour per selector across panels
    colours = {sel: f"C{i}" for i, sel in enumerate(sorted(frame.loc[frame.name != "full", "selector"].unique()))}
    with plt.rc_context(STYLE):
        fig, axes = grid(len(panels), ncols=3, size=(4.2, 3.2))
        if not panels:
            axes[0].text(0.5, 0.5, "no results (n/a)", ha="center", va="center", transform=axes[0].transAxes)
            axes[0].set_axis_off()
        for ax, ((model, dataset, _, bench), part) in zip(axes, panels):
            partial = part[part.name != "full"]
            selectors = sorted(partial.selector.unique())
            for selector, line in partial.groupby("selector", sort=True):
                line = line.sort_values("fraction")
                err = [line.value - line.ci_low.fillna(line.value), line.ci_high.fillna(line.value) - line.value]
                # selectors side by side around each fraction (a log-scale nudge), so equal values do not hide
                nudge = 10 ** (DODGE * (selectors.index(selector) - (len(selectors) - 1) / 2))
                ax.errorbar(line.fraction * nudge, line.value, yerr=err, marker="o", ms=3, lw=1.2, capsize=2, label=selector,
                            color=colours[selector])
            for row in part[part.name == "full"].itertuples():
                ax.axhline(row.value, ls="--", lw=1, color="0.3", label=f"full data ({row.recipe})")
            fractions = sorted(set(partial.fraction) | ({1.0} if (part.name == "full").any() else set()))
            if fractions:
                ax.set_xscale("log")
                ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
                margin = 10 ** (0.15 + DODGE * len(selectors) / 2)  # room for the nudged points at both ends
                ax.set_xlim(min(fractions) / margin, max(fractions) * margin)
                ax.minorticks_off()
            objective = f", {part.objective.iloc[0]}" if several_groups else ""
            ax.set(title=f"{model} / {dataset}{objective}", xlabel="fraction of the pool selected",
                   ylabel=f"{bench} ({part.metric.iloc[0]})")
            ax.legend(frameon=False, loc="best")
        fig.tight_layout()
        return save(fig, stem)


def shots_table(frame: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """A row per targeted selection (less, rose, bm25, ...: model, dataset, method, validation set, objective,
    fraction, benchmark), a column per number of shots; cells ``value [ci_low, ci_high]``, n/a where that run does
    not exist."""
    part = frame[frame.name.isin(targeted()) & frame.benchmark.isin(benchmarks)]
    shots = sorted({int(s) for s in part.shots.dropna()})
    columns = ["model", "dataset", "method", "validation", "objective", "fraction", "benchmark"]
    rows = {}
    for r in part.itertuples():
        method = r.name if selected_by(r.model, r.selection_model) is None else f"{r.name}-T"
        key = (r.model, r.dataset, method, r.validation, r.objective, r.fraction, r.benchmark)
        rows.setdefault(key, {})[int(r.shots)] = fmt_cell(r.value, r.ci_low, r.ci_high) + judge_mark(r)
    order = {b: i for i, b in enumerate(benchmarks)}
    out = [dict(zip(columns, key)) | {f"{k}-shot": cells.get(k, MISSING) for k in shots}
           for key, cells in sorted(rows.items(), key=lambda kv: (*kv[0][:6], order[kv[0][6]]))]
    return pd.DataFrame(out, columns=columns + [f"{k}-shot" for k in shots])


def method_label(name: str, fraction: float, selected_by: str | None = None) -> str:
    """How the LESS paper names a row: ``LESS 5%``, ``BM25 5%``, ``RDS+ 5%``, ``random 5%``, ``full data``; selected
    with another model than the trained one (``selected_by``): ``LESS-T 5% (selected by llama2_7b)``, the paper's
    LESS-T."""
    if name == "full":
        return "full data"
    label = selector_label(name)
    if selected_by:
        return f"{label}-T {100 * fraction:g}% (selected by {selected_by})"
    return f"{label} {100 * fraction:g}%"


def selected_by(model: str, selection_model) -> str | None:
    """The model that selected a run's data where it is not the trained one (LESS-T), else None."""
    return selection_model if isinstance(selection_model, str) and selection_model != model else None


def selection_main_table(frame: pd.DataFrame, benchmarks: dict[str, str], paper: pd.DataFrame) -> pd.DataFrame:
    """Shaped like the LESS paper's main table: a row per run of ours (full data, random, BM25, DSIR, RDS, RDS+,
    LESS, ROSE subsets) with
    its score per benchmark (``value [ci_low, ci_high]``, n/a where that run has none), then the paper's rows with
    their source label. ``benchmarks`` maps our benchmark names to the paper's keys (name or lm-eval task)."""
    columns, keys = paper_columns(benchmarks, paper)
    index = {(r.model, r.dataset, r.recipe, r.benchmark): r for r in frame.itertuples()}
    runs = frame.drop_duplicates(["model", "dataset", "recipe"])
    runs = runs.assign(order=runs.name.map(method_order().index),
                       transfer=[selected_by(r.model, r.selection_model) is not None for r in runs.itertuples()])
    runs = runs.sort_values(["model", "dataset", "group", "order", "transfer", "fraction", "recipe"])
    rows = []
    for run in runs.itertuples():
        row = {"model": run.model, "dataset": run.dataset,
               "method": method_label(run.name, run.fraction, selected_by(run.model, run.selection_model)),
               "recipe": run.recipe, "objective": run.objective, "source": "ours"}
        for column in columns:
            hit = index.get((run.model, run.dataset, run.recipe, column)) if column in benchmarks else None
            row[column] = fmt_cell(hit.value, hit.ci_low, hit.ci_high) + judge_mark(hit) if hit is not None else MISSING
        rows.append(row)
    for rec in paper.to_dict("records"):
        rows.append({"model": rec["model"], "dataset": rec["dataset"], "method": rec["method"], "recipe": "—",
                     "objective": "—", **{c: fmt_cell(rec.get(keys[c])) for c in columns}, "source": rec["source"]})
    return pd.DataFrame(rows, columns=["model", "dataset", "method", "recipe", "objective", *columns, "source"])


# ----------------------------------------------------------------------------- cost per stage

def selection_stages() -> dict[str, str]:
    """Rule → stage of the LESS paper's cost table: the rules each selector declares as preparing its ranking
    (``Selector.cost_stages``), the selection itself, and the runs' training."""
    stages = {rule: stage for cls in SELECTORS.values() for rule, stage in cls.cost_stages.items()}
    return {**stages, "select_data": "selection", **{rule: "final training" for rule in RUN_TRAINING_RULES}}


def _ancestors(jobs: list[DagJob], roots: list[int]) -> set[int]:
    seen, stack = set(roots), list(roots)
    while stack:
        for d in jobs[stack.pop()].dependencies:
            if d not in seen:
                seen.add(d)
                stack.append(d)
    return seen


def selection_cost_groups(jobs: list[DagJob], runs: list[tuple[str, str, str]]) -> list[dict]:
    """Cost groups (``cost.cost_table``'s input) of the jobs the fraction curve's runs ``(model, dataset, recipe)``
    depend on, per model × dataset: the warmup; the pool's gradient features; per targeted selector its validation
    gradient features (LESS / ROSE) or hidden-state features (RDS / RDS+) and its selection (scores and the
    curve's fractions); the training of
    each run (composed runs keep their own rows in the pipeline's cost table)."""
    made_by = {(j.wildcards.get("model"), j.wildcards.get("dataset"), j.wildcards.get("recipe")): i
               for i, j in enumerate(jobs) if j.rule in (*RUN_TRAINING_RULES, "merge")}
    used = [jobs[i] for i in sorted(_ancestors(jobs, [made_by[tuple(run)] for run in runs]))]
    stages = selection_stages()
    # the rules that prepare one selector's ranking (a selector id in their wildcards), not its fractions' ids
    preparing = {rule for cls in SELECTORS.values() for rule in cls.cost_stages}
    groups = []
    # the runs' models, and the models that selected for them (selection.model: LESS-T's selection jobs)
    selecting = {(j.wildcards.get("model"), j.wildcards.get("dataset")) for j in used if j.rule in stages
                 and j.rule not in RUN_TRAINING_RULES}
    for m, d in sorted({(m, d) for m, d, _ in runs} | selecting):
        here = [j for j in used if (j.wildcards.get("model"), j.wildcards.get("dataset")) == (m, d)
                and j.rule in stages]
        selectors = sorted({j.wildcards["selector"] for j in here if j.rule in preparing and "selector" in j.wildcards})

        def add(stage, item, part, m=m, d=d):
            if part:
                groups.append({"model": m, "dataset": d, "stage": stage, "item": item,
                               "benchmarks": [{"path": j.benchmark, "gpus": j.gpus} for j in part],
                               "outputs": [o for j in part for o in j.outputs]})

        add("warmup", "pool", [j for j in here if stages[j.rule] == "warmup"])
        for stage in ("gradient features", "hidden-state features"):
            add(stage, "pool", [j for j in here if stages[j.rule] == stage and "selector" not in j.wildcards])
        for s in selectors:
            mine = [j for j in here if j.wildcards.get("selector") == s]
            add("gradient features", s, [j for j in mine if stages[j.rule] == "gradient features"])
            add("hidden-state features", s, [j for j in mine if stages[j.rule] == "hidden-state features"])
            add("selection", s, [j for j in mine if stages[j.rule] == "selection"])
        for r in sorted(r for mm, dd, r in runs if (mm, dd) == (m, d)):
            add("final training", r, [j for j in here if j.rule in RUN_TRAINING_RULES
                                         and j.wildcards["recipe"] == r])
    return groups
