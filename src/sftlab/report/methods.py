"""Paper-shaped reports of SFTMix and MinorSFT, built from the Scores files and training logs under results/.

A *run* is one planned (model, dataset, recipe) with the recipe's settings, as the report rule passes them::

    {"model", "dataset", "recipe", "objective": {...}, "selection": {...}, "learning_rate": float}

Every cell traces to one ``scores/{benchmark}.json``; a missing result is ``n/a``, never 0 or blank.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from sftlab.benchmarks import BENCHMARK_TYPES
from sftlab.objectives import BASELINE_OBJECTIVE, OBJECTIVES, objective_label, paper_objectives
from sftlab.report.figures import STYLE, plt, save
from sftlab.report.tables import MISSING, fmt_cell, judge_mark, score_difference

#: objective → method label in the MinorSFT tables, in table order: SFT, then the paper's objectives (MinorSFT last)
MINORSFT_METHODS = {name: objective_label(name) for name in (BASELINE_OBJECTIVE, *paper_objectives("MinorSFT"))}
#: the SFTMix paper's own objective (its label is the paper's name), and its settings as the paper runs it: the
#: objective's defaults, but the seed of its λ draws (a run's randomness, not a setting of the method)
SFTMIX_OBJECTIVE = paper_objectives("SFTMix")[-1]
SFTMIX_DEFAULTS = {k: v for k, v in OBJECTIVES[SFTMIX_OBJECTIVE].parameters().items() if k != "seed"}


def _score_index(scores: pd.DataFrame) -> dict:
    return {(r.model, r.dataset, r.recipe, r.benchmark): r for r in scores.itertuples()}


def _cell(index: dict, run: dict, bench: str) -> str:
    hit = index.get((run["model"], run["dataset"], run["recipe"], bench))
    return fmt_cell(hit.value, hit.ci_low, hit.ci_high) + judge_mark(hit) if hit is not None else MISSING


def _value(index: dict, run: dict, bench: str) -> float:
    hit = index.get((run["model"], run["dataset"], run["recipe"], bench))
    return float(hit.value) if hit is not None and hit.value is not None else math.nan


# ---------------------------------------------------------------- MinorSFT: β × learning-rate grid


def minorsft_grid(runs: list[dict], scores: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """One row per full-pool run of SFT, DPO-SFT or MinorSFT: its method, β, learning rate and scores."""
    index = _score_index(scores)
    rows = []
    for run in runs:
        method = MINORSFT_METHODS.get(run["objective"]["name"])
        if method is None or run["selection"]["name"] != "full":
            continue
        row = {"model": run["model"], "dataset": run["dataset"], "recipe": run["recipe"], "method": method,
               "beta": run["objective"].get("beta", math.nan), "learning_rate": run["learning_rate"]}
        row.update({b: _value(index, run, b) for b in benchmarks})
        row.update({f"{b} cell": _cell(index, run, b) for b in benchmarks})
        rows.append(row)
    return pd.DataFrame(rows)


def best_settings(grid: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """Per model × method, the (β, learning rate) with the highest mean score over datasets and benchmarks.

    Scores missing anywhere do not count for the mean; a setting with no score at all is never chosen unless no
    setting has one (then the smallest learning rate stands, its cells n/a). Ties go to the smaller learning rate.
    """
    if grid.empty:
        return grid.assign(mean=[])
    frame = grid.assign(mean=grid[benchmarks].mean(axis=1, skipna=True))
    settings = (frame.groupby(["model", "method", "beta", "learning_rate"], dropna=False)["mean"]
                .mean().reset_index())
    settings["has_score"] = settings["mean"].notna()
    settings = settings.sort_values(["model", "method", "has_score", "mean", "learning_rate"],
                                    ascending=[True, True, False, False, True], na_position="last")
    return settings.groupby(["model", "method"], sort=False).head(1).reset_index(drop=True)


def minorsft_accuracy_table(grid: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """The paper's accuracy table: rows method × its best (β, lr); columns dataset / benchmark."""
    if grid.empty:
        return pd.DataFrame(columns=["model", "method", "beta", "learning_rate"])
    datasets = list(dict.fromkeys(grid["dataset"]))
    columns = [f"{d} / {b}" for d in datasets for b in benchmarks]
    rows = []
    order = {m: i for i, m in enumerate(MINORSFT_METHODS.values())}
    best = best_settings(grid, benchmarks)
    for setting in sorted(best.itertuples(), key=lambda s: (s.model, order[s.method])):
        same = grid[(grid["model"] == setting.model) & (grid["method"] == setting.method)
                    & (grid["learning_rate"] == setting.learning_rate)
                    & ((grid["beta"] == setting.beta) | (grid["beta"].isna() & pd.isna(setting.beta)))]
        row = {"model": setting.model, "method": setting.method,
               "beta": "—" if pd.isna(setting.beta) else f"{setting.beta:g}",
               "learning_rate": f"{setting.learning_rate:g}"}
        for column in columns:
            dataset, bench = column.split(" / ")
            hit = same[same["dataset"] == dataset]
            row[column] = hit.iloc[0][f"{bench} cell"] if len(hit) else MISSING
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "method", "beta", "learning_rate", *columns])


def minorsft_heatmap(grid: pd.DataFrame, benchmark: str, stem: str | Path) -> list[Path]:
    """The whole grid: one panel per dataset (rows) × method (columns), β down, learning rate across."""
    panels_r = list(dict.fromkeys(zip(grid["model"], grid["dataset"]))) or [("", "")]
    methods = [m for m in MINORSFT_METHODS.values() if m in set(grid.get("method", []))] or ["SFT"]
    with plt.rc_context({**STYLE, "axes.grid": False}):
        fig, axes = plt.subplots(len(panels_r), len(methods), figsize=(3.2 * len(methods), 2.4 * len(panels_r)),
                                 squeeze=False)
        finite = grid[benchmark].dropna() if benchmark in grid else pd.Series(dtype=float)
        vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
        image = None
        for i, (model, dataset) in enumerate(panels_r):
            for j, method in enumerate(methods):
                ax = axes[i][j]
                part = grid[(grid["model"] == model) & (grid["dataset"] == dataset) & (grid["method"] == method)]
                betas = sorted(part["beta"].dropna().unique()) or [math.nan]
                lrs = sorted(part["learning_rate"].unique())
                values = np.full((len(betas), len(lrs)), np.nan)
                for r in part.itertuples():
                    bi = 0 if pd.isna(r.beta) else betas.index(r.beta)
                    values[bi, lrs.index(r.learning_rate)] = getattr(r, benchmark) if benchmark in part else np.nan
                image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
                ax.set_facecolor("0.85")
                for (bi, li), v in np.ndenumerate(values):
                    ax.text(li, bi, MISSING if np.isnan(v) else f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="black" if np.isnan(v) else "white")
                ax.set_xticks(range(len(lrs)), [f"{lr:g}" for lr in lrs], rotation=30)
                ax.set_yticks(range(len(betas)), ["—" if pd.isna(b) else f"{b:g}" for b in betas])
                ax.set(title=f"{method} — {model}/{dataset}", xlabel="learning rate", ylabel="β")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.8, label=benchmark)
        return save(fig, stem)


def deviation_curves(logs: dict[tuple[str, str, str], pd.DataFrame], labels: dict[tuple[str, str, str], str],
                     stem: str | Path) -> list[Path]:
    """m_θ (mean per-token log-ratio to the reference on the held-out set) against step, one panel per model ×
    dataset, one line per run given in ``labels``."""
    panels = list(dict.fromkeys((m, d) for (m, d, _r) in labels)) or [("", "")]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
        for ax, (model, dataset) in zip(axes[0], panels):
            for key, label in labels.items():
                if key[:2] != (model, dataset) or key not in logs or "deviation" not in logs[key]:
                    continue
                frame = logs[key].dropna(subset=["deviation"])
                ax.plot(frame["step"], frame["deviation"], marker="o", ms=3, lw=1.2, label=label)
            ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
            ax.set(title=f"{model}/{dataset}", xlabel="step", ylabel="m_θ = mean r(x,y)/|y| (held-out)")
            ax.legend(frameon=False)
        fig.tight_layout()
        return save(fig, stem)


# ---------------------------------------------------------------- SFTMix: main table and ablations


def _sftmix_settings(run: dict) -> dict:
    obj, sel = run["objective"], run["selection"]
    settings = {"selection": sel["name"] + (f" {sel['fraction']:g}" if sel.get("fraction", 1.0) != 1.0 else "")}
    if obj["name"] == SFTMIX_OBJECTIVE:
        settings.update({k: obj.get(k, SFTMIX_DEFAULTS[k]) for k in SFTMIX_DEFAULTS})
    return settings


def sftmix_method(run: dict) -> str | None:
    """``NTP`` (full pool), ``SFTMix`` (full pool, the paper's settings), or None for other runs (ablations)."""
    obj, sel = run["objective"], run["selection"]
    if sel["name"] != "full":
        return None
    if obj["name"] == BASELINE_OBJECTIVE:
        return "NTP"  # the SFTMix paper's name for the baseline
    if obj["name"] == SFTMIX_OBJECTIVE and all(obj.get(k, v) == v for k, v in SFTMIX_DEFAULTS.items()):
        return objective_label(SFTMIX_OBJECTIVE)
    return None


def sftmix_main_table(runs: list[dict], scores: pd.DataFrame, benchmarks: list[str], types: dict[str, str],
                      paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows model × dataset × {NTP, SFTMix} (ours, then the paper's with their source label); columns benchmarks.
    Then per model × dataset the difference SFTMix − NTP (method ``Δ SFTMix − NTP``), ours and the paper's: the
    papers' numbers came from other judges, so their differences, not their absolute numbers, are what ours compare
    with. Ours is computed under one judge only (a pair scored by different judges reads ``n/a (judges differ)``).

    A paper number sits in the column of our benchmark of the type that declares its key (``paper_key``: MT-Bench,
    AlpacaEval 2 win rate); a length-controlled number (``paper_lc_key``) gets its own ``<benchmark> LC`` column.
    """
    index = _score_index(scores)
    kinds = {b: BENCHMARK_TYPES.get(types.get(b)) for b in benchmarks}
    lc_benches = [b for b in benchmarks if kinds[b] is not None and kinds[b].paper_lc_key]
    # the paper's columns that none of our benchmarks matches still show its numbers (ours: n/a)
    taken = {key for kind in kinds.values() if kind is not None for key in (kind.paper_key, kind.paper_lc_key)}
    unmatched = [] if paper is None else list(dict.fromkeys(
        key for attr in ("paper_key", "paper_lc_key") for kind in BENCHMARK_TYPES.values()
        if (key := getattr(kind, attr)) and key in paper and key not in taken))
    columns = ["model", "dataset", "method", "recipe", *benchmarks, *(f"{b} LC" for b in lc_benches), *unmatched,
               "source"]
    rows = []
    for run in runs:
        method = sftmix_method(run)
        if method is None:
            continue
        row = {"model": run["model"], "dataset": run["dataset"], "method": method, "recipe": run["recipe"],
               "source": "ours"}
        row.update({b: _cell(index, run, b) for b in benchmarks})
        row.update({c: MISSING for c in unmatched})
        for b in lc_benches:
            hit = index.get((run["model"], run["dataset"], run["recipe"], b))
            lc = getattr(hit, "lc_value", None) if hit is not None else None
            row[f"{b} LC"] = fmt_cell(lc)
        rows.append(row)
    if paper is not None:
        for rec in paper.to_dict("records"):
            row = {"model": rec["model"], "dataset": rec["dataset"], "method": rec["method"], "recipe": "—",
                   "source": rec["source"]}
            for b in benchmarks:
                column = kinds[b].paper_key if kinds[b] is not None else None
                row[b] = fmt_cell(rec[column]) if column in rec else MISSING
            for b in lc_benches:
                row[f"{b} LC"] = fmt_cell(rec.get(kinds[b].paper_lc_key))
            row.update({c: fmt_cell(rec.get(c)) for c in unmatched})
            rows.append(row)
    rows += _sftmix_deltas(runs, index, benchmarks, lc_benches, unmatched, kinds, paper)
    return pd.DataFrame(rows, columns=columns)


DELTA = "Δ SFTMix − NTP"


def _sftmix_deltas(runs, index, benchmarks, lc_benches, unmatched, kinds, paper) -> list[dict]:
    """The rows ``Δ SFTMix − NTP`` of the main table: ours per model × dataset that has both runs, then the paper's."""
    by_method = {(r["model"], r["dataset"], sftmix_method(r)): r for r in runs if sftmix_method(r)}
    rows = []
    for (model, dataset, method), sftmix in by_method.items():
        ntp = by_method.get((model, dataset, "NTP"))
        if method != "SFTMix" or ntp is None:
            continue
        row = {"model": model, "dataset": dataset, "method": DELTA, "recipe": f"{sftmix['recipe']} − {ntp['recipe']}",
               "source": "ours"}
        for b in benchmarks:
            row[b] = score_difference(index.get((model, dataset, sftmix["recipe"], b)),
                                      index.get((model, dataset, ntp["recipe"], b)))
        for b in lc_benches:
            row[f"{b} LC"] = score_difference(index.get((model, dataset, sftmix["recipe"], b)),
                                              index.get((model, dataset, ntp["recipe"], b)), "lc_value")
        row.update({c: MISSING for c in unmatched})
        rows.append(row)
    if paper is None:
        return rows
    for (model, dataset), group in paper.groupby(["model", "dataset"], sort=False):
        methods = {rec["method"]: rec for rec in group.to_dict("records")}
        if not {"NTP", "SFTMix"} <= set(methods):
            continue
        new, old = methods["SFTMix"], methods["NTP"]
        diff = lambda key: fmt_cell(new[key] - old[key]) if key in new and key in old else MISSING  # noqa: E731
        row = {"model": model, "dataset": dataset, "method": DELTA, "recipe": "—", "source": new["source"]}
        row.update({b: diff(kinds[b].paper_key) if kinds[b] is not None else MISSING for b in benchmarks})
        row.update({f"{b} LC": diff(kinds[b].paper_lc_key) for b in lc_benches})
        row.update({c: diff(c) for c in unmatched})
        rows.append(row)
    return rows


def sftmix_ablation_table(runs: list[dict], scores: pd.DataFrame, benchmarks: list[str]) -> pd.DataFrame:
    """Every NTP / SFTMix variant of the model × dataset pairs that have an SFTMix run, with its settings."""
    index = _score_index(scores)
    papers = paper_objectives("SFTMix")
    with_sftmix = {(r["model"], r["dataset"]) for r in runs if r["objective"]["name"] in papers}
    rows = []
    for run in runs:
        if (run["model"], run["dataset"]) not in with_sftmix or run["objective"]["name"] not in (BASELINE_OBJECTIVE,
                                                                                                  *papers):
            continue
        settings = _sftmix_settings(run)
        row = {"model": run["model"], "dataset": run["dataset"], "recipe": run["recipe"],
               "objective": run["objective"]["name"], "selection": settings["selection"]}
        for k in SFTMIX_DEFAULTS:
            v = settings.get(k, "—")
            row[k] = f"{v:g}" if isinstance(v, float) else str(v)
        row.update({b: _cell(index, run, b) for b in benchmarks})
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "recipe", "objective", "selection", *SFTMIX_DEFAULTS,
                                       *benchmarks])
