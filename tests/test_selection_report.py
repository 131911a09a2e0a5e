"""LESS / ROSE report: cost per stage from hand-made Snakemake benchmark files, the fraction curve, the shots table."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from sftlab.report.cost import (
    cost_table,
    format_cost,
    paper_groups,
    pipeline_groups,
    cost_jobs,
    read_benchmark,
    rule_order,
    stage_cost,
    stored_bytes,
    with_grand_total,
)
from sftlab.report.dag import DagJob
from sftlab.report.papers import paper_numbers
from sftlab.report.selection import (curve_frame, draws_fraction_curve, fraction_curve, fraction_curve_note,
                                     selection_main_table, shots_table)
from sftlab.report.tables import load_scores

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def benchmark(path: Path, *rows: tuple) -> str:
    """A Snakemake benchmark TSV with rows (seconds, max_rss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t{rss}\t900.0\t1.0\t1.0\t0.0\t0.0\t50.0\t1.0\n" for s, rss in rows))
    return str(path)


def blob(path: Path, size: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return str(path)


def test_read_benchmark_means_repeats_and_takes_the_largest_rss(tmp_path):
    assert read_benchmark(benchmark(tmp_path / "a.tsv", (10.0, 100.5), (20.0, 300.25))) == {"s": 15.0, "max_rss": 300.25}
    unmeasured = read_benchmark(benchmark(tmp_path / "b.tsv", (4.5, "-")))
    assert unmeasured["s"] == 4.5 and math.isnan(unmeasured["max_rss"])
    (tmp_path / "c.tsv").write_text("x\ty\n1\t2\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark"):
        read_benchmark(tmp_path / "c.tsv")


def test_stored_bytes_of_files_and_directories(tmp_path):
    blob(tmp_path / "d" / "a.bin", 100)
    blob(tmp_path / "d" / "sub" / "b.bin", 23)
    assert stored_bytes(tmp_path / "d") == 123
    assert stored_bytes(tmp_path / "d" / "a.bin") == 100
    assert stored_bytes(tmp_path / "nothing") is None


def test_cost_table_sums_time_and_gpu_hours_takes_max_rss_and_totals_per_stage(tmp_path):
    b = tmp_path / "benchmarks"
    groups = [
        {"model": "m", "dataset": "d", "stage": "warmup", "item": "pool",
         "benchmarks": [{"path": benchmark(b / "warmup.tsv", (1800.0, 2000.0)), "gpus": 2}],
         "outputs": [blob(tmp_path / "warmup" / "checkpoint-1" / "adapter.bin", 1000)]},
        {"model": "m", "dataset": "d", "stage": "gradient features", "item": "pool",
         "benchmarks": [{"path": benchmark(b / "g0.tsv", (360.0, 500.0)), "gpus": 1},
                        {"path": benchmark(b / "g1.tsv", (720.0, "-")), "gpus": 1},
                        {"path": benchmark(b / "gather.tsv", (36.0, 800.0)), "gpus": 0}],
         "outputs": [blob(tmp_path / "grads" / "c1.pt", 300), blob(tmp_path / "grads" / "c2.pt", 200)]},
        {"model": "m", "dataset": "d", "stage": "selection", "item": "rose-shp-5shot",
         "benchmarks": [{"path": benchmark(b / "influence.tsv", (5.0, 50.0)), "gpus": 0},
                        {"path": str(b / "never-ran.tsv"), "gpus": 0}],
         "outputs": [blob(tmp_path / "influence.parquet", 10), str(tmp_path / "missing.ids")]},
        {"model": "m", "dataset": "d", "stage": "gradient features", "item": "rose-shp-5shot",
         "benchmarks": [{"path": benchmark(b / "val.tsv", (90.0, 700.0)), "gpus": 1}],
         "outputs": [blob(tmp_path / "grads" / "val.pt", 7)]},
    ]
    table = cost_table(groups)
    # the stage's rows together, in first-appearance order, then its total
    assert list(zip(table.stage, table.item)) == [
        ("warmup", "pool"), ("gradient features", "pool"), ("gradient features", "rose-shp-5shot"),
        ("gradient features", "total"), ("selection", "rose-shp-5shot")]
    rows = {(r.stage, r.item): r for r in table.itertuples()}
    warmup = rows["warmup", "pool"]
    assert (warmup.jobs, warmup.wall_s, warmup.max_rss_mb, warmup.gpu_hours, warmup.bytes) == (1, 1800.0, 2000.0, 1.0, 1000)
    grads = rows["gradient features", "pool"]
    # 360 + 720 + 36 s; GPU-hours (360 + 720) / 3600 = 0.3 (the gather job had no GPU); RSS max of 500, n/a, 800
    assert (grads.jobs, grads.wall_s, grads.max_rss_mb, grads.bytes) == (3, 1116.0, 800.0, 500)
    assert grads.gpu_hours == pytest.approx(0.3)
    total = rows["gradient features", "total"]
    assert (total.jobs, total.wall_s, total.max_rss_mb, total.bytes) == (4, 1206.0, 800.0, 507)
    assert total.gpu_hours == pytest.approx(0.325)
    selection = rows["selection", "rose-shp-5shot"]
    # the job that never ran is not counted; a missing output makes the bytes unknown; no GPU → no GPU-hours
    assert (selection.jobs, selection.wall_s) == (1, 5.0)
    assert math.isnan(selection.bytes) and math.isnan(selection.gpu_hours)

    shown = format_cost(table)
    assert list(shown.columns) == ["model", "dataset", "stage", "item", "jobs", "wall time (s)", "max RSS (MB)",
                                   "GPU-hours", "stored (MiB)"]
    last = shown.iloc[-1]
    assert (last["wall time (s)"], last["GPU-hours"], last["stored (MiB)"]) == ("5.0", "n/a", "n/a")
    assert shown.iloc[0]["GPU-hours"] == "1.0000" and shown.iloc[0]["stored (MiB)"] == "0.00"


def test_stage_cost_without_any_benchmark_is_unknown(tmp_path):
    cost = stage_cost([{"path": str(tmp_path / "no.tsv"), "gpus": 1}], [])
    assert cost["jobs"] == 0 and all(math.isnan(cost[k]) for k in ("wall_s", "max_rss_mb", "gpu_hours", "bytes"))


# ----------------------------------------------------------------------------- the whole pipeline, per paper


def test_pipeline_cost_rows_per_model_dataset_rule_and_per_paper(tmp_path, monkeypatch):
    """Jobs of a DAG as the cost rule reads it: rows of each rule's jobs by model × dataset, GPU-hours only for GPU rules,
    n/a where a job has no benchmark file yet, the papers' view by phase with a job shared by two papers in both."""
    monkeypatch.chdir(tmp_path)

    def job(rule, phase, gpus, deps, outputs=(), temp=(), **wildcards):
        bench = "/".join(["benchmarks", rule, *(wildcards[k] for k in ("model", "dataset", "shard", "recipe")
                                                 if k in wildcards)]) + ".tsv"
        return DagJob(rule=rule, wildcards=wildcards, benchmark=bench, phase=phase, outputs=tuple(outputs),
                      temp_outputs=tuple(temp), gpus=gpus, dependencies=tuple(deps))

    dag = [
        job("materialise_model", "setup", 0, [], ["resources/models/m"], model="m"),
        job("grad_features", "method preparation", 2, [0], temp=["g0.pt"], model="m", dataset="d", shard="0"),
        job("grad_features", "method preparation", 2, [0], temp=["g1.pt"], model="m", dataset="d", shard="1"),
        job("train", "training", 1, [0], ["results/m/d/runs/sft/model"], model="m", dataset="d", recipe="sft"),
        job("train", "training", 1, [0], ["results/m/e/runs/sft/model"], model="m", dataset="e", recipe="sft"),
        job("train", "training", 1, [0, 1, 2], ["results/m/d/runs/less_5/model"], model="m", dataset="d",
            recipe="less_5"),
    ]
    benchmark(Path("benchmarks/materialise_model/m.tsv"), (30.0, 400.0))
    blob(Path("resources/models/m/model.safetensors"), 2**20)
    benchmark(Path("benchmarks/grad_features/m/d/0.tsv"), (1800.0, 900.0))
    benchmark(Path("benchmarks/grad_features/m/d/1.tsv"), (3600.0, 1000.0))
    benchmark(Path("benchmarks/train/m/d/sft.tsv"), (720.0, 2000.0))
    blob(Path("results/m/d/runs/sft/model/adapter.bin"), 3 * 2**19)
    benchmark(Path("benchmarks/train/m/d/less_5.tsv"), (360.0, 1500.0))
    blob(Path("results/m/d/runs/less_5/model/adapter.bin"), 2**19)
    # train on dataset e has not run: its row is n/a, not 0

    jobs = cost_jobs(dag, {"sft": ["SFT"], "less_5": ["LESS / ROSE"]})
    assert [j["benchmark"]["path"] for j in jobs][:2] == ["benchmarks/materialise_model/m.tsv",
                                                         "benchmarks/grad_features/m/d/0.tsv"]
    assert jobs[0]["dataset"] == "—" and jobs[-1]["outputs"] == ["results/m/d/runs/less_5/model"]

    table = with_grand_total(cost_table(pipeline_groups(jobs, rule_order(jobs))))
    assert list(zip(table.model, table.dataset, table.stage)) == [
        ("m", "—", "materialise_model"), ("m", "d", "grad_features"), ("m", "d", "train"), ("m", "e", "train"),
        ("all", "all", "whole pipeline")]
    shown = format_cost(table).set_index(["dataset", "stage"])
    # by hand: materialise 30 s on CPU, 1 MiB; gradients 1800 + 3600 s × 2 GPUs = 3 GPU-hours, temporary outputs;
    # train on d: 720 + 360 s × 1 GPU = 0.3 GPU-hours, 1.5 + 0.5 MiB
    assert tuple(shown.loc[("—", "materialise_model"), ["jobs", "wall time (s)", "max RSS (MB)", "GPU-hours",
                                                         "stored (MiB)"]]) == (1, "30.0", "400.0", "n/a", "1.00")
    assert tuple(shown.loc[("d", "grad_features"), ["jobs", "wall time (s)", "GPU-hours", "stored (MiB)"]]) == (
        2, "5400.0", "3.0000", "n/a")
    assert tuple(shown.loc[("d", "train"), ["jobs", "wall time (s)", "max RSS (MB)", "GPU-hours", "stored (MiB)"]]) == (
        2, "1080.0", "2000.0", "0.3000", "2.00")
    assert tuple(shown.loc[("e", "train"), ["jobs", "wall time (s)", "max RSS (MB)", "GPU-hours", "stored (MiB)"]]) == (
        0, "n/a", "n/a", "n/a", "n/a")
    # a stage not yet measured makes the pipeline's total unknown: never a sum that leaves it out
    assert tuple(shown.loc[("all", "whole pipeline"), ["jobs", "wall time (s)", "GPU-hours"]]) == (5, "n/a", "n/a")

    papers = cost_table(paper_groups(jobs, ["SFT", "SFTMix", "LESS / ROSE"], ["setup", "method preparation",
                                                                             "training"]))
    rows = {(r.stage, r.item): r for r in papers.itertuples()}
    # SFTMix has no job; the base model counts under both SFT and LESS / ROSE
    assert list(rows) == [("SFT", "setup"), ("SFT", "training"), ("SFT", "total"), ("LESS / ROSE", "setup"),
                          ("LESS / ROSE", "method preparation"), ("LESS / ROSE", "training"), ("LESS / ROSE", "total")]
    less = rows["LESS / ROSE", "total"]
    # 30 + 5400 + 360 s; GPU-hours 3 + 0.1, the CPU job adding none; bytes n/a (temporary gradient features)
    assert (less.jobs, less.wall_s, less.max_rss_mb) == (4, 5790.0, 1500.0)
    assert less.gpu_hours == pytest.approx(3.1) and math.isnan(less.bytes)
    # within a group, a job without a benchmark file is not counted (jobs says how many were measured)
    assert (rows["SFT", "training"].jobs, rows["SFT", "total"].wall_s) == (1, 750.0)


# ----------------------------------------------------------------------------- curve and shots


def scores_file(root: Path, recipe: str, bench: str, value: float, low: float, high: float) -> str:
    path = root / "results" / "m" / "d" / "runs" / recipe / "scores" / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": bench, "metric": "accuracy", "value": value, "ci_low": low,
                                "ci_high": high, "n": 50}))
    return str(path)


RECIPES = {
    "rose_1s_10": {"selector": "rose-shp-1shot", "name": "rose", "fraction": 0.1, "shots": 1, "validation": "shp"},
    "rose_5s_10": {"selector": "rose-shp-5shot", "name": "rose", "fraction": 0.1, "shots": 5, "validation": "shp"},
    "rose_5s_50": {"selector": "rose-shp-5shot", "name": "rose", "fraction": 0.5, "shots": 5, "validation": "shp"},
    "less_5s_10": {"selector": "less-shp-5shot", "name": "less", "fraction": 0.1, "shots": 5, "validation": "shp"},
    "random_10": {"selector": "random-s0", "name": "random", "fraction": 0.1, "shots": None, "validation": None},
    "sft": {"selector": "full", "name": "full", "fraction": 1.0, "shots": None, "validation": None},
}


@pytest.fixture
def frame(tmp_path):
    paths = []
    for k, recipe in enumerate(RECIPES):
        paths.append(scores_file(tmp_path, recipe, "em", 40.0 + k, 35.0 + k, 45.0 + k))
    paths.append(scores_file(tmp_path, "rose_5s_10", "mc", 61.0, 55.0, 66.0))
    recipes = {r: {**d, "objective": "ntp", "group": "g1"} for r, d in RECIPES.items()}
    return curve_frame(load_scores(paths), recipes)


def test_shots_table_puts_each_number_of_shots_in_its_column(frame):
    table = shots_table(frame, ["em", "mc"])
    assert list(table.columns) == ["model", "dataset", "method", "validation", "objective", "fraction", "benchmark",
                                   "1-shot", "5-shot"]
    cells = {(r.method, r.fraction, r.benchmark): (r[-2], r[-1]) for r in table.itertuples(index=False)}
    assert cells == {
        ("less", 0.1, "em"): ("n/a", "43.00 [38.0, 48.0]"),
        ("rose", 0.1, "em"): ("40.00 [35.0, 45.0]", "41.00 [36.0, 46.0]"),
        ("rose", 0.1, "mc"): ("n/a", "61.00 [55.0, 66.0]"),
        ("rose", 0.5, "em"): ("n/a", "42.00 [37.0, 47.0]"),
    }


def test_fraction_curve_draws_png_and_pdf(frame, tmp_path):
    out = fraction_curve(frame, ["em", "mc"], tmp_path / "fig" / "curve")
    assert [p.suffix for p in out] == [".png", ".pdf"]
    assert all(p.stat().st_size > 1000 for p in out)
    empty = fraction_curve(frame.iloc[0:0], ["em"], tmp_path / "fig" / "empty")
    assert all(p.stat().st_size > 1000 for p in empty)


def test_a_fraction_axis_of_one_value_is_no_figure_and_the_report_says_so():
    # the selection runs' fractions are the axis (the full-data run is a line on it): 0.1 and 0.5 here
    assert draws_fraction_curve(RECIPES) and fraction_curve_note(RECIPES) == ""
    at_10 = {r: d for r, d in RECIPES.items() if d["fraction"] != 0.5}  # 0.1 alone, beside the full data at 1.0
    assert not draws_fraction_curve(at_10)
    assert fraction_curve_note(at_10) == (" No fraction curve: the selection runs have one fraction (0.1); it is drawn "
                                          "when they have two or more.")
    assert "no selection run" in fraction_curve_note({"sft": RECIPES["sft"]})


def test_curve_frame_keeps_only_described_recipes(frame, tmp_path):
    assert sorted(frame.recipe.unique()) == sorted(RECIPES)
    extra = scores_file(tmp_path, "other", "em", 1.0, 0.0, 2.0)
    merged = curve_frame(load_scores([extra]), {r: {**d, "objective": "ntp", "group": "g1"} for r, d in RECIPES.items()})
    assert merged.empty


def test_selection_main_table_beside_the_less_papers_numbers(frame):
    table = selection_main_table(frame, {"em": "em", "mc": "mmlu"}, paper_numbers("less"))
    # our benchmarks, then the paper's benchmarks we did not run (mmlu is our "mc")
    assert list(table.columns) == ["model", "dataset", "method", "recipe", "objective", "em", "mc", "tydiqa", "bbh",
                                   "source"]
    ours = table[table.source == "ours"].set_index("recipe")
    # full data, random, then LESS and ROSE subsets by fraction
    assert list(ours.index) == ["sft", "random_10", "less_5s_10", "rose_1s_10", "rose_5s_10", "rose_5s_50"]
    assert list(ours.method) == ["full data", "random 10%", "LESS 10%", "ROSE 10%", "ROSE 10%", "ROSE 50%"]
    assert ours.loc["rose_5s_10", "mc"] == "61.00 [55.0, 66.0]" and ours.loc["sft", "em"] == "45.00 [40.0, 50.0]"
    # a run with no score on a benchmark, and a paper benchmark we did not run: n/a, never blank or 0
    assert ours.loc["rose_1s_10", "mc"] == "n/a" and (ours[["tydiqa", "bbh"]] == "n/a").all().all()
    paper = table[table.source != "ours"].iloc[0]
    assert paper.source == "LESS (arXiv 2402.04333), secondary" and paper.method == "LESS 5%"
    assert paper.dataset == "LESS pool (Flan v2, CoT, Dolly, OASST1)"
    assert (paper.mc, paper.tydiqa, paper.bbh, paper.em) == ("50.20", "56.20", "41.50", "n/a")


def test_fraction_curve_leaves_out_panels_without_a_selection_run(frame, tmp_path):
    from sftlab.report.selection import _panels

    only_full = scores_file(tmp_path, "sft", "exam", 30.0, 25.0, 35.0)
    frame = pd.concat([frame, curve_frame(load_scores([only_full]), {"sft": {**RECIPES["sft"], "objective": "ntp",
                                                                            "group": "g1"}})])
    assert [key[3] for key, _ in _panels(frame, ["em", "mc", "exam"])] == ["em", "mc"]


def test_grid_puts_panels_in_rows_of_three():
    from sftlab.report.figures import grid

    fig, axes = grid(5, ncols=3)
    assert len(axes) == 5 and len(fig.axes) == 5
    assert len({round(ax.get_position().y0, 2) for ax in axes}) == 2  # two rows


def test_figures_keep_a_dot_in_their_stem(tmp_path):
    """A figure named after a model such as Llama-3.1-8B is written whole, not cut at its last dot."""
    import matplotlib.pyplot as plt

    from sftlab.report.figures import save

    out = save(plt.figure(), tmp_path / "tsne_Llama-3.1-8B_alpaca")
    assert [p.name for p in out] == ["tsne_Llama-3.1-8B_alpaca.png", "tsne_Llama-3.1-8B_alpaca.pdf"]
    assert all(p.stat().st_size > 0 for p in out)
