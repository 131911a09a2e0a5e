"""Mechanism tables: each statistic against a hand computation or a naive second implementation; the nll benchmark's
items and score; and `check_mechanism_tables`, which recomputes every cell of a run's mechanism tables from its files
(used by the workflow test on the tiny run)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sftlab.benchmarks.nll import exam_items, nll_score
from sftlab.report import mechanisms as mech

# --------------------------------------------------------------------------------------- naive implementations


def naive_auroc(scores, positive):
    """Share of (positive, negative) pairs ranked right, ties half: the Mann–Whitney reading of the AUROC."""
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def naive_wilson(k, n, z=1.959963984540054):
    p = k / n
    a = p + z * z / (2 * n)
    b = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (a - b) / (1 + z * z / n), (a + b) / (1 + z * z / n)


def naive_hypergeom_quantile(n_pool, n_clean, k, q):
    """Smallest c with P(#clean in a random k ≤ c) ≥ q, by counting subsets."""
    total = math.comb(n_pool, k)
    cdf = 0.0
    for c in range(0, k + 1):
        cdf += math.comb(n_clean, c) * math.comb(n_pool - n_clean, k - c) / total
        if cdf >= q - 1e-12:
            return c
    return k


def naive_t(values):
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def naive_bootstrap_auroc(scores, positive, n=600, seed=1):
    rng = random.Random(seed)
    values = []
    while len(values) < n:
        idx = [rng.randrange(len(scores)) for _ in scores]
        pos = [positive[i] for i in idx]
        if all(pos) or not any(pos):
            continue
        values.append(naive_auroc([scores[i] for i in idx], pos))
    values.sort()
    return values[int(0.025 * n)], values[int(0.975 * n) - 1]


# ----------------------------------------------------------------------------------------------- unit tests


def test_wilson_by_hand():
    # 5 of 10: centre 0.5, half-width 1.96·sqrt(0.025 + 0.0096)/1.384 = 0.2634
    low, high = mech.wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert mech.wilson(0, 8)[0] == pytest.approx(0.0, abs=1e-12)


def test_auroc_matches_pair_counting_and_the_interval_a_naive_bootstrap():
    rng = np.random.default_rng(3)
    positive = [bool(x) for x in rng.integers(0, 2, 40)]
    scores = [float(s + (0.8 if p else 0.0)) for s, p in zip(rng.normal(size=40).round(1), positive)]  # with ties
    value, low, high = mech.auroc_with_ci(scores, positive, n_resamples=1000, seed=0)
    assert value == pytest.approx(naive_auroc(scores, positive), abs=1e-12)
    n_low, n_high = naive_bootstrap_auroc(scores, positive)
    assert abs(low - n_low) < 0.06 and abs(high - n_high) < 0.06
    assert low < value < high


def test_random_range_is_the_hypergeometric_quantiles():
    low, high = mech.random_range(n_clean=50, n_pool=72, k=18)
    assert low == naive_hypergeom_quantile(72, 50, 18, 0.025) / 18
    assert high == naive_hypergeom_quantile(72, 50, 18, 0.975) / 18


def test_newcombe_difference_by_the_wilson_bounds():
    d, low, high = mech.newcombe(6, 10, 2, 10)
    (l1, u1), (l2, u2) = naive_wilson(6, 10), naive_wilson(2, 10)
    assert d == pytest.approx(0.4)
    assert low == pytest.approx(0.4 - math.sqrt((0.6 - l1) ** 2 + (u2 - 0.2) ** 2))
    assert high == pytest.approx(0.4 + math.sqrt((u1 - 0.6) ** 2 + (0.2 - l2) ** 2))


def test_verdicts_read_the_interval():
    assert mech.verdict(0.6, 0.9, "x", "y", null=0.5).startswith("supported")
    assert mech.verdict(0.1, 0.4, "x", "y", null=0.5).startswith("not supported, opposite")
    assert mech.verdict(0.4, 0.7, "x", "y", null=0.5).startswith("not resolved")
    assert mech.verdict(-0.3, -0.1, "x", "y", higher=False).startswith("supported")


def pool(n_per_family=6):
    rows = []
    for family in ("arithmetic", "count", "sort"):
        for i in range(n_per_family):
            quality = "clean" if i % 3 else "wrong"
            rows.append({"id": f"{family}-{i}", "source": f"demo/{family}/{quality}"})
    return rows


def test_selection_precision_families_and_verdict_by_hand():
    truth = mech.truth_frame(pool())  # 18 examples, 12 clean
    picked = ["arithmetic-1", "arithmetic-2", "count-1", "count-2", "sort-1", "sort-4"]  # all clean
    rand = ["arithmetic-0", "count-0", "sort-0", "sort-1", "count-5", "arithmetic-4"]  # 3 clean
    rows = mech.selection_rows("m", "d", [
        {"selector": "less-v-2shot", "name": "less", "fraction": 1 / 3, "ids": picked, "validation": "v"},
        {"selector": "random-s0", "name": "random", "fraction": 1 / 3, "ids": rand, "validation": None}],
        truth, {"v": ["arithmetic", "count"]})
    random_row, less_row = rows
    assert random_row["selector"] == "random-s0" and random_row["precision"] == 0.5
    assert less_row["precision"] == 1.0 and less_row["pool_share"] == round(12 / 18, 3)
    assert less_row["random_selection"] == 0.5
    assert less_row["in_validation_families"] == round(4 / 6, 3)
    assert less_row["pool_in_validation_families"] == round(12 / 18, 3)
    assert (less_row["ci_low"], less_row["ci_high"]) == tuple(round(x, 3) for x in naive_wilson(6, 6))
    high = naive_hypergeom_quantile(18, 12, 6, 0.975) / 6
    assert less_row["verdict"].startswith("supported" if 1.0 > high else "not resolved")
    assert random_row["validation_families"] == "—"


def answers(recipe_logp, ref, n):
    return [{"id": f"h{i}", "source": "demo/x/clean", "logp": lp, "ref_logp": r, "n_tokens": k}
            for i, (lp, r, k) in enumerate(zip(recipe_logp, ref, n))]


def test_deviation_rows_against_a_loop():
    ref, n = [-10.0, -8.0, -12.0, -6.0], [5, 4, 6, 3]
    runs = {"sft": ([-6.0, -5.0, -7.0, -4.0], [-5.0, -4.5, -7.5, -3.0]),  # two seeds
            "minorsft": ([-9.0, -7.0, -11.0, -5.5], [-8.5, -7.5, -10.0, -5.0])}
    frames = [mech.item_frame(answers(lp, ref, n), recipe, seed) for recipe, seeds in runs.items()
              for seed, lp in enumerate(seeds)]
    items = pd.concat(frames)
    rows = mech.deviation_rows("m", "d", "heldout_nll", items, [
        {"recipe": "sft", "objective": "ntp", "learning_rate": 1e-4, "seeds": 2},
        {"recipe": "minorsft", "objective": "minorsft", "learning_rate": 1e-4, "seeds": 2}], "sft")

    def per_item(recipe, f):
        return [sum(f(seed[i], ref[i], n[i]) for seed in runs[recipe]) / 2 for i in range(4)]

    dev = lambda lp, r, k: (lp - r) / k  # noqa: E731
    nll = lambda lp, r, k: -lp / k  # noqa: E731
    sft, minor = rows
    assert sft["m_theta"] == round(sum(per_item("sft", dev)) / 4, 3)
    diffs = [a - b for a, b in zip(per_item("minorsft", dev), per_item("sft", dev))]
    mean, low, high = naive_t(diffs)
    assert (minor["d_m_theta"], minor["d_m_low"], minor["d_m_high"]) == tuple(round(x, 3) for x in (mean, low, high))
    assert minor["p_m"] == round(stats.ttest_rel(per_item("minorsft", dev), per_item("sft", dev)).pvalue, 3)
    assert minor["heldout_nll"] == round(sum(per_item("minorsft", nll)) / 4, 3)
    assert minor["verdict"].startswith("supported") and high < 0


def test_drift_rows_pair_the_merged_model_with_its_baseline():
    ref, n = [-4.0, -6.0, -5.0], [2, 3, 2]
    items = pd.concat([mech.item_frame(answers([-4.2, -6.1, -4.9], ref, n), "dtm", None),
                       mech.item_frame(answers([-3.0, -7.5, -6.0], ref, n), "sft", None)])
    (row,) = mech.drift_rows("m", "d", "exam_nll", items, [{"recipe": "dtm", "baseline": "sft",
                                                           "composition": "disperse_merge", "seeds": 1}], None, None)
    merged = [abs(a - b) / k for a, b, k in zip([-4.2, -6.1, -4.9], ref, n)]
    sft = [abs(a - b) / k for a, b, k in zip([-3.0, -7.5, -6.0], ref, n)]
    assert row["drift_merged"] == round(sum(merged) / 3, 3) and row["drift_sft"] == round(sum(sft) / 3, 3)
    assert row["d_drift"] == round(naive_t([a - b for a, b in zip(merged, sft)])[0], 3)
    assert row["heldout_benchmark"] == "n/a" and math.isnan(row["d_heldout_nll"])


def test_sftmix_rows_count_degraded_examples_per_half():
    truth = mech.truth_frame(pool())
    conf = pd.DataFrame({"id": truth["id"], "perplexity_c1": np.arange(18.0), "perplexity_c2": np.arange(18.0)[::-1]})
    conf["confidence"] = -(conf.perplexity_c1 + conf.perplexity_c2) / 2 + 0.01 * np.arange(18)
    conf["split"] = np.where(np.arange(18) < 9, "confident", "unconfident")
    rows = {r["measure"]: r for r in mech.sftmix_rows("m", "d", conf, truth, n_resamples=200)}
    clean = truth["clean"].tolist()
    assert rows["AUROC clean vs degraded, checkpoint 1"]["value"] == round(naive_auroc(-conf.perplexity_c1, clean), 3)
    k_c = sum(not c for c in clean[:9])
    assert rows["degraded share in D^c"]["value"] == round(k_c / 9, 3)
    assert rows["degraded share D^u − D^c"]["value"] == round((sum(not c for c in clean[9:]) - k_c) / 9, 3)


def test_exam_items_and_nll_score(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps({"question": "2+2?", "subject": "arithmetic",
                                                     "choices": ["3", "4"], "answer": 1}) + "\n")
    (item,) = exam_items(tmp_path)
    assert item["messages"][1] == {"role": "assistant", "content": "4"} and item["source"] == "exam/arithmetic"
    score = nll_score([{"logp": -6.0, "n_tokens": 3}, {"logp": -2.0, "n_tokens": 2}], n_resamples=50, seed=0)
    assert score["value"] == pytest.approx(1.5) and score["metric"] == "nll_per_token" and score["n"] == 2
    (tmp_path / "bad.jsonl").write_text("")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "test.jsonl").write_text(json.dumps({"question": "q"}) + "\n")
    with pytest.raises(KeyError, match="test.jsonl:1"):
        exam_items(bad)


def test_the_script_writes_every_table_and_figure_from_files(tmp_path):
    """scripts/mechanisms.py on small files in the run's formats: each paper's table (md, csv, tex) and figure."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mechanisms_script", Path(__file__).parents[1] / "scripts" / "mechanisms.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in pool()))
    truth = mech.truth_frame(pool())
    conf = pd.DataFrame({"id": truth["id"], "perplexity_c1": np.linspace(1, 3, 18), "perplexity_c2": np.linspace(2, 1, 18)})
    conf["confidence"] = -(conf.perplexity_c1 + conf.perplexity_c2) / 2
    conf["split"] = np.where(conf.confidence.rank(ascending=False) <= 9, "confident", "unconfident")
    conf.to_parquet(tmp_path / "confidence.parquet")
    (tmp_path / "less.ids").write_text("\n".join(truth["id"][:6]) + "\n")
    (tmp_path / "val.jsonl").write_text(json.dumps({"id": "p", "subtask": "count"}) + "\n")
    answers = []
    for recipe, shift in (("sft", 0.0), ("minorsft", -0.5), ("dtm", 0.3)):
        for bench in ("heldout_nll", "exam_nll"):
            path = tmp_path / f"{recipe}_{bench}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in answers_rows(shift)))
            answers.append({"model": "m", "dataset": "d", "benchmark": bench, "recipe": recipe, "seed": 0,
                            "path": str(path)})
    specs = {
        "sftmix": {"n_resamples": 100, "seed": 0, "pairs": [{"model": "m", "dataset": "d", "train": str(train),
                                                              "confidence": str(tmp_path / "confidence.parquet")}]},
        "selection": {"pairs": [{"model": "m", "dataset": "d", "train": str(train), "validation": {"v": str(tmp_path / "val.jsonl")},
                                 "selections": [{"selector": "less-v-2shot", "name": "less", "fraction": 1 / 3,
                                                 "ids": str(tmp_path / "less.ids"), "validation": "v"}]}]},
        "minorsft": {"answers": answers, "groups": [{"model": "m", "dataset": "d", "benchmark": "heldout_nll",
                                                     "baseline": "sft", "runs": [
                                                         {"recipe": "sft", "objective": "ntp", "learning_rate": 1e-4, "seeds": 1},
                                                         {"recipe": "minorsft", "objective": "minorsft", "learning_rate": 1e-4, "seeds": 1}]}]},
        "dtm": {"answers": answers, "groups": [{"model": "m", "dataset": "d", "benchmark": "exam_nll",
                                                "heldout_benchmark": "heldout_nll", "pairs": [
                                                    {"recipe": "dtm", "baseline": "sft", "composition": "disperse_merge", "seeds": 1}]}]},
        "nll": {"answers": answers, "groups": [{"model": "m", "dataset": "d", "benchmark": b, "baseline": "sft",
                                                "recipes": ["dtm", "minorsft", "sft"]} for b in ("heldout_nll", "exam_nll")]},
    }
    for paper, spec_ in specs.items():
        table, figure = tmp_path / f"t_{paper}.md", tmp_path / f"f_{paper}.png"
        script.main([paper, "--spec", json.dumps(spec_), "--table", str(table), "--figure", str(figure)])
        assert all(table.with_suffix(s).stat().st_size > 100 for s in (".md", ".csv", ".tex")), paper
        assert all(figure.with_suffix(s).stat().st_size > 1000 for s in (".png", ".pdf")), paper
    selection = pd.read_csv(tmp_path / "t_selection.csv")
    assert selection.in_validation_families.iloc[0] == round(sum(f == "count" for f in truth.family[:6]) / 6, 3)
    nll = pd.read_csv(tmp_path / "t_nll.csv")
    # minorsft's log-prob is 0.5 + 0.005·i lower on item i of 3 tokens: its NLL per token is higher by the mean of
    # (0.5 + 0.005·i)/3 over i = 0..3, i.e. 0.5075/3
    assert set(nll.loc[nll.recipe == "minorsft", "d_nll"]) == {round(0.5075 / 3, 3)}


def answers_rows(shift):
    """Four items of 3 tokens; the run's log-prob is the base's plus ``shift`` per item."""
    return [{"id": f"i{i}", "source": "demo/x/clean", "logp": -6.0 - i + shift + 0.01 * i * shift, "ref_logp": -6.0 - i,
             "n_tokens": 3} for i in range(4)]


def test_paired_tradeoff_figure_draws_differences_with_the_baseline_at_the_origin(tmp_path, monkeypatch):
    """The MinorSFT / DTM figures plot paired differences: the baseline row (no difference) is the origin marker, a
    row without the x measure sits on x = 0, and every point is at its (x, y) difference."""
    from sftlab.report import mechanism_figures as figs

    rows = pd.DataFrame([
        {"model": "m", "dataset": "d", "benchmark": "b", "recipe": "sft", "dx": math.nan, "dx_lo": math.nan,
         "dx_hi": math.nan, "dy": math.nan, "dy_lo": math.nan, "dy_hi": math.nan},
        {"model": "m", "dataset": "d", "benchmark": "b", "recipe": "minorsft", "dx": -0.004, "dx_lo": -0.01,
         "dx_hi": 0.002, "dy": 0.004, "dy_lo": -0.002, "dy_hi": 0.01},
        {"model": "m", "dataset": "d", "benchmark": "b", "recipe": "dpo_sft", "dx": math.nan, "dx_lo": math.nan,
         "dx_hi": math.nan, "dy": -0.003, "dy_lo": -0.007, "dy_hi": 0.001},
    ])
    drawn = {}
    real_save = figs.save

    def spy(fig, stem):
        ax = fig.axes[0]
        drawn["labels"] = ax.get_legend_handles_labels()[1]
        drawn["points"] = [tuple(line.get_xydata()[0]) for line in ax.get_lines() if line.get_marker() in ("o", "P")]
        return real_save(fig, stem)

    monkeypatch.setattr(figs, "save", spy)
    out = figs.paired_tradeoff_figure(rows, ("dx", "dx_lo", "dx_hi"), ("dy", "dy_lo", "dy_hi"), "recipe", "x", "y",
                                      "t", tmp_path / "fig", origin="SFT")
    assert all(p.stat().st_size > 1000 for p in out)
    assert drawn["labels"] == ["SFT", "minorsft", "dpo_sft (x not measured)"]
    assert drawn["points"] == [(0.0, 0.0), (-0.004, 0.004), (0.0, -0.003)]
