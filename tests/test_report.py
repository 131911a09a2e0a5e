"""The main table from Scores files in a results tree: values from the files, ``n/a`` where a result is missing."""

import csv
import json

import pytest

from sftlab.report.tables import MISSING, load_scores, main_table, run_of, write_table

RUNS = [("tiny", "demo", "sft"), ("tiny", "demo", "sft_random50"), ("tiny", "alpaca", "sft")]
BENCHMARKS = ["heldout_em", "mc_demo"]


def write_score(root, model, dataset, recipe, benchmark, **score):
    path = root / "results" / model / dataset / "runs" / recipe / "scores" / f"{benchmark}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": benchmark, **score}))
    return path


@pytest.fixture
def scores(tmp_path):
    return [
        write_score(tmp_path, "tiny", "demo", "sft", "heldout_em", metric="exact_match", value=41.6667,
                    ci_low=30.25, ci_high=53.75, n=60),
        write_score(tmp_path, "tiny", "demo", "sft", "mc_demo", metric="acc", value=25.0, ci_low=None, ci_high=None,
                    n=8),
        # a score of exactly zero is a result, not a missing one
        write_score(tmp_path, "tiny", "demo", "sft_random50", "heldout_em", metric="exact_match", value=0.0,
                    ci_low=0.0, ci_high=5.96, n=60),
        # a run of another dataset with a benchmark nobody asked for
        write_score(tmp_path, "tiny", "alpaca", "sft", "mt_bench", metric="score", value=3.1),
    ]


def test_load_scores_reads_the_run_from_the_path(scores):
    frame = load_scores(scores)
    assert list(zip(frame.model, frame.dataset, frame.recipe, frame.benchmark)) == [
        ("tiny", "demo", "sft", "heldout_em"), ("tiny", "demo", "sft", "mc_demo"),
        ("tiny", "demo", "sft_random50", "heldout_em"), ("tiny", "alpaca", "sft", "mt_bench")]
    assert frame.value.tolist() == [41.6667, 25.0, 0.0, 3.1]


def test_main_table_cells(scores):
    table = main_table(load_scores(scores), RUNS, BENCHMARKS)
    assert list(table.columns) == ["model", "dataset", "recipe", "heldout_em", "mc_demo"]
    assert table.values.tolist() == [
        ["tiny", "demo", "sft", "41.67 [30.2, 53.8]", "25.00"],
        ["tiny", "demo", "sft_random50", "0.00 [0.0, 6.0]", "n/a"],
        ["tiny", "alpaca", "sft", "n/a", "n/a"],
    ]


def test_no_scores_at_all_gives_a_row_of_na_per_run():
    table = main_table(load_scores([]), RUNS, BENCHMARKS)
    assert len(table) == 3
    assert (table[BENCHMARKS] == MISSING).all().all()
    assert MISSING == "n/a"


def test_a_missing_value_in_a_file_is_na(tmp_path):
    path = write_score(tmp_path, "tiny", "demo", "sft", "heldout_em", metric="exact_match", value=None, n=0)
    table = main_table(load_scores([path]), RUNS[:1], ["heldout_em"])
    assert table.loc[0, "heldout_em"] == "n/a"


def test_write_table(scores, tmp_path):
    table = main_table(load_scores(scores), RUNS, BENCHMARKS)
    stem = tmp_path / "reports" / "tables" / "main"
    paths = write_table(table, stem, "Main results & more: value [95% CI]")
    assert sorted(p.name for p in paths) == ["main.csv", "main.md", "main.tex"]
    assert all(p.exists() for p in paths)

    with open(stem.with_suffix(".csv")) as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["model", "dataset", "recipe", "heldout_em", "mc_demo"],
        ["tiny", "demo", "sft", "41.67 [30.2, 53.8]", "25.00"],
        ["tiny", "demo", "sft_random50", "0.00 [0.0, 6.0]", "n/a"],
        ["tiny", "alpaca", "sft", "n/a", "n/a"],
    ]

    md = stem.with_suffix(".md").read_text().splitlines()
    assert md[0] == "Main results & more: value [95% CI]"
    table_lines = [line for line in md if line.startswith("|")]
    assert len(table_lines) == 2 + 3  # header, rule, a line per run
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table_lines]
    assert cells[0] == ["model", "dataset", "recipe", "heldout_em", "mc_demo"]
    assert cells[3] == ["tiny", "demo", "sft_random50", "0.00 [0.0, 6.0]", "n/a"]

    tex = stem.with_suffix(".tex").read_text()
    assert "\\begin{tabular}" in tex and "\\end{tabular}" in tex
    # the caption is escaped too: a bare % would comment out the rest of the line, braces included
    assert "\\caption{Main results \\& more: value [95\\% CI]}" in tex
    assert "sft\\_random50" in tex
    assert "\\label{tab:main}" in tex
    assert tex.count("n/a") == 3


def test_write_table_with_no_runs(tmp_path):
    table = main_table(load_scores([]), [], BENCHMARKS)
    paths = write_table(table, tmp_path / "main", "Main results")
    assert "(no runs)" in (tmp_path / "main.md").read_text()
    assert all(p.exists() for p in paths)


def test_seed_table_mean_std_and_paired_test(tmp_path):
    from scipy import stats

    from sftlab.report.tables import seed_table

    sft, mix = [50.0, 52.0, 54.0], [55.0, 58.0, 57.0]
    paths = [write_score(tmp_path, "m", "d", f"sft_s{s}", "em", metric="em", value=v) for s, v in enumerate(sft)]
    paths += [write_score(tmp_path, "m", "d", f"mix_s{s}", "em", metric="em", value=v) for s, v in enumerate(mix)]
    runs = [("m", "d", f"{r}_s{s}") for r in ("sft", "mix", "other") for s in range(3)]
    seeds = {f"{r}_s{s}": (r, s) for r in ("sft", "mix", "other") for s in range(3)}
    table = seed_table(load_scores(paths), runs, ["em"], seeds, "sft").set_index("recipe")
    # by hand: sft mean 52, std 2; mix mean 56.67, std sqrt(((55-56.67)² + (58-56.67)² + (57-56.67)²) / 2) = 1.53
    assert table.loc["sft", "em"] == "52.00 ± 2.00 (n=3)" and table.loc["sft", "em p"] == "—"
    assert table.loc["mix", "em"] == "56.67 ± 1.53 (n=3)"
    # differences 5, 6, 3: mean 4.667, sd 1.528, t = 4.667 / (1.528 / sqrt 3) = 5.29 with 2 dof
    t = 4.666667 / (1.527525 / 3 ** 0.5)
    assert float(table.loc["mix", "em p"]) == pytest.approx(2 * stats.t.sf(t, 2), abs=1e-3)
    assert table.loc["other", "em"] == MISSING and table.loc["other", "em p"] == MISSING
    assert table.loc["mix", "seeds"] == 3


def test_collapse_seeds_folds_per_seed_runs_into_their_recipe(tmp_path):
    from sftlab.report.tables import collapse_seed_runs, collapse_seeds

    paths = [write_score(tmp_path, "m", "d", f"mix_s{s}", "em", metric="em", value=v)
             for s, v in enumerate([55.0, 58.0, 57.0])]
    paths.append(write_score(tmp_path, "m", "d", "solo_s0", "em", metric="em", value=40.0))
    paths.append(write_score(tmp_path, "m", "d", "plain", "em", metric="em", value=30.0))
    seeds = {f"mix_s{s}": ("mix", s) for s in range(3)} | {"solo_s0": ("solo", 0)}
    folded = collapse_seeds(load_scores(paths), seeds).set_index("recipe")
    # by hand: mean 56.667, s = 1.5275, t(0.975, 2) = 4.3027 → half-width 4.3027 · 1.5275 / √3 = 3.7945
    assert folded.loc["mix", "value"] == pytest.approx(56.6667, abs=1e-4)
    assert folded.loc["mix", "ci_low"] == pytest.approx(56.6667 - 3.7945, abs=1e-3)
    assert folded.loc["mix", "ci_high"] == pytest.approx(56.6667 + 3.7945, abs=1e-3)
    assert folded.loc["mix", "seeds"] == 3 and folded.loc["mix", "source"].count(";") == 2
    assert folded.loc["solo", "value"] == 40.0 and folded.loc["solo", "seeds"] == 1
    assert folded.loc["plain", "value"] == 30.0
    runs = [{"model": "m", "dataset": "d", "recipe": f"mix_s{s}", "objective": {"name": "sftmix"}} for s in range(3)]
    assert collapse_seed_runs(runs, seeds) == [{"model": "m", "dataset": "d", "recipe": "mix",
                                                "objective": {"name": "sftmix"}}]


def test_a_note_goes_under_the_markdown_table_only(scores, tmp_path):
    table = main_table(load_scores(scores), RUNS, BENCHMARKS)
    write_table(table, tmp_path / "main", "Main results", note="Judges: tiny_judge (hf:tiny, demo quality): 8 requests")
    md = (tmp_path / "main.md").read_text().splitlines()
    assert md[-1] == "Judges: tiny_judge (hf:tiny, demo quality): 8 requests" and md[-2] == ""
    assert md[-3].startswith("| tiny ")  # right under the table's last row
    assert "Judges" not in (tmp_path / "main.csv").read_text()


def test_a_zero_is_a_result_and_a_missing_value_is_na():
    from sftlab.report.tables import fmt_cell

    assert fmt_cell(0.0) == "0.00" and fmt_cell(0.0, 0.0, 0.0) == "0.00 [0.0, 0.0]"
    assert fmt_cell(None) == fmt_cell(float("nan")) == fmt_cell(float("nan"), 1.0, 2.0) == MISSING
    assert fmt_cell(41.6667, float("nan"), 50.0) == "41.67"


def test_the_run_is_read_from_its_directory():
    assert run_of("results/llama/alpaca/runs/sft_lr1e-05") == ("llama", "alpaca", "sft_lr1e-05")
    with pytest.raises(ValueError, match="not a run's directory"):
        run_of("results/llama/alpaca/sft_lr1e-05")
