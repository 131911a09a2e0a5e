"""Mechanism table and figure of one paper (sftmix, selection, minorsft, dtm) or the paired held-out NLL table (nll).

Reads the files the spec names (training pool, confidence table, selection ids, validation sets, per-item answers of
nll benchmarks) and writes the table as .md, .csv, .tex and the figure as .png, .pdf. The spec is JSON built by the
workflow (sftlab.plan.reports).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from sftlab.io import read_jsonl
from sftlab.logs import setup_logging
from sftlab.report import mechanism_figures as figs
from sftlab.report import mechanisms as mech
from sftlab.report.tables import write_table

CAPTIONS = {
    "sftmix": "SFTMix mechanism: does the reference run's confidence separate clean from degraded training examples? "
              "AUROC (clean = positive) per checkpoint and of the mean, with a 95% bootstrap interval over examples; "
              "degraded share of D^c and D^u (95% Wilson) against the pool's; their difference (Newcombe interval).",
    "selection": "LESS / ROSE (and BM25, DSIR, RDS, RDS+) mechanism: precision of each selection = share of clean "
                 "examples among the k selected (95% Wilson), against the pool's share, the 95% range of a random k "
                 "(hypergeometric) and the random selector's own k; the share falling on the validation set's task "
                 "families.",
    "minorsft": "MinorSFT mechanism: deviation m_θ = mean over held-out items of (log πθ − log πref)/|y| at the end of "
                "training, and held-out NLL per token, each with a 95% t interval over items; the paired difference to "
                "SFT at the same learning rate (95% paired t interval, p of the paired t-test); seeds averaged per item.",
    "dtm": "Disperse-Then-Merge mechanism (alignment tax): mean |Δ log-likelihood| per token from the base model on "
           "items no run trained on, merged model vs its single-run baseline (95% t intervals over items, paired "
           "difference and p), beside the paired held-out NLL difference.",
    "nll": "Held-out NLL per token of the clean reference answers (95% t interval over items) and the paired difference "
           "to the baseline over the same items (95% paired t interval, p of the paired t-test; seeds averaged per item).",
}
NOTE = ("Verdicts read the interval: 'supported' = the interval lies on the claim's side, 'not supported, opposite' = on "
        "the other side, 'not resolved' = it includes no difference. Nothing was tuned to make a method win.")


def answers_frames(entries: list[dict]) -> dict[tuple[str, str, str], pd.DataFrame]:
    """(model, dataset, benchmark) → per-item frame of every run's answers (recipe = base recipe, seed)."""
    frames: dict[tuple[str, str, str], list[pd.DataFrame]] = {}
    for e in entries:
        frames.setdefault((e["model"], e["dataset"], e["benchmark"]), []).append(
            mech.item_frame(read_jsonl(e["path"]), e["recipe"], e["seed"]))
    return {k: pd.concat(v, ignore_index=True) for k, v in frames.items()}


def sftmix(spec: dict, stem: str, figure: str) -> None:
    from sklearn.metrics import roc_curve

    rows, rocs = [], {}
    for pair in spec["pairs"]:
        truth = mech.truth_frame(read_jsonl(pair["train"]))
        confidence = pd.read_parquet(pair["confidence"]).astype({"id": str})
        rows += mech.sftmix_rows(pair["model"], pair["dataset"], confidence, truth, spec["n_resamples"], spec["seed"])
        frame = confidence.merge(truth, on="id")
        curves = {}
        for column in sorted((c for c in frame.columns if c.startswith("perplexity_c")), key=lambda c: int(c[12:])):
            fpr, tpr, _ = roc_curve(frame["clean"], -frame[column])
            curves[f"checkpoint {column[12:]}"] = (fpr, tpr)
        fpr, tpr, _ = roc_curve(frame["clean"], frame["confidence"])
        curves["confidence (mean over checkpoints)"] = (fpr, tpr)
        rocs[(pair["model"], pair["dataset"])] = curves
    table = pd.DataFrame(rows)
    write_table(table, stem, CAPTIONS["sftmix"], NOTE)
    figs.sftmix_figure(table, rocs, figure)


def selection(spec: dict, stem: str, figure: str) -> None:
    rows = []
    for pair in spec["pairs"]:
        truth = mech.truth_frame(read_jsonl(pair["train"]))
        families = {name: sorted({str(r.get("subtask", "")) for r in read_jsonl(path)})
                    for name, path in pair["validation"].items()}
        selections = [{**s, "ids": [line.strip() for line in open(s["ids"]) if line.strip()]}
                      for s in pair["selections"]]
        rows += mech.selection_rows(pair["model"], pair["dataset"], selections, truth, families)
    table = pd.DataFrame(rows)
    write_table(table, stem, CAPTIONS["selection"], NOTE)
    figs.selection_figure(table, figure)


def minorsft(spec: dict, stem: str, figure: str) -> None:
    items = answers_frames(spec["answers"])
    rows = []
    for g in spec["groups"]:
        rows += mech.deviation_rows(g["model"], g["dataset"], g["benchmark"],
                                    items[(g["model"], g["dataset"], g["benchmark"])], g["runs"], g["baseline"])
    table = pd.DataFrame(rows)
    write_table(table, stem, CAPTIONS["minorsft"], NOTE)
    # SFT (the baseline of each group) is the origin: each objective's paired differences to it
    figs.paired_tradeoff_figure(table, ("d_nll", "d_nll_low", "d_nll_high"), ("d_m_theta", "d_m_low", "d_m_high"),
                                "recipe", "Δ held-out NLL per token vs SFT (paired, 95% CI)",
                                "Δ deviation m_θ vs SFT (paired, 95% CI)", "deviation vs fit", figure,
                                origin="SFT at the same learning rate")


def dtm(spec: dict, stem: str, figure: str) -> None:
    items = answers_frames(spec["answers"])
    rows = []
    for g in spec["groups"]:
        heldout = items.get((g["model"], g["dataset"], g["heldout_benchmark"])) if g["heldout_benchmark"] else None
        rows += mech.drift_rows(g["model"], g["dataset"], g["benchmark"], items[(g["model"], g["dataset"], g["benchmark"])],
                                g["pairs"], heldout, g["heldout_benchmark"])
    table = pd.DataFrame(rows)
    write_table(table, stem, CAPTIONS["dtm"], NOTE)
    # each merged model's paired differences to its own single-run baseline (the origin)
    frame = pd.DataFrame([{**r, "label": f"{r['recipe']} − {r['baseline']}"} for r in rows]) if rows else pd.DataFrame(
        columns=["model", "dataset", "benchmark", "label", "d_heldout_nll", "d_heldout_nll_low", "d_heldout_nll_high",
                 "d_drift", "d_drift_low", "d_drift_high"])
    figs.paired_tradeoff_figure(frame, ("d_heldout_nll", "d_heldout_nll_low", "d_heldout_nll_high"),
                                ("d_drift", "d_drift_low", "d_drift_high"), "label",
                                "Δ held-out NLL per token, merged − baseline (paired, 95% CI)",
                                "Δ drift from the base, merged − baseline", "merged vs its baseline", figure,
                                origin="single-run baseline")


def nll(spec: dict, stem: str, figure: str) -> None:
    items = answers_frames(spec["answers"])
    rows = []
    for g in spec["groups"]:
        rows += mech.nll_rows(g["model"], g["dataset"], g["benchmark"], items[(g["model"], g["dataset"], g["benchmark"])],
                              g["recipes"], g["baseline"])
    table = pd.DataFrame(rows)
    write_table(table, stem, CAPTIONS["nll"], NOTE)
    figs.forest_figure(table, figure, "NLL per token − baseline's, paired over items (95% CI)")


PAPERS = {"sftmix": sftmix, "selection": selection, "minorsft": minorsft, "dtm": dtm, "nll": nll}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("paper", choices=sorted(PAPERS))
    ap.add_argument("--spec", required=True, help="JSON: the files and runs to compare (see the workflow)")
    ap.add_argument("--table", required=True, help="the table's .md path (.csv and .tex beside it)")
    ap.add_argument("--figure", required=True, help="the figure's .png path (.pdf beside it)")
    args = ap.parse_args(argv)
    setup_logging()
    PAPERS[args.paper](json.loads(args.spec), str(Path(args.table).with_suffix("")), str(Path(args.figure).with_suffix("")))


if __name__ == "__main__":
    main()
