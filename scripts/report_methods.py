"""Paper-shaped reports of SFTMix and MinorSFT from results/ (tables: Markdown, CSV, LaTeX; figures: PNG, PDF).

sftmix:   reports/tables/sftmix_main (ours beside the paper's numbers), reports/tables/sftmix_ablation
minorsft: reports/tables/minorsft_accuracy, reports/figures/minorsft_grid, reports/figures/minorsft_deviation
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from sftlab.logs import setup_logging
from sftlab.report.methods import (
    best_settings,
    deviation_curves,
    minorsft_accuracy_table,
    minorsft_grid,
    minorsft_heatmap,
    sftmix_ablation_table,
    sftmix_main_table,
)
from sftlab.report.judges import calibration_note, calibration_table
from sftlab.report.papers import paper_numbers
from sftlab.report.tables import (collapse_seed_runs, collapse_seeds, judged_columns_note, load_scores, run_of,
                                  write_table)


def sftmix(args, runs, scores, benchmarks) -> None:
    types = json.loads(args.benchmark_types)
    main = sftmix_main_table(runs, scores, benchmarks, types, paper_numbers("sftmix"))
    # our judge against the paper's: how far our numbers can be read beside the paper's (rule judge_calibration)
    notes = [judged_columns_note(scores), calibration_note(calibration_table(args.calibrations))]
    write_table(main, Path(args.tables) / "sftmix_main",
                "SFTMix, main table: NTP vs SFTMix per model × dataset (ours: value [95% CI]); the paper's reported "
                "numbers below ours with their source label and judges; then Δ SFTMix − NTP, ours (under one judge) "
                "beside the paper's. n/a = no result for that cell.", note="\n\n".join(n for n in notes if n) or None)
    write_table(sftmix_ablation_table(runs, scores, benchmarks), Path(args.tables) / "sftmix_ablation",
                "SFTMix ablations: μ, α, detach, pairing, and training on the confident / unconfident half alone "
                "(— = not an SFTMix run).", note=judged_columns_note(scores))


def minorsft(args, runs, scores, benchmarks) -> None:
    grid = minorsft_grid(runs, scores, benchmarks)
    write_table(minorsft_accuracy_table(grid, benchmarks), Path(args.tables) / "minorsft_accuracy",
                "MinorSFT vs SFT vs DPO-SFT: each method at its best (β, learning rate), chosen by the mean over "
                "these same scores as the paper does (an optimistic choice); value [95% CI]; n/a = no result.")
    minorsft_heatmap(grid, benchmarks[0] if benchmarks else "", Path(args.figures) / "minorsft_grid")
    # a recipe run over several seeds draws one curve: the step-wise mean of its seeds' logs
    seeds, per_run = json.loads(args.seeds), {}
    for path in args.train_logs:
        model, dataset, recipe = run_of(Path(path).parent)
        per_run.setdefault((model, dataset, seeds.get(recipe, (recipe, None))[0]), []).append(pd.read_csv(path))
    logs = {key: frames[0] if len(frames) == 1 else pd.concat(frames).groupby("step", as_index=False).mean(numeric_only=True)
            for key, frames in per_run.items()}
    labels = {}
    for s in best_settings(grid, benchmarks).itertuples():
        chosen = grid[(grid["model"] == s.model) & (grid["method"] == s.method)
                      & (grid["learning_rate"] == s.learning_rate)
                      & ((grid["beta"] == s.beta) | (grid["beta"].isna() & pd.isna(s.beta)))]
        for r in chosen.itertuples():
            beta = "" if pd.isna(r.beta) else f", β={r.beta:g}"
            labels[(r.model, r.dataset, r.recipe)] = f"{r.method} (lr={r.learning_rate:g}{beta})"
    deviation_curves(logs, labels, Path(args.figures) / "minorsft_deviation")


#: the paper → its report
REPORTS = {"sftmix": sftmix, "minorsft": minorsft}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("paper", choices=sorted(REPORTS))
    ap.add_argument("--scores", nargs="*", default=[])
    ap.add_argument("--train-logs", nargs="*", default=[])
    ap.add_argument("--calibrations", nargs="*", default=[], help="judge_calibration summaries (JSON)")
    ap.add_argument("--runs", required=True, help="JSON list of runs with their recipe settings")
    ap.add_argument("--benchmarks", required=True, help="JSON list of benchmark names (table columns)")
    ap.add_argument("--benchmark-types", default="{}", help="JSON benchmark name → type")
    ap.add_argument("--seeds", default="{}", help="JSON per-seed recipe → [base recipe, seed]: tables show one row "
                                                  "per base recipe, the mean over seeds [95%% t-interval over seeds]")
    ap.add_argument("--tables", default="reports/tables")
    ap.add_argument("--figures", default="reports/figures")
    args = ap.parse_args()
    setup_logging()
    runs, benchmarks, seeds = json.loads(args.runs), json.loads(args.benchmarks), json.loads(args.seeds)
    scores = collapse_seeds(load_scores(args.scores), seeds)
    REPORTS[args.paper](args, collapse_seed_runs(runs, seeds), scores, benchmarks)


if __name__ == "__main__":
    main()
