"""The Disperse-Then-Merge report: the paper's comparison, the merge-method ablation and the K ablation.

Which runs it shows (``dtm_runs``): every composed run (DTM, seed soup) of the experiments and, as the SFT
baseline, every single run that is the same recipe as a composed run of its model and dataset (selection,
objective and training settings but the seed). Three views of their scores:

- ``dtm_main``: SFT, seed soup and DTM merged by plain averaging in delta space (the paper's method), one row
  each per model and dataset; the paper's reported rows below ours, with their source label.
- ``dtm_merge_methods``: every DTM run by K, split, merge method (with its λ where it scales), merge space and
  member initialisation (same LoRA initialisation for all members, or one each); the paper's merge-method MMLU
  numbers below ours.
- ``dtm_k_ablation`` (only when the DTM runs have two values of K or more; the merge-method table says when it is
  not drawn): score against K per benchmark, one line per (model, dataset, split, merge method, space),
  SFT and seed soup as horizontal lines.

Benchmark columns are ours (the config's benchmark names); a paper number goes into the column whose
benchmark has the paper's key as its name or lm-eval task, and paper benchmarks we did not run get columns
of their own, so the paper's numbers are always shown. Every cell of ours traces to one Scores file; a
missing one is ``n/a``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

from sftlab.report.papers import paper_columns, paper_numbers
from sftlab.report.tables import MISSING, fmt_cell

ROLES = ("sft", "seed_soup", "dtm")


def _baseline_key(recipe: Mapping) -> str:
    """What makes a single run the SFT baseline of a composed run: same selection, objective and training
    settings, the seed aside (a seed soup's members replace it) and the run length (a shard's member trains on a
    K-th of the pool, so DTM configs commonly set their own epochs or steps)."""
    training = {k: v for k, v in recipe["training"].items() if k not in ("seed", "max_steps", "epochs")}
    return json.dumps([recipe["selection"], recipe["objective"], training], sort_keys=True)


def merge_lambda(merge: Mapping) -> float | None:
    """The λ a merge scales its deltas by (its method's default where the config leaves it out); None if it has none."""
    from sftlab.compose.merge import MERGE_METHODS

    method = MERGE_METHODS[merge["method"]]
    return float(merge.get("lambda", method.defaults["lambda"])) if "lambda" in method.params else None


def method_label(merge: Mapping) -> str:
    """The merge method with its λ where it matters (always for task arithmetic, θ0 + λ·Σδ, else when not 1), and
    fisher with the Fisher it weighs by (the model's, normalised, or the empirical one)."""
    from sftlab.compose.merge import MERGE_METHODS

    if merge["method"] == "fisher":
        kind = merge.get("fisher_type", MERGE_METHODS["fisher"].defaults["fisher_type"])
        return "fisher (model Fisher, L2-normalised)" if kind == "model" else "fisher (empirical Fisher)"
    lam = merge_lambda(merge)
    shown = lam is not None and (merge["method"] == "task_arithmetic" or lam != 1.0)
    return merge["method"] + (f" (λ={lam:g})" if shown else "")


def _merge_label(merge: Mapping) -> str:
    return method_label(merge) + (", adapter space" if merge["merge_space"] == "adapter" else "")


def describe_run(model: str, dataset: str, name: str, recipe: Mapping) -> dict:
    """A run as the report sees it: its role, a readable label and the settings the tables show."""
    from sftlab.compose.members import composition_type, is_composed

    comp = recipe["composition"]
    kind = composition_type(comp["name"])
    row = {"model": model, "dataset": dataset, "recipe": name, "role": kind.role, "k": None, "split": None,
           "seeds": None, "method": None, "merge_space": None, "init": None}
    merged = is_composed(comp["name"])
    if merged:
        row.update(method=comp["merge"]["method"], merge_space=comp["merge"]["merge_space"],
                   method_label=method_label(comp["merge"]))
    return {**row, **kind.describe(recipe, _merge_label(comp["merge"]) if merged else "")}


def dtm_runs(recipes: Mapping[str, Mapping], runs: Iterable[tuple[str, str, str]]) -> list[dict]:
    """The runs of the DTM report, in experiment order; none when no experiment has a DTM recipe."""
    runs = list(runs)
    from sftlab.compose.members import COMPOSITIONS

    composition = {r: recipes[r]["composition"]["name"] for (_, _, r) in runs}
    if not any(COMPOSITIONS[c].role == "dtm" for c in composition.values()):
        return []
    composed = {(m, d, _baseline_key(recipes[r])) for (m, d, r) in runs if composition[r] != "single"}
    return [describe_run(m, d, r, recipes[r]) for (m, d, r) in runs
            if composition[r] != "single" or (m, d, _baseline_key(recipes[r])) in composed]


def _score_cell(index: Mapping, run: Mapping, bench: str) -> str:
    hit = index.get((run["model"], run["dataset"], run["recipe"], bench))
    return fmt_cell(hit.value, hit.ci_low, hit.ci_high) if hit is not None else MISSING


def _paper_cell(row: pd.Series, key: str) -> str:
    value = row.get(key)
    return MISSING if value is None or pd.isna(value) else f"{float(value):.2f}"


def _index(scores: pd.DataFrame) -> dict:
    return {(r.model, r.dataset, r.recipe, r.benchmark): r for r in scores.itertuples()}


def _paper_rows(paper: pd.DataFrame, table: str) -> pd.DataFrame:
    return paper[paper["table"] == table] if len(paper) else paper


def main_table(scores: pd.DataFrame, runs: Sequence[Mapping], benchmarks: Mapping[str, str],
               paper: pd.DataFrame) -> pd.DataFrame:
    """SFT, seed soup and DTM (average, delta space, shared initialisation) per model and dataset, then the paper's
    rows."""
    columns, keys = paper_columns(benchmarks, _paper_rows(paper, "main"))
    index = _index(scores)
    shown = [r for r in runs if r["role"] != "dtm"
             or (r["method"] == "average" and r["merge_space"] == "delta" and r["init"] == "same")]
    groups = list(dict.fromkeys((r["model"], r["dataset"]) for r in shown))
    rows = []
    for model, dataset in groups:
        group = [r for r in shown if (r["model"], r["dataset"]) == (model, dataset)]
        for run in sorted(group, key=lambda r: (ROLES.index(r["role"]), r["split"] or "", r["k"] or 0)):
            rows.append({"model": model, "dataset": dataset, "method": run["label"], "recipe": run["recipe"],
                         **{c: _score_cell(index, run, c) if c in benchmarks else MISSING for c in columns},
                         "source": "this work"})
    for _, row in _paper_rows(paper, "main").iterrows():
        rows.append({"model": row["model"], "dataset": row["dataset"], "method": row["method"], "recipe": MISSING,
                     **{c: _paper_cell(row, keys[c]) for c in columns}, "source": row["source"]})
    return pd.DataFrame(rows, columns=["model", "dataset", "method", "recipe", *columns, "source"])


def merge_method_table(scores: pd.DataFrame, runs: Sequence[Mapping], benchmarks: Mapping[str, str],
                       paper: pd.DataFrame) -> pd.DataFrame:
    """Every DTM run by K, split, merge method, merge space and member initialisation, then the paper's merge-method
    rows."""
    columns, keys = paper_columns(benchmarks, _paper_rows(paper, "merge_methods"))
    index = _index(scores)
    from sftlab.compose.merge import MERGE_METHODS

    dtm = [r for r in runs if r["role"] == "dtm"]
    order = {g: i for i, g in enumerate(dict.fromkeys((r["model"], r["dataset"]) for r in dtm))}
    method_order = list(MERGE_METHODS)  # every registered method, in the registry's order
    dtm.sort(key=lambda r: (order[(r["model"], r["dataset"])], r["split"], r["k"], method_order.index(r["method"]),
                            r["method_label"], r["merge_space"] != "delta", r["init"] != "same"))
    rows = [{"model": r["model"], "dataset": r["dataset"], "recipe": r["recipe"], "K": str(r["k"]),
             "split": r["split"], "merge method": r["method_label"], "merge space": r["merge_space"],
             "member init": r["init"],
             **{c: _score_cell(index, r, c) if c in benchmarks else MISSING for c in columns}, "source": "this work"}
            for r in dtm]
    for _, row in _paper_rows(paper, "merge_methods").iterrows():
        rows.append({"model": row["model"], "dataset": row["dataset"], "recipe": MISSING, "K": MISSING,
                     "split": MISSING, "merge method": row["method"], "merge space": MISSING, "member init": MISSING,
                     **{c: _paper_cell(row, keys[c]) for c in columns}, "source": row["source"]})
    return pd.DataFrame(rows, columns=["model", "dataset", "recipe", "K", "split", "merge method", "merge space",
                                       "member init", *columns, "source"])


def k_ablation_points(scores: pd.DataFrame, runs: Sequence[Mapping], benchmarks: Sequence[str]) -> pd.DataFrame:
    """The figure's data: one row per (series, benchmark, run) with a score. Series are DTM settings
    (``role`` dtm, ``k`` set) or baselines (``k`` missing, drawn as horizontal lines)."""
    index = _index(scores)
    rows = []
    for run in runs:
        if run["role"] == "dtm":
            series = (f"{run['model']}/{run['dataset']} DTM {run['split']}, {run['method_label']}"
                      + (", adapter space" if run["merge_space"] == "adapter" else "")
                      + (", different init" if run["init"] == "different" else ""))
        else:
            series = f"{run['model']}/{run['dataset']} {run['label']}: {run['recipe']}"
        for bench in benchmarks:
            hit = index.get((run["model"], run["dataset"], run["recipe"], bench))
            if hit is not None and not pd.isna(hit.value):
                rows.append({"series": series, "role": run["role"], "benchmark": bench, "k": run["k"],
                             "value": hit.value, "ci_low": hit.ci_low, "ci_high": hit.ci_high,
                             "recipe": run["recipe"]})
    points = pd.DataFrame(rows, columns=["series", "role", "benchmark", "k", "value", "ci_low", "ci_high", "recipe"])
    return points.sort_values(["benchmark", "series", "k"], na_position="first", kind="stable").reset_index(drop=True)


def k_values(runs: Sequence[Mapping]) -> list[int]:
    """The K ablation's axis: the distinct K of the DTM runs."""
    return sorted({int(r["k"]) for r in runs if r["role"] == "dtm"})


def draws_k_figure(runs: Sequence[Mapping]) -> bool:
    """Whether the K ablation is a figure: its axis has at least two values (one K is a point, not a curve)."""
    return len(k_values(runs)) >= 2


def k_figure_note(runs: Sequence[Mapping]) -> str:
    """The report's sentence in place of a K ablation figure that is not drawn ("" when it is drawn)."""
    if draws_k_figure(runs):
        return ""
    ks = k_values(runs)
    return (f" No K ablation figure: the DTM runs have one K ({ks[0]}); it is drawn when they have two or more."
            if ks else " No K ablation figure: no DTM run.")


def k_ablation_figure(points: pd.DataFrame, benchmarks: Sequence[str], stem: str | Path) -> list[Path]:
    """Score against K, one panel per benchmark (PNG and PDF); baselines as horizontal lines."""
    # matplotlib only when drawing: the workflow imports this module to plan (dtm_runs)
    import matplotlib.pyplot as plt

    from sftlab.report.figures import STYLE, save

    with plt.rc_context(STYLE):
        n = max(1, len(benchmarks))
        fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.0), squeeze=False)
        # one colour per DTM setting across the panels, whichever panels it has points in
        cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        settings = sorted(points.loc[points["role"] == "dtm", "series"].unique())
        colours = {s: cycle[i % len(cycle)] for i, s in enumerate(settings)}
        for ax, bench in zip(axes[0], benchmarks):
            here = points[points["benchmark"] == bench]
            dtm = here[here["role"] == "dtm"]
            for series, line in dtm.groupby("series", sort=True):
                low = (line["value"] - line["ci_low"]).clip(lower=0).fillna(0)
                high = (line["ci_high"] - line["value"]).clip(lower=0).fillna(0)
                ax.errorbar(line["k"], line["value"], yerr=[low, high], marker="o", ms=4, lw=1.2, capsize=2,
                            color=colours[series], label=series)
            for (series, role), base in here[here["role"] != "dtm"].groupby(["series", "role"], sort=True):
                ax.axhline(base["value"].iloc[0], ls="--" if role == "sft" else ":", lw=1.0, color="0.4"
                           if role == "sft" else "0.6", label=series)
            if here.empty:
                ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
            ks = sorted(dtm["k"].dropna().unique())
            if ks:
                ax.set_xticks(ks)
            ax.set(title=bench, xlabel="K (shards)", ylabel="score")
        legend = {}
        for ax in axes[0]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        if legend:
            fig.legend(legend.values(), legend.keys(), loc="upper center", bbox_to_anchor=(0.5, 0.0), frameon=False,
                       ncol=2)
        fig.suptitle("Disperse-Then-Merge: score against the number of shards K")
        fig.tight_layout()
        return save(fig, stem)


def build_report(scores: pd.DataFrame, runs: Sequence[Mapping], benchmarks: Mapping[str, str], main_stem: str | Path,
                 merge_stem: str | Path) -> list[Path]:
    """The DTM report's two tables (.md/.csv/.tex); the merge-method table says when there is no K figure."""
    from sftlab.report.tables import write_table

    paper = paper_numbers("dtm")
    out = write_table(main_table(scores, runs, benchmarks, paper), main_stem,
                      "Disperse-Then-Merge vs SFT and a seed soup (DTM merged by averaging in delta space): value "
                      "[95% CI]; the paper's reported numbers below ours with their source label; n/a = no result.")
    out += write_table(merge_method_table(scores, runs, benchmarks, paper), merge_stem,
                       "Disperse-Then-Merge by merge method (task arithmetic with its λ; fisher with its Fisher: "
                       "the model's own, answers drawn from the model and each member's Fisher divided by its L2 "
                       "norm as Matena & Raffel's code does, or the empirical one on the training answers), merge "
                       "space and member initialisation: value [95% CI]; the paper's merge-method MMLU numbers "
                       "below ours; n/a = no result." + k_figure_note(runs))
    return out


def build_k_figure(scores: pd.DataFrame, runs: Sequence[Mapping], benchmarks: Mapping[str, str],
                   stem: str | Path) -> list[Path]:
    """The K ablation figure (.png/.pdf); refused when its K axis has fewer than two values (``draws_k_figure``)."""
    if not draws_k_figure(runs):
        raise ValueError(f"the K ablation figure needs DTM runs with two values of K or more, got {k_values(runs)}")
    return k_ablation_figure(k_ablation_points(scores, runs, list(benchmarks)), list(benchmarks), stem)
