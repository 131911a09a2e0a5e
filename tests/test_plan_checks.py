"""Mistakes refused before the first job, naming the key: duplicate YAML keys, names that point nowhere, more shards
than examples, a demo family asked for more items than it has, a judge's unset key variable."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftlab.config import ConfigError, check_shards_fit, prepare, read_yaml
from sftlab.data.demo import FAMILY_CAPACITY, WORDS
from sftlab.data.prepare import count_local_rows, pool_bound

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = {
    "models": {"m": {"source": "random", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "intermediate_size": 16}},
    "datasets": {"d": {"source": "demo", "per_family": 2, "heldout": 1, "preference_pairs": 1}},
    "recipes": {"sft": {}},
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft"]}},
}


def changed(change):
    raw = copy.deepcopy(MINIMAL)
    change(raw)
    return raw


def snakemake(workdir: Path, configfile: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(configfile), *extra], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)


DUPLICATE = """\
models:
  m: {source: random}
datasets:
  d: {source: demo}
recipes:
  sft: {}
  sft:
    training: {learning_rate: 1.0e-4}
experiments:
  e: {models: [m], datasets: [d], recipes: [sft]}
"""


def test_duplicate_keys_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(DUPLICATE)
    with pytest.raises(ConfigError, match=r"c\.yaml:7: duplicate key 'sft' \(first at line 6\)"):
        read_yaml(path)
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n")  # a merge key is no repetition
    assert read_yaml(path) == {"a": {"b": 1}, "c": {"b": 1, "d": 2}}


def test_the_workflow_refuses_a_config_file_with_duplicate_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(DUPLICATE)
    proc = snakemake(tmp_path, path, "-n")
    assert proc.returncode != 0 and "c.yaml:7: duplicate key 'sft'" in proc.stderr + proc.stdout


def test_reference_model_must_exist():
    with pytest.raises(ConfigError, match=r"config key reference\.model: no model named 'llama'"):
        prepare(changed(lambda c: c.update(reference={"model": "llama"})))
    prepare(changed(lambda c: c.update(reference={"model": "m"})))


def test_report_baseline_must_name_a_recipe():
    with pytest.raises(ConfigError, match=r"config key report\.baseline: no recipe named 'sfft'"):
        prepare(changed(lambda c: c.update(report={"baseline": "sfft"})))
    # the default `sft` may be absent: a config without that recipe has no paired tests
    prepare(changed(lambda c: c.update(recipes={"other": {}}, experiments={
        "e": {"models": ["m"], "datasets": ["d"], "recipes": ["other"]}})))


def test_demo_family_capacity_is_the_number_of_distinct_instructions():
    n = len(set(WORDS))
    assert FAMILY_CAPACITY["reverse"] == FAMILY_CAPACITY["count"] == n
    # a + b: 98 × 98 ordered pairs over 2..99; a - b: unordered pairs with a ≥ b, 98 · 99 / 2
    assert FAMILY_CAPACITY["arithmetic"] == sum(1 for a in range(2, 100) for b in range(2, 100)) + sum(
        1 for a in range(2, 100) for b in range(2, a + 1))


def test_demo_heldout_beyond_a_family_is_refused():
    n = len(set(WORDS))
    with pytest.raises(ConfigError, match=rf"config key datasets\.d\.heldout: .* family 'reverse' has only {n}"):
        prepare(changed(lambda c: c["datasets"]["d"].update(per_family=40, heldout=n)))
    # without the word families the same numbers fit
    prepare(changed(lambda c: c["datasets"]["d"].update(per_family=40, heldout=n, families=["arithmetic", "sort"])))


def test_pool_bounds():
    assert pool_bound({"source": "demo", "per_family": 12, "families": None}) == 72
    assert pool_bound({"source": "demo", "per_family": 5, "families": ["sort", "count"]}) == 10
    assert pool_bound({"source": "hub", "path": "x/y", "format": "alpaca", "heldout": 0}) is None
    assert pool_bound({"source": "hub", "path": "x/y", "format": "alpaca", "heldout": 10, "max_examples": 100}) == 90


def test_local_rows_are_counted(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"a": 1}\n\n{"a": 2}\n  \n{"a": 3}\n')
    js = tmp_path / "a.json"
    js.write_text(json.dumps([{"a": i} for i in range(7)]))
    csv = tmp_path / "a.csv"
    csv.write_text("instruction,output\nx,y\n\"multi\nline\",z\n")
    assert (count_local_rows(jsonl), count_local_rows(js), count_local_rows(csv)) == (3, 7, 2)
    assert count_local_rows(tmp_path / "missing.jsonl") is None
    assert pool_bound({"source": "local", "path": str(js), "format": "alpaca", "heldout": 2, "max_examples": 6}) == 4


def dtm(k, fraction=1.0):
    return changed(lambda c: c["recipes"].update(sft={"selection": {"name": "random", "fraction": fraction},
                                                      "composition": {"name": "disperse_merge", "k": k}}))


def test_more_shards_than_selected_examples_is_refused():
    # 72 examples × 0.25 → at most 18 selected (ceil): k = 18 fits, k = 19 does not
    check_shards_fit(prepare(dtm(18, 0.25)), {"d": 72})
    with pytest.raises(ConfigError, match=r"config key recipes\.sft\.composition\.k: 19 shards, .* at most 18"):
        check_shards_fit(prepare(dtm(19, 0.25)), {"d": 72})
    check_shards_fit(prepare(dtm(500)), {"d": None})  # hub data: known only after preparation


def test_the_workflow_refuses_k_beyond_the_pool_before_planning_jobs(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(dtm(500)))
    proc = snakemake(tmp_path, path, "-n")
    out = proc.stderr + proc.stdout
    assert proc.returncode != 0 and "config key recipes.sft.composition.k: 500 shards" in out
    assert "at most 12 examples" in out  # 2 per family × 6 families


def test_an_unset_judge_key_stops_the_run_before_the_first_job(tmp_path):
    raw = changed(lambda c: (
        c.update(judges={"gpt": {"type": "openai", "model": "gpt-4", "api_key_env": "SFTLAB_TEST_UNSET_KEY",
                                 "base_url": "http://127.0.0.1:9/v1"}},
                 benchmarks={"pref": {"type": "preference", "judge": "gpt", "dataset": "d"}}),
        c["experiments"]["e"].update(benchmarks=["pref"])))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    os.environ.pop("SFTLAB_TEST_UNSET_KEY", None)
    assert snakemake(tmp_path, path, "-n").returncode == 0  # a dry run needs no key
    proc = snakemake(tmp_path, path, "--cores", "1")
    assert proc.returncode != 0
    assert "config key judges.gpt.api_key_env: the environment variable it names is not set" in proc.stderr
    # the variable's name (which might be a pasted key) is never repeated
    assert "SFTLAB_TEST_UNSET_KEY" not in proc.stderr + proc.stdout
    assert not any("SFTLAB_TEST_UNSET_KEY" in p.read_text(errors="replace")
                   for p in (tmp_path / ".snakemake" / "log").glob("*.log"))
    # no job ran: nothing under results/ but the code fingerprints the plan writes (results/.code)
    assert [p for p in (tmp_path / "results").rglob("*") if ".code" not in p.parts] == []
    assert not (tmp_path / "resources").exists()
