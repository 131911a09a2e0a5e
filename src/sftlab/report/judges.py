"""What the LLM judges did: which judge scored which benchmark at what cost, and MT-Bench ratings per category.

Everything is read from the Scores files the judge rule writes (``judge``, ``judge_cost``, ``per_category``).
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sftlab.report.figures import STYLE, save
from sftlab.report.tables import MISSING, fmt_cell, format_decoding, load_scores, score_difference

JUDGE_COLUMNS = ["judge", "judge_id", "backend", "demo_quality", "benchmark", "prompt_version", "decoding",
                 "paper_judge", "runs", "judgments", "unparsable", "requests", "new_calls", "prompt_tokens",
                 "completion_tokens"]
#: what identifies a judge in the judges table: one row per judge identity and benchmark
IDENTITY_COLUMNS = ["judge", "judge_id", "backend", "demo_quality", "benchmark", "prompt_version", "decoding",
                    "paper_judge"]


def judged_scores(paths: list[str | Path]) -> pd.DataFrame:
    """``load_scores`` rows plus each file's judge and judging cost."""
    frame = load_scores(paths)
    extra = []
    for source in frame["source"]:
        score = json.loads(Path(source).read_text())
        judge, cost = score.get("judge", {}), score.get("judge_cost", {})
        extra.append({"judge": judge.get("name", judge.get("id", MISSING)), "judge_id": judge.get("id", MISSING),
                      "backend": judge.get("backend", MISSING), "demo_quality": bool(judge.get("demo_quality")),
                      "prompt_version": judge.get("prompt_version", MISSING),
                      "decoding": format_decoding(judge["decoding"]) if "decoding" in judge else MISSING,
                      "paper_judge": judge.get("paper_judge", MISSING),
                      "unparsable": score.get("n_unparsable", 0), "new_calls": cost.get("calls", 0),
                      "requests": cost.get("calls", 0) + cost.get("cached", 0),
                      "prompt_tokens": cost.get("prompt_tokens", 0), "completion_tokens": cost.get("completion_tokens", 0),
                      "per_category": score.get("per_category")})
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(extra, index=range(len(frame)))], axis=1)


def judges_table(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per (judge, benchmark): runs judged, judgments (parsed + unparsable), requests, new calls, tokens."""
    if scores.empty:
        return pd.DataFrame(columns=JUDGE_COLUMNS)
    scores = scores.assign(judgments=scores["n"].fillna(0).astype(int) + scores["unparsable"])
    table = (scores.groupby(IDENTITY_COLUMNS, sort=True)
             .agg(runs=("recipe", "size"), judgments=("judgments", "sum"), unparsable=("unparsable", "sum"),
                  requests=("requests", "sum"), new_calls=("new_calls", "sum"), prompt_tokens=("prompt_tokens", "sum"),
                  completion_tokens=("completion_tokens", "sum"))
             .reset_index())
    return table[JUDGE_COLUMNS]


COMPARISON_COLUMNS = ["model", "dataset", "benchmark", "recipe", "baseline", "judge", "score", "baseline score",
                      "difference"]


def judged_comparisons(scores: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every judged run against the ``baseline`` recipe of its model × dataset on the same benchmark: both scores and
    their difference under one judge, with its paired bootstrap interval over the items both were judged on and the
    judge's spread over repeats (``score_difference``); ``n/a (judges differ)`` when another judge scored the baseline."""
    index = {(r.model, r.dataset, r.recipe, r.benchmark): r for r in scores.itertuples()}
    rows = []
    for r in scores.itertuples():
        base = index.get((r.model, r.dataset, baseline, r.benchmark))
        if r.recipe == baseline or base is None or not isinstance(r.judge_identity, str):
            continue
        rows.append({"model": r.model, "dataset": r.dataset, "benchmark": r.benchmark, "recipe": r.recipe,
                     "baseline": baseline, "judge": r.judged_by, "score": fmt_cell(r.value, r.ci_low, r.ci_high),
                     "baseline score": fmt_cell(base.value, base.ci_low, base.ci_high),
                     "difference": score_difference(r, base)})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


CALIBRATION_COLUMNS = ["judge", "judge_id", "benchmark", "original_judge", "models", "items", "unscored", "spearman",
                       "kendall", "agreement", "mapping (items)", "mapping (model means)"]


def _line_text(line: dict) -> str:
    if line.get("slope") is None:
        return MISSING
    r = "" if line.get("r") is None else f", r = {line['r']:.2f}"
    return f"original ≈ {line['intercept']:.2f} + {line['slope']:.2f} · ours (n = {line['n']}{r})"


def _agreement_text(summary: dict) -> str:
    per_item = summary["per_item"]
    if summary["kind"] == "rating":
        if per_item.get("exact") is None:
            return MISSING
        return f"{per_item['exact']:.0%} same rating, {per_item['within_one']:.0%} within 1"
    return MISSING if per_item.get("same_winner") is None else f"{per_item['same_winner']:.0%} same winner"


def _number(value) -> str:
    return MISSING if value is None else f"{value:.2f}"


def calibration_table(paths: list[str | Path]) -> pd.DataFrame:
    """One row per calibrated benchmark (``judge_calibration``'s summaries): how our judge agrees with the original
    judge on the published sample — rank correlation of the models' means, per-item agreement, and the least-squares
    line that reads our scores on the original judge's scale."""
    rows = []
    for path in paths:
        s = json.loads(Path(path).read_text())
        rows.append({"judge": s["judge"].get("name", s["judge"]["id"]), "judge_id": s["judge"]["id"],
                     "benchmark": s["benchmark"], "original_judge": s["original_judge"], "models": s["rank"]["models"],
                     "items": s["per_item"]["items"], "unscored": s["per_item"]["unscored"],
                     "spearman": _number(s["rank"]["spearman"]), "kendall": _number(s["rank"]["kendall"]),
                     "agreement": _agreement_text(s), "mapping (items)": _line_text(s["mapping"]["items"]),
                     "mapping (model means)": _line_text(s["mapping"]["models"])})
    return pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)


def with_calibration(table: pd.DataFrame, calibration: pd.DataFrame) -> pd.DataFrame:
    """The judges table with each (judge, benchmark)'s calibration against the original judge beside it (its
    Spearman ρ over models and per-item agreement; — where the benchmark is not calibrated)."""
    cells = {(r.judge_id, r.benchmark): f"ρ {r.spearman} over {r.models} models; {r.agreement}"
             for r in calibration.itertuples()}
    return table.assign(calibration=[cells.get((j, b), MISSING) for j, b in zip(table["judge_id"], table["benchmark"])])


def calibration_note(calibration: pd.DataFrame) -> str | None:
    """The line under a table of judged scores beside the papers' own: per calibrated benchmark, how our judge agrees
    with the original judge and the line that reads our scores on its scale (None when nothing is calibrated)."""
    if calibration.empty:
        return None
    parts = [f"{r['benchmark']} by {r['judge']} against {r['original_judge']}: ρ {r['spearman']} over {r['models']} "
             f"models, {r['agreement']}; {r['mapping (model means)']}" for r in calibration.to_dict("records")]
    return "Calibration against the original judges (reports/tables/judge_calibration; model means): " + \
        "; ".join(parts) + "."


def judges_caption(table: pd.DataFrame) -> str:
    """The line written under the tables: each judge, whether it is demo-quality, and its total cost."""
    if table.empty:
        return "Judges: none (no judged benchmark in the experiments)."
    parts = []
    for (name, judge_id, demo), rows in table.groupby(["judge", "judge_id", "demo_quality"], sort=True):
        label = f"{name} ({judge_id}{', demo quality' if demo else ''})"
        parts.append(f"{label}: {int(rows.requests.sum())} requests ({int(rows.new_calls.sum())} new calls in the "
                     f"last runs), {int(rows.prompt_tokens.sum())} prompt + {int(rows.completion_tokens.sum())} "
                     f"completion tokens")
    return "Judges: " + "; ".join(parts) + "."


def mtbench_categories(scores: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Per MT-Bench benchmark a panel of bars: mean rating per category, one bar per run, 95% CI whiskers;
    a category whose judgments were all unparsable is marked n/a instead of drawn as 0."""
    benchmarks = sorted(scores["benchmark"].unique()) or ["mt_bench"]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(benchmarks), 1, figsize=(9, 3.2 * len(benchmarks)), squeeze=False)
        for ax, bench in zip(axes[:, 0], benchmarks):
            rows = scores[scores["benchmark"] == bench]
            categories = sorted({c for per in rows["per_category"] if per for c in per})
            width = 0.8 / max(len(rows), 1)
            for k, row in enumerate(rows.itertuples()):
                x = np.arange(len(categories)) - 0.4 + width * (k + 0.5)
                cells = [(row.per_category or {}).get(c, {}) for c in categories]
                values = [c.get("value") for c in cells]
                drawn = [i for i, v in enumerate(values) if v is not None]
                err = [[values[i] - cells[i]["ci_low"] for i in drawn], [cells[i]["ci_high"] - values[i] for i in drawn]]
                ax.bar(x[drawn], [values[i] for i in drawn], width, yerr=err, capsize=2,
                       label=f"{row.model}/{row.dataset}/{row.recipe}")
                for i in set(range(len(categories))) - set(drawn):
                    ax.text(x[i], 0.2, MISSING, ha="center", va="bottom", rotation=90, fontsize=7)
            judges = sorted({f"{j}{' (demo quality)' if d else ''}" for j, d in zip(rows["judge"], rows["demo_quality"])})
            ax.set(title=f"{bench}: judge {', '.join(judges) or MISSING}", ylabel="mean rating (1-10)", ylim=(0, 10.5))
            ax.set_xticks(range(len(categories)), categories, rotation=20)
            ax.set_xlim(-0.6, len(categories) - 0.4)
            if len(rows):
                ax.legend(loc="upper right", frameon=False, ncol=min(len(rows), 3))
        fig.tight_layout()
        return save(fig, stem)
