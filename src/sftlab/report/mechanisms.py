"""Mechanism tables: what each paper says its method does, measured directly on the run's own files.

The demo corpus knows the truth about every training example (``source`` = ``demo/{family}/{quality}``), and every
run's per-item log-likelihoods are on file, so each paper's claim about a mechanism can be checked with an interval:

- SFTMix: the reference run's confidence separates clean from degraded examples (AUROC per checkpoint and of the
  average), and D^u holds more degraded examples than D^c.
- LESS / ROSE: the top k of a selection is cleaner than the pool and than a random k (precision), and falls on the
  validation set's task families.
- MinorSFT / SFT using DPO: at the same learning rate, MinorSFT ends nearer its reference (deviation m_θ on held-out
  answers) than SFT, at a held-out loss of its own.
- Disperse-Then-Merge: the merged model moves less from the base model than SFT on items neither trained on (the
  alignment tax).

Each row ends with a verdict read off its interval: the claim holds, the opposite holds, or it is not resolved.
Pure functions of data frames; the workflow's script reads the files and writes the tables and figures.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

Z95 = 1.959963984540054
DIGITS = 3


def quality_of(source: str) -> str:
    """``demo/{family}/{quality}`` → quality; ``clean`` or a kind of degradation."""
    parts = str(source).split("/")
    if len(parts) != 3:
        raise ValueError(f"source {source!r} is not demo/{{family}}/{{quality}}: the mechanism tables need the "
                         "demo corpus's ground truth")
    return parts[2]


def family_of(source: str) -> str:
    return str(source).split("/")[1]


def truth_frame(train: Iterable[dict]) -> pd.DataFrame:
    """id, family, clean (bool) of every training example."""
    rows = [{"id": str(r["id"]), "family": family_of(r["source"]), "clean": quality_of(r["source"]) == "clean"}
            for r in train]
    return pd.DataFrame(rows, columns=["id", "family", "clean"])


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion (sensible at small n and near 0 or 1)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return centre - half, centre + half


def newcombe(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float, float]:
    """p1 − p2 with Newcombe's hybrid score interval (from the two Wilson intervals)."""
    p1, p2 = s1 / n1, s2 / n2
    (l1, u1), (l2, u2) = wilson(s1, n1), wilson(s2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def auroc_with_ci(scores: Sequence[float], positive: Sequence[bool], n_resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float, float]:
    """AUROC of ``scores`` for ``positive`` (ties count half) with a percentile bootstrap interval over examples;
    resamples holding one class only are drawn again."""
    from sklearn.metrics import roc_auc_score

    s, y = np.asarray(scores, float), np.asarray(positive, bool)
    if y.all() or not y.any():
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    values = []
    while len(values) < n_resamples:
        idx = rng.integers(0, len(s), len(s))
        if y[idx].all() or not y[idx].any():
            continue
        values.append(roc_auc_score(y[idx], s[idx]))
    low, high = np.quantile(values, [0.025, 0.975])
    return float(roc_auc_score(y, s)), float(low), float(high)


def verdict(low: float, high: float, claim: str, opposite: str, null: float = 0.0, higher: bool = True) -> str:
    """The claim when the interval lies on its side of ``null``, the opposite when on the other, else unresolved."""
    if any(isinstance(x, float) and math.isnan(x) for x in (low, high)):
        return "n/a (no interval)"
    above, below = low > null, high < null
    if (above and higher) or (below and not higher):
        return f"supported: {claim}"
    if above or below:
        return f"not supported, opposite: {opposite}"
    return "not resolved: interval includes no difference"


def _r(x: float) -> float:
    # + 0.0 turns a rounded −0.0 into 0.0
    return round(float(x), DIGITS) + 0.0 if x is not None and not (isinstance(x, float) and math.isnan(x)) else math.nan


# ---------------------------------------------------------------------------------------------------------- SFTMix


def sftmix_rows(model: str, dataset: str, confidence: pd.DataFrame, truth: pd.DataFrame, n_resamples: int = 2000,
                seed: int = 0) -> list[dict]:
    """AUROC of −perplexity per checkpoint and of SFTMix's confidence (clean = positive); degraded share of D^c and
    D^u and their difference."""
    frame = confidence.astype({"id": str}).merge(truth, on="id", how="inner")
    if len(frame) != len(confidence):
        raise ValueError(f"{len(confidence) - len(frame)} confidence id(s) are not in the training pool")
    rows = []
    base = {"model": model, "dataset": dataset}
    checkpoints = sorted((c for c in frame.columns if c.startswith("perplexity_c")), key=lambda c: int(c[12:]))
    for column, label, score in [(c, f"checkpoint {c[12:]}", -frame[c]) for c in checkpoints] + [
            ("confidence", "confidence (mean over checkpoints)", frame["confidence"])]:
        value, low, high = auroc_with_ci(score, frame["clean"], n_resamples, seed)
        rows.append({**base, "measure": f"AUROC clean vs degraded, {label}", "value": _r(value), "ci_low": _r(low),
                     "ci_high": _r(high), "n": len(frame), "chance": 0.5,
                     "verdict": verdict(low, high, "confidence ranks clean above degraded",
                                        "degraded ranked above clean", null=0.5)})
    degraded = {split: (int((~part["clean"]).sum()), len(part)) for split, part in frame.groupby("split")}
    pool = float((~frame["clean"]).mean())
    for split, label in (("confident", "D^c"), ("unconfident", "D^u")):
        k, n = degraded.get(split, (0, 0))
        low, high = wilson(k, n)
        rows.append({**base, "measure": f"degraded share in {label}", "value": _r(k / n if n else math.nan),
                     "ci_low": _r(low), "ci_high": _r(high), "n": n, "chance": _r(pool), "verdict": ""})
    (ku, nu), (kc, nc) = degraded.get("unconfident", (0, 0)), degraded.get("confident", (0, 0))
    if nu and nc:
        d, low, high = newcombe(ku, nu, kc, nc)
        rows.append({**base, "measure": "degraded share D^u − D^c", "value": _r(d), "ci_low": _r(low),
                     "ci_high": _r(high), "n": nu + nc, "chance": 0.0,
                     "verdict": verdict(low, high, "D^u holds more degraded examples", "D^c holds more")})
    return rows


# ---------------------------------------------------------------------------------------------------- LESS / ROSE


def random_range(n_clean: int, n_pool: int, k: int) -> tuple[float, float]:
    """2.5% and 97.5% quantiles of the clean share of a uniformly random k of the pool (hypergeometric)."""
    from scipy.stats import hypergeom

    dist = hypergeom(n_pool, n_clean, k)
    return float(dist.ppf(0.025)) / k, float(dist.ppf(0.975)) / k


def selection_rows(model: str, dataset: str, selections: Sequence[dict], truth: pd.DataFrame,
                   validation_families: dict[str, list[str]]) -> list[dict]:
    """A row per selection (``{"selector", "name", "fraction", "ids", "validation"}``, ids in selection order):
    precision = clean share of the selected k with a Wilson interval, the pool's share, the 95% range of a random k,
    the random selector's own precision at that fraction where one ran, and the validation families' share."""
    clean = dict(zip(truth["id"], truth["clean"]))
    family = dict(zip(truth["id"], truth["family"]))
    n_pool, n_clean = len(truth), int(truth["clean"].sum())
    random_precision = {}
    for sel in selections:
        if sel["name"] == "random":
            random_precision.setdefault(sel["fraction"], _precision(sel["ids"], clean))
    rows = []
    for sel in sorted(selections, key=lambda s: (s["name"] != "random", s["selector"], s["fraction"])):
        ids = sel["ids"]
        unknown = [i for i in ids if i not in clean]
        if unknown:
            raise ValueError(f"selection {sel['selector']} {sel['fraction']}: {len(unknown)} id(s) not in the pool, "
                             f"e.g. {unknown[0]!r}")
        k = len(ids)
        hits = sum(clean[i] for i in ids)
        low, high = wilson(hits, k)
        r_low, r_high = random_range(n_clean, n_pool, k)
        fams = validation_families.get(sel.get("validation") or "", [])
        counts = pd.Series([family[i] for i in ids]).value_counts()
        rows.append({
            "model": model, "dataset": dataset, "selector": sel["selector"], "fraction": sel["fraction"], "k": k,
            "precision": _r(hits / k), "ci_low": _r(low), "ci_high": _r(high), "pool_share": _r(n_clean / n_pool),
            "random_low": _r(r_low), "random_high": _r(r_high),
            "random_selection": _r(random_precision.get(sel["fraction"], math.nan)),
            "validation_families": ", ".join(fams) or "—",
            "in_validation_families": _r(sum(family[i] in fams for i in ids) / k) if fams else math.nan,
            "pool_in_validation_families": _r(truth["family"].isin(fams).mean()) if fams else math.nan,
            "families_chosen": ", ".join(f"{f} {c}" for f, c in counts.items()),
            "verdict": ("supported: cleaner than a random selection" if hits / k > r_high else
                        "not supported, opposite: less clean than a random selection" if hits / k < r_low else
                        "not resolved: within a random selection's 95% range"),
        })
    return rows


def _precision(ids: Sequence[str], clean: dict) -> float:
    return sum(clean[i] for i in ids) / len(ids) if ids else math.nan


# ------------------------------------------------------------------------------------- per-item paired comparisons


def item_frame(rows: Iterable[dict], recipe: str, seed) -> pd.DataFrame:
    """Per-item answers of one run → id, recipe, seed, nll (per token), deviation (r/|y| against the base),
    drift (|r|/|y|)."""
    frame = pd.DataFrame(list(rows), columns=["id", "source", "logp", "ref_logp", "n_tokens"])
    r = (frame["logp"] - frame["ref_logp"]) / frame["n_tokens"]
    return pd.DataFrame({"id": frame["id"].astype(str), "recipe": recipe, "seed": seed,
                         "nll": -frame["logp"] / frame["n_tokens"], "deviation": r, "drift": r.abs()})


def per_item(items: pd.DataFrame, recipe: str, column: str) -> pd.Series:
    """One value per item of ``recipe``: the mean over its seeds."""
    part = items[items["recipe"] == recipe]
    return part.groupby("id")[column].mean()


def mean_t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    from scipy import stats

    x = np.asarray(values, float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan, math.nan
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def paired(items: pd.DataFrame, recipe: str, baseline: str, column: str) -> dict:
    """``recipe`` − ``baseline`` over the items both scored (seeds averaged per item): mean difference with a paired
    t interval and the paired t-test's p-value."""
    from scipy import stats

    a, b = per_item(items, recipe, column), per_item(items, baseline, column)
    shared = a.index.intersection(b.index)
    diff = (a.loc[shared] - b.loc[shared]).to_numpy()
    mean, low, high = mean_t_interval(diff)
    p = float(stats.ttest_rel(a.loc[shared], b.loc[shared]).pvalue) if len(shared) > 1 and diff.std() > 0 else math.nan
    return {"diff": mean, "diff_low": low, "diff_high": high, "p": p, "items": len(shared)}


def _measure(items: pd.DataFrame, recipe: str, column: str) -> tuple[float, float, float]:
    return mean_t_interval(per_item(items, recipe, column).to_numpy())


def deviation_rows(model: str, dataset: str, benchmark: str, items: pd.DataFrame, runs: Sequence[dict],
                   baseline: str) -> list[dict]:
    """MinorSFT's trade-off: per objective run (``{"recipe", "objective", "learning_rate", "seeds"}``) the final
    deviation m_θ = mean r/|y| over held-out items and the held-out NLL per token, each with a t interval over
    items; and the paired difference to the SFT baseline at the same learning rate."""
    rows = []
    for run in runs:
        m, m_low, m_high = _measure(items, run["recipe"], "deviation")
        nll, nll_low, nll_high = _measure(items, run["recipe"], "nll")
        row = {"model": model, "dataset": dataset, "benchmark": benchmark, "recipe": run["recipe"],
               "objective": run["objective"], "learning_rate": run["learning_rate"], "seeds": run["seeds"],
               "m_theta": _r(m), "m_low": _r(m_low), "m_high": _r(m_high),
               "heldout_nll": _r(nll), "nll_low": _r(nll_low), "nll_high": _r(nll_high)}
        if run["recipe"] == baseline:
            rows.append({**row, "d_m_theta": math.nan, "d_m_low": math.nan, "d_m_high": math.nan, "p_m": math.nan,
                         "d_nll": math.nan, "d_nll_low": math.nan, "d_nll_high": math.nan, "p_nll": math.nan,
                         "items": int(items[items.recipe == baseline]["id"].nunique()), "verdict": "baseline (SFT)"})
            continue
        dm, dn = paired(items, run["recipe"], baseline, "deviation"), paired(items, run["recipe"], baseline, "nll")
        rows.append({**row, "d_m_theta": _r(dm["diff"]), "d_m_low": _r(dm["diff_low"]), "d_m_high": _r(dm["diff_high"]),
                     "p_m": _r(dm["p"]), "d_nll": _r(dn["diff"]), "d_nll_low": _r(dn["diff_low"]),
                     "d_nll_high": _r(dn["diff_high"]), "p_nll": _r(dn["p"]), "items": dm["items"],
                     "verdict": verdict(dm["diff_low"], dm["diff_high"], "deviates less from the reference than SFT",
                                        "deviates more than SFT", higher=False)})
    return rows


def drift_rows(model: str, dataset: str, benchmark: str, items: pd.DataFrame, pairs: Sequence[dict],
               heldout: pd.DataFrame | None, heldout_benchmark: str | None) -> list[dict]:
    """DTM's alignment tax: per (composed recipe, its single-run baseline) the mean |Δ log-likelihood| per token
    from the base model on items neither trained on, each with a t interval, their paired difference, and the paired
    held-out NLL difference beside it (``heldout``: the held-out benchmark's items, None if not scored)."""
    rows = []
    for pair in pairs:
        composed, base = pair["recipe"], pair["baseline"]
        row = {"model": model, "dataset": dataset, "benchmark": benchmark, "recipe": composed, "baseline": base,
               "composition": pair["composition"], "seeds": pair["seeds"]}
        for name, recipe in (("merged", composed), ("sft", base)):
            v, low, high = _measure(items, recipe, "drift")
            row |= {f"drift_{name}": _r(v), f"drift_{name}_low": _r(low), f"drift_{name}_high": _r(high)}
        d = paired(items, composed, base, "drift")
        row |= {"d_drift": _r(d["diff"]), "d_drift_low": _r(d["diff_low"]), "d_drift_high": _r(d["diff_high"]),
                "p_drift": _r(d["p"]), "items": d["items"]}
        if heldout is not None and {composed, base} <= set(heldout["recipe"]):
            for name, recipe in (("merged", composed), ("sft", base)):
                v, low, high = _measure(heldout, recipe, "nll")
                row |= {f"heldout_nll_{name}": _r(v), f"heldout_nll_{name}_low": _r(low),
                        f"heldout_nll_{name}_high": _r(high)}
            h = paired(heldout, composed, base, "nll")
            row |= {"heldout_benchmark": heldout_benchmark, "d_heldout_nll": _r(h["diff"]),
                    "d_heldout_nll_low": _r(h["diff_low"]), "d_heldout_nll_high": _r(h["diff_high"]),
                    "p_heldout_nll": _r(h["p"])}
        else:
            row |= {f"heldout_nll_{name}{end}": math.nan for name in ("merged", "sft") for end in ("", "_low", "_high")}
            row |= {"heldout_benchmark": "n/a", "d_heldout_nll": math.nan, "d_heldout_nll_low": math.nan,
                    "d_heldout_nll_high": math.nan, "p_heldout_nll": math.nan}
        row["verdict"] = verdict(d["diff_low"], d["diff_high"], "the merged model moves less from the base than SFT",
                                 "the merged model moves more than SFT", higher=False)
        rows.append(row)
    return rows


def nll_rows(model: str, dataset: str, benchmark: str, items: pd.DataFrame, recipes: Sequence[str],
             baseline: str) -> list[dict]:
    """Every recipe's NLL per token on a benchmark's items, and its paired difference to the baseline."""
    rows = []
    for recipe in recipes:
        v, low, high = _measure(items, recipe, "nll")
        row = {"model": model, "dataset": dataset, "benchmark": benchmark, "recipe": recipe,
               "seeds": int(items.loc[items.recipe == recipe, "seed"].nunique(dropna=False)), "nll": _r(v), "nll_low": _r(low),
               "nll_high": _r(high)}
        if recipe == baseline or baseline not in set(items["recipe"]):
            rows.append({**row, "d_nll": math.nan, "d_low": math.nan, "d_high": math.nan, "p": math.nan,
                         "items": int(items.loc[items.recipe == recipe, "id"].nunique()),
                         "verdict": "baseline" if recipe == baseline else "n/a (no baseline run)"})
            continue
        d = paired(items, recipe, baseline, "nll")
        rows.append({**row, "d_nll": _r(d["diff"]), "d_low": _r(d["diff_low"]), "d_high": _r(d["diff_high"]),
                     "p": _r(d["p"]), "items": d["items"],
                     "verdict": verdict(d["diff_low"], d["diff_high"], f"lower NLL than {baseline} on these items",
                                        f"higher NLL than {baseline}", higher=False)})
    return rows
