"""Recompute every cell of a run's mechanism tables from its files with naive code (loops, counting, math.comb),
independent of sftlab.report.mechanisms: the workflow test calls `check_mechanism_tables` on the tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
from scipy import stats

from test_mechanisms import naive_auroc, naive_bootstrap_auroc, naive_hypergeom_quantile, naive_t, naive_wilson

TOL = 1.5e-3  # tables round to 3 decimals


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _close(a, b, tol=TOL) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return abs(float(a) - float(b)) <= tol


def _truth(workdir: Path, dataset: str) -> dict[str, tuple[str, bool]]:
    out = {}
    for row in _jsonl(workdir / f"results/data/{dataset}/train.jsonl"):
        _, family, quality = row["source"].split("/")
        out[row["id"]] = (family, quality == "clean")
    return out


def check_sftmix(workdir: Path) -> int:
    table = pd.read_csv(workdir / "reports/tables/mechanism_sftmix.csv")
    checked = 0
    for (model, dataset), rows in table.groupby(["model", "dataset"]):
        truth = _truth(workdir, dataset)
        conf = pd.read_parquet(workdir / f"results/{model}/{dataset}/confidence.parquet")
        clean = [truth[i][1] for i in conf["id"]]
        for row in rows.itertuples():
            if row.measure.startswith("AUROC"):
                column = "confidence" if "confidence" in row.measure else f"perplexity_c{row.measure.split()[-1]}"
                sign = 1 if column == "confidence" else -1
                scores = [sign * v for v in conf[column]]
                assert _close(row.value, naive_auroc(scores, clean)), row
                low, high = naive_bootstrap_auroc(scores, clean)
                assert abs(row.ci_low - low) < 0.08 and abs(row.ci_high - high) < 0.08, (row, low, high)
            else:
                halves = {"D^c": "confident", "D^u": "unconfident"}
                counts = {}
                for label, split in halves.items():
                    members = [c for c, s in zip(clean, conf["split"]) if s == split]
                    counts[label] = (sum(not c for c in members), len(members))
                if row.measure == "degraded share D^u − D^c":
                    (ku, nu), (kc, nc) = counts["D^u"], counts["D^c"]
                    assert _close(row.value, ku / nu - kc / nc), row
                else:
                    k, n = counts[row.measure.split()[-1]]
                    assert _close(row.value, k / n) and row.n == n, row
                    assert all(_close(a, b) for a, b in zip((row.ci_low, row.ci_high), naive_wilson(k, n))), row
                    assert _close(row.chance, sum(not c for c in clean) / len(clean)), row
            checked += 1
    return checked


def check_selection(workdir: Path) -> int:
    table = pd.read_csv(workdir / "reports/tables/mechanism_selection.csv")
    checked = 0
    for row in table.itertuples():
        truth = _truth(workdir, row.dataset)
        files = [p for p in (workdir / f"results/{row.model}/{row.dataset}/selection/{row.selector}").glob("*.ids")
                 if math.isclose(float(p.stem), row.fraction)]
        assert len(files) == 1, (row, files)
        ids = [line for line in files[0].read_text().splitlines() if line]
        hits = sum(truth[i][1] for i in ids)
        n_clean = sum(c for _, c in truth.values())
        assert row.k == len(ids) and _close(row.precision, hits / len(ids)), row
        assert all(_close(a, b) for a, b in zip((row.ci_low, row.ci_high), naive_wilson(hits, len(ids)))), row
        assert _close(row.pool_share, n_clean / len(truth)), row
        assert _close(row.random_low, naive_hypergeom_quantile(len(truth), n_clean, len(ids), 0.025) / len(ids))
        assert _close(row.random_high, naive_hypergeom_quantile(len(truth), n_clean, len(ids), 0.975) / len(ids))
        # the random selector's own k: a random selection of the experiments at this fraction (not the warmup's)
        randoms = [r.selector for r in table.itertuples() if r.selector.startswith("random-")
                   and (r.model, r.dataset) == (row.model, row.dataset) and math.isclose(r.fraction, row.fraction)]
        if randoms:
            path = workdir / f"results/{row.model}/{row.dataset}/selection/{randoms[0]}/{files[0].name}"
            rid = [line for line in path.read_text().splitlines() if line]
            assert _close(row.random_selection, sum(truth[i][1] for i in rid) / len(rid)), row
        else:
            assert math.isnan(row.random_selection), row
        if row.validation_families != "—":
            fams = set(row.validation_families.split(", "))
            assert _close(row.in_validation_families, sum(truth[i][0] in fams for i in ids) / len(ids)), row
        checked += 1
    return checked


def _items(workdir: Path, model: str, dataset: str, recipe: str, benchmark: str) -> dict[str, dict]:
    """Per item of a (possibly seeded) recipe: nll, deviation and drift, averaged over its seeds' answers files."""
    runs = workdir / f"results/{model}/{dataset}/runs"
    dirs = [d for d in runs.iterdir() if d.name == recipe or (d.name.startswith(recipe + "_s") and
                                                              d.name[len(recipe) + 2:].isdigit())]
    per_item: dict[str, list[tuple[float, float, float]]] = {}
    for d in dirs:
        path = d / "answers" / f"{benchmark}.jsonl"
        if not path.exists():
            continue
        for a in _jsonl(path):
            r = (a["logp"] - a["ref_logp"]) / a["n_tokens"]
            per_item.setdefault(a["id"], []).append((-a["logp"] / a["n_tokens"], r, abs(r)))
    assert per_item, (recipe, benchmark)
    return {i: {k: sum(v[j] for v in vals) / len(vals) for j, k in enumerate(("nll", "deviation", "drift"))}
            for i, vals in per_item.items()}


def _paired(a: dict, b: dict, key: str):
    shared = sorted(set(a) & set(b))
    diffs = [a[i][key] - b[i][key] for i in shared]
    p = stats.ttest_rel([a[i][key] for i in shared], [b[i][key] for i in shared]).pvalue
    return (*naive_t(diffs), p)


def _mean(a: dict, key: str):
    return naive_t([v[key] for v in a.values()])


def check_minorsft(workdir: Path) -> int:
    table = pd.read_csv(workdir / "reports/tables/mechanism_minorsft.csv")
    checked = 0
    for (model, dataset, bench), rows in table.groupby(["model", "dataset", "benchmark"]):
        base = rows[rows.verdict == "baseline (SFT)"].recipe.iloc[0]
        sft = _items(workdir, model, dataset, base, bench)
        ref = pd.read_parquet(workdir / f"results/{model}/{dataset}/ref_logprobs.parquet").set_index("id")
        for row in rows.itertuples():
            items = _items(workdir, model, dataset, row.recipe, bench)
            assert all(_close(a, b) for a, b in zip((row.m_theta, row.m_low, row.m_high), _mean(items, "deviation")))
            assert all(_close(a, b) for a, b in zip((row.heldout_nll, row.nll_low, row.nll_high), _mean(items, "nll")))
            if row.recipe != base:
                want = _paired(items, sft, "deviation")
                got = (row.d_m_theta, row.d_m_low, row.d_m_high, row.p_m)
                assert all(_close(a, b) for a, b in zip(got, want)), (row, want)
            checked += 1
        # the base model's log-probs in the answers are those the ref_logprobs rule computed for the same items
        answers = next((workdir / f"results/{model}/{dataset}/runs").glob(f"*/answers/{bench}.jsonl"))
        for a in _jsonl(answers):
            assert abs(a["ref_logp"] - ref.loc[a["id"], "ref_logp"]) < 1e-3 * max(1.0, abs(a["ref_logp"])), a
    return checked


def check_dtm(workdir: Path) -> int:
    table = pd.read_csv(workdir / "reports/tables/mechanism_dtm.csv")
    for row in table.itertuples():
        merged = _items(workdir, row.model, row.dataset, row.recipe, row.benchmark)
        sft = _items(workdir, row.model, row.dataset, row.baseline, row.benchmark)
        assert all(_close(a, b) for a, b in zip((row.drift_merged, row.drift_merged_low, row.drift_merged_high),
                                                  _mean(merged, "drift")))
        assert all(_close(a, b) for a, b in zip((row.drift_sft, row.drift_sft_low, row.drift_sft_high),
                                                  _mean(sft, "drift")))
        want = _paired(merged, sft, "drift")
        assert all(_close(a, b) for a, b in zip((row.d_drift, row.d_drift_low, row.d_drift_high, row.p_drift), want))
        if row.heldout_benchmark != "n/a":
            hm = _items(workdir, row.model, row.dataset, row.recipe, row.heldout_benchmark)
            hs = _items(workdir, row.model, row.dataset, row.baseline, row.heldout_benchmark)
            assert _close(row.d_heldout_nll, _paired(hm, hs, "nll")[0])
    return len(table)


def check_nll(workdir: Path, baseline: str = "sft") -> int:
    table = pd.read_csv(workdir / "reports/tables/mechanism_nll.csv")
    for row in table.itertuples():
        items = _items(workdir, row.model, row.dataset, row.recipe, row.benchmark)
        assert all(_close(a, b) for a, b in zip((row.nll, row.nll_low, row.nll_high), _mean(items, "nll")))
        if row.recipe != baseline:
            base = _items(workdir, row.model, row.dataset, baseline, row.benchmark)
            assert all(_close(a, b) for a, b in zip((row.d_nll, row.d_low, row.d_high, row.p),
                                                      _paired(items, base, "nll")))
    return len(table)


def check_mechanism_tables(workdir: Path) -> dict[str, int]:
    """Rows checked per table; every table must exist and have rows."""
    return {name: check(Path(workdir)) for name, check in (("sftmix", check_sftmix), ("selection", check_selection),
                                                           ("minorsft", check_minorsft), ("dtm", check_dtm),
                                                           ("nll", check_nll))}
