"""Paper-style tables built from the Scores files under results/.

Every cell traces to one ``scores/{benchmark}.json``; a cell with no result says so (``n/a``),
never 0 or blank.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pandas as pd

MISSING = "n/a"


def run_of(run_dir: str | Path) -> tuple[str, str, str]:
    """(model, dataset, recipe) of a run's directory ``results/{model}/{dataset}/runs/{recipe}``."""
    run_dir = Path(run_dir)
    if run_dir.parent.name != "runs" or len(run_dir.parents) < 3:
        raise ValueError(f"{run_dir} is not a run's directory results/{{model}}/{{dataset}}/runs/{{recipe}}")
    return run_dir.parents[2].name, run_dir.parents[1].name, run_dir.name


#: what a judged Scores file must say of its judge (scripts/judge.py writes it): without it no table shows the score
JUDGE_IDENTITY = ("id", "model", "prompt_version", "decoding")
SCORE_COLUMNS = ["model", "dataset", "recipe", "benchmark", "metric", "value", "ci_low", "ci_high", "n", "lc_value",
                 "source", "judged_by", "judge_identity", "judge_mark"]


def score_judge(score: dict, path: str | Path) -> tuple[str, str] | None:
    """(judge id, canonical identity) of a judged Scores file — id, model, prompt version and decoding: two scores
    compare only when their identities are equal — or None for a score no judge produced. A judged score (one with
    ``judge`` or ``judge_cost``) that lacks part of its judge's identity is refused."""
    if "judge" not in score and "judge_cost" not in score:
        return None
    judge = score.get("judge") or {}
    missing = [k for k in JUDGE_IDENTITY if k not in judge]
    if missing:
        raise ValueError(f"{path}: a judged score without its judge's {', '.join(missing)}: no table shows a judged "
                         "number whose judge is unknown; rerun its judge rule (the judgment cache makes that free)")
    return judge["id"], json.dumps({k: judge[k] for k in JUDGE_IDENTITY}, sort_keys=True)


def judge_marks(scores: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Per row, the mark its cells carry when its benchmark's column mixes judges (`` (J2)``; empty otherwise), and
    the legend of the marks: a column never mixes judges silently."""
    marks, legend, labels = [""] * len(scores), [], {}
    for bench, rows in scores.groupby("benchmark", sort=True):
        identities = sorted({i for i in rows["judge_identity"] if isinstance(i, str)})
        if len(identities) < 2:
            continue
        for identity in identities:
            if identity not in labels:
                labels[identity] = f"J{len(labels) + 1}"
                judge = json.loads(identity)
                legend.append(f"{labels[identity]} = {judge['id']} (prompt {judge['prompt_version']}; decoding "
                              f"{format_decoding(judge['decoding'])})")
        for i in rows.index:
            if isinstance(scores.at[i, "judge_identity"], str):
                marks[scores.index.get_loc(i)] = f" ({labels[scores.at[i, 'judge_identity']]})"
    return marks, legend


def judge_mark(row) -> str:
    """The judge mark of a score row (``load_scores``), empty for one without (or from a frame built otherwise)."""
    mark = getattr(row, "judge_mark", "")
    return mark if isinstance(mark, str) else ""


def format_decoding(decodings: list[dict]) -> str:
    """``temperature 0, max_tokens 2048`` per distinct decoding of a judge's requests (``;`` between them)."""
    return "; ".join(", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(d.items())
                               if not (k == "top_logprobs" and not v))
                     for d in decodings) or "n/a"


def load_scores(paths: list[str | Path]) -> pd.DataFrame:
    """One row per Scores file; the run is read from its path ``results/{model}/{dataset}/runs/{recipe}/scores/{b}.json``.

    A judged score carries its judge (``judged_by``, ``judge_identity``) and, where its benchmark's scores come from
    several judges, the mark its cells show (``judge_mark``, see ``judge_marks``)."""
    rows = []
    for path in paths:
        path = Path(path)
        score = json.loads(path.read_text())
        model, dataset, recipe = run_of(path.parent.parent)
        judge = score_judge(score, path)
        rows.append({"model": model, "dataset": dataset, "recipe": recipe, "benchmark": score["benchmark"],
                     "metric": score["metric"],
                     "value": score["value"], "ci_low": score.get("ci_low"), "ci_high": score.get("ci_high"),
                     "n": score.get("n"), "lc_value": (score.get("length_controlled") or {}).get("value"),
                     "source": str(path), "judged_by": judge and judge[0], "judge_identity": judge and judge[1]})
    frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    frame["judge_mark"] = judge_marks(frame)[0] if len(frame) else []
    return frame


def paired_judged_difference(new, old) -> dict | None:
    """``new`` − ``old`` (two judged score rows of ``load_scores``, under one judge) over the items both judged, with
    the paired bootstrap interval of ``paired_difference`` on the items of their Scores files (``per_item``), and
    ``judge_std``, the judge's own spread of the difference (√(s²_new + s²_old) from their ``judge_repeats``; None
    without repeats). None when a row has no single Scores file with items (seeds folded, an older file)."""
    from sftlab.evaluation.stats import paired_difference

    if any(";" in str(row.source) for row in (new, old)):
        return None
    a, b = (json.loads(Path(row.source).read_text()) for row in (new, old))
    if "per_item" not in a or "per_item" not in b:
        return None
    diff = paired_difference(a["per_item"], b["per_item"], n_resamples=a.get("n_resamples", 2000),
                             confidence=a.get("confidence", 0.95), seed=a.get("seed", 0))
    stds = [(s.get("judge_repeats") or {}).get("std") for s in (a, b)]
    diff["judge_std"] = math.sqrt(stds[0] ** 2 + stds[1] ** 2) if None not in stds else None
    return diff


def score_difference(new, old, field: str = "value") -> str:
    """The cell of ``new − old`` (two score rows of ``load_scores``): n/a when either is missing, and when their
    judges differ (a difference between judges says nothing about the methods). A judged value's difference carries
    its paired bootstrap interval over the items both runs were judged on, and the judge's own spread over repeats
    (``judge sd``) where the judge was asked more than once."""
    if new is None or old is None or getattr(new, field) is None or getattr(old, field) is None:
        return MISSING
    identity = [i if isinstance(i, str) else None for i in (getattr(r, "judge_identity", None) for r in (new, old))]
    if identity[0] != identity[1]:
        return f"{MISSING} (judges differ)"
    paired = paired_judged_difference(new, old) if field == "value" and identity[0] else None
    if paired is None or paired["value"] is None:
        return fmt_cell(getattr(new, field) - getattr(old, field))
    spread = "" if paired["judge_std"] is None else f"; judge sd {paired['judge_std']:.2f}"
    return fmt_cell(paired["value"], paired["ci_low"], paired["ci_high"]) + spread


def judged_columns_note(scores: pd.DataFrame) -> str | None:
    """The line under a table naming each judged column's judge (and the legend of the marks where one mixes)."""
    judged = scores[scores["judge_identity"].notna()] if len(scores) else scores
    if not len(judged):
        return None
    parts = []
    for bench, rows in judged.groupby("benchmark", sort=True):
        judges = sorted(set(rows["judged_by"]))
        parts.append(f"{bench} by {' and '.join(judges)}" + (" (mixed judges: cells marked)" if
                                                                rows["judge_identity"].nunique() > 1 else ""))
    legend = judge_marks(scores)[1]
    return "Judged columns: " + "; ".join(parts) + "." + (" " + "; ".join(legend) + "." if legend else "")


def fmt_cell(value, low=None, high=None) -> str:
    """A table cell: ``value`` to two decimals, with ``[low, high]`` when both are known; ``n/a`` when the value is
    missing (None or NaN). A score of 0 is a result and reads ``0.00``, never n/a. Every report table uses this."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if low is None or high is None or any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return f"{value:.2f}"
    return f"{value:.2f} [{low:.1f}, {high:.1f}]"


def main_table(scores: pd.DataFrame, runs: list[tuple[str, str, str]], benchmarks: list[str]) -> pd.DataFrame:
    """A row per (model, dataset, recipe) planned, a column per benchmark; cells ``value [ci_low, ci_high]``."""
    index = {(r.model, r.dataset, r.recipe, r.benchmark): r for r in scores.itertuples()}
    rows = []
    for model, dataset, recipe in runs:
        row = {"model": model, "dataset": dataset, "recipe": recipe}
        for bench in benchmarks:
            hit = index.get((model, dataset, recipe, bench))
            row[bench] = fmt_cell(hit.value, hit.ci_low, hit.ci_high) + judge_mark(hit) if hit is not None else MISSING
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "recipe", *benchmarks])


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX argument (pandas escapes the cells, not the caption)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def write_table(table: pd.DataFrame, stem: str | Path, caption: str, note: str | None = None) -> list[Path]:
    """``stem``.md, .csv and .tex, each written atomically; ``note``, a line for the reader, goes under the Markdown
    table (e.g. which judge scored the judged columns, and whether it is demo-quality)."""
    from sftlab.io import write_text

    stem = Path(stem)
    md = f"{caption}\n\n" + table.to_markdown(index=False) + "\n" if len(table) else f"{caption}\n\n(no runs)\n"
    md += f"\n{note}\n" if note else ""
    write_text(stem.with_suffix(".md"), md)
    write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    latex = table.to_latex(index=False, escape=True, caption=latex_escape(caption), label=f"tab:{stem.name}")
    write_text(stem.with_suffix(".tex"), latex)
    return [stem.with_suffix(s) for s in (".md", ".csv", ".tex")]


def _paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test p-value of a against b (pairs by seed); NaN below two pairs or with no variance."""
    from scipy.stats import ttest_rel

    if len(a) < 2:
        return math.nan
    diffs = [x - y for x, y in zip(a, b)]
    if all(d == diffs[0] for d in diffs):
        return math.nan if diffs[0] == 0 else 0.0
    return float(ttest_rel(a, b).pvalue)


def collapse_seeds(scores: pd.DataFrame, seeds: dict[str, tuple[str, int]]) -> pd.DataFrame:
    """Scores with each per-seed run folded into its base recipe, for tables shaped like a paper's (one row per method).

    The value is the mean over the seeds that have a score; the interval is the 95% t-interval of that mean over
    seeds (mean ± t₀.₉₇₅,ₙ₋₁ · s/√n), so it shows seed-to-seed spread, not the benchmark's sampling error. A base recipe
    with a single scored seed keeps that run's own interval. ``seeds`` maps a per-seed recipe name to (base, seed);
    recipes not in it pass through unchanged. ``source`` lists every file that went into a row.
    """
    from scipy.stats import t as student_t

    if not seeds or scores.empty:
        return scores
    scores = scores.assign(recipe=[seeds.get(r, (r, None))[0] for r in scores["recipe"]])
    rows = []
    for _, group in scores.groupby(["model", "dataset", "recipe", "benchmark"], sort=False):
        scored = group[group["value"].notna()]
        row = group.iloc[0].to_dict()
        if len(scored) > 1:
            mean, n = float(scored["value"].mean()), len(scored)
            half = float(student_t.ppf(0.975, n - 1) * scored["value"].std(ddof=1) / math.sqrt(n))
            row.update(value=mean, ci_low=mean - half, ci_high=mean + half, lc_value=scored["lc_value"].mean())
        elif len(scored) == 1:
            row = scored.iloc[0].to_dict()
        row.update(seeds=len(scored), source=";".join(group["source"]))
        rows.append(row)
    return pd.DataFrame(rows, columns=[*scores.columns, "seeds"])


def collapse_seed_runs(runs: list[dict], seeds: dict[str, tuple[str, int]]) -> list[dict]:
    """Runs (dicts with ``model``, ``dataset``, ``recipe``) with per-seed recipes renamed to their base, once each."""
    out: dict[tuple[str, str, str], dict] = {}
    for run in runs:
        base = seeds.get(run["recipe"], (run["recipe"], None))[0]
        out.setdefault((run["model"], run["dataset"], base), {**run, "recipe": base})
    return list(out.values())


def seed_table(scores: pd.DataFrame, runs: list[tuple[str, str, str]], benchmarks: list[str],
               seeds: dict[str, tuple[str, int]], baseline: str) -> pd.DataFrame:
    """One row per (model, dataset, base recipe) run over several seeds: ``mean ± std (n)`` per benchmark, and the
    paired t-test p-value against ``baseline`` over the seeds both have a score for (``—`` for the baseline itself).

    ``runs`` are the planned per-seed runs; ``seeds`` maps a per-seed recipe name to (base recipe, seed).
    """
    index = {(r.model, r.dataset, r.recipe, r.benchmark): r.value for r in scores.itertuples()}
    groups: dict[tuple[str, str, str], dict[int, str]] = {}
    for model, dataset, recipe in runs:
        base, seed = seeds.get(recipe, (recipe, None))
        groups.setdefault((model, dataset, base), {})[seed] = recipe
    rows = []
    for (model, dataset, base), per_seed in groups.items():
        row = {"model": model, "dataset": dataset, "recipe": base, "seeds": len(per_seed)}
        reference = groups.get((model, dataset, baseline), {})
        for bench in benchmarks:
            values = {s: index.get((model, dataset, r, bench)) for s, r in per_seed.items()}
            values = {s: v for s, v in values.items() if v is not None and not math.isnan(v)}
            if not values:
                row[bench] = MISSING
            else:
                v = list(values.values())
                std = statistics.stdev(v) if len(v) > 1 else math.nan
                row[bench] = f"{statistics.mean(v):.2f} ± {std:.2f} (n={len(v)})" if len(v) > 1 else f"{v[0]:.2f} (n=1)"
            if base == baseline:
                row[f"{bench} p"] = "—"
                continue
            pairs = [(values[s], index.get((model, dataset, reference[s], bench))) for s in values if s in reference]
            pairs = [(a, b) for a, b in pairs if b is not None and not math.isnan(b)]
            p = _paired_p([a for a, _ in pairs], [b for _, b in pairs]) if reference else math.nan
            row[f"{bench} p"] = MISSING if math.isnan(p) else f"{p:.3f}"
        rows.append(row)
    columns = ["model", "dataset", "recipe", "seeds", *[c for b in benchmarks for c in (b, f"{b} p")]]
    return pd.DataFrame(rows, columns=columns)
