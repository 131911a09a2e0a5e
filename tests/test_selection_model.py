"""`selection.model`: a selection computed with another model's features than the trained one's (LESS-T), once for
every recipe and model that trains on it."""

import copy

import pandas as pd
import pytest
import yaml

from _plan import ROOT, dry_run_jobs, plan
from sftlab.config import ConfigError, prepare, selection_model
from sftlab.report.selection import method_label, selection_main_table

TINY = {"source": "random", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}
CONFIG = {
    # `small` selects; `big` and `other` train on its selection
    "models": {"small": {**TINY, "seed": 0}, "big": {**TINY, "seed": 1}, "other": {**TINY, "seed": 2}},
    "datasets": {"demo": {"source": "demo", "per_family": 4, "heldout": 1, "preference_pairs": 2}},
    "validation": {"target": {"dataset": "demo", "split": "pairs", "subtasks": ["arithmetic"], "shots": 2}},
    "warmup": {"fraction": 0.25, "training": {"epochs": 2}},
    "gradients": {"dim": 16, "shards": 2, "max_tokens": 512},
    "training": {"max_length": 64, "epochs": 1, "finetuning": "lora", "lora": {"r": 4, "alpha": 8}},
    "reference": {"checkpoints": [1, 2]},
    "recipes": {
        "less_t": {"selection": {"name": "less", "validation": "target", "fraction": 0.25, "model": "small"}},
        # the same selection, another objective: one selection job for both recipes
        "less_t_lr": {"selection": {"name": "less", "validation": "target", "fraction": 0.25, "model": "small"},
                      "training": {"learning_rate": 1.0e-3}},
        "sftmix_t": {"objective": {"name": "sftmix"}, "selection": {"name": "full", "model": "small"}},
    },
    "experiments": {"e": {"models": ["big", "other"], "datasets": ["demo"], "recipes": ["less_t", "less_t_lr", "sftmix_t"]}},
}


def _jobs(tmp_path, config):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    proc = plan(configfile, tmp_path / "work")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return dry_run_jobs(proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory):
    return _jobs(tmp_path_factory.mktemp("selmodel"), CONFIG)


def by_rule(jobs, rule):
    return [j for j in jobs if j["rule"] == rule]


def test_gradient_features_and_warmup_come_from_the_selection_models_checkpoints(jobs):
    warmups = by_rule(jobs, "warmup")
    assert [j["wildcards"]["model"] for j in warmups] == ["small"]
    assert "resources/models/small" in warmups[0]["input"]
    grads = by_rule(jobs, "grad_features")
    # 2 warmup epochs × 2 shards, all of the selection model, each reading its own warmup checkpoint
    assert len(grads) == 4 and {j["wildcards"]["model"] for j in grads} == {"small"}
    for j in grads:
        assert f"results/small/demo/warmup/checkpoint-{j['wildcards']['c']}" in j["input"]
        assert "resources/models/small" in j["input"]
    assert {j["wildcards"]["model"] for j in by_rule(jobs, "validation_grad_features")} == {"small"}
    assert {j["wildcards"]["model"] for j in by_rule(jobs, "influence")} == {"small"}


def test_recipes_training_different_models_share_one_selection_job(jobs):
    less = [j for j in by_rule(jobs, "select_data") if j["wildcards"]["selector"].startswith("less")]
    assert len(less) == 1
    ids = "results/small/demo/selection/less-target-2shot/0.25.ids"
    assert less[0]["output"] == [ids]
    trains = {(j["wildcards"]["model"], j["wildcards"]["recipe"]): j for j in by_rule(jobs, "train")}
    assert set(trains) == {(m, r) for m in ("big", "other") for r in ("less_t", "less_t_lr", "sftmix_t")}
    for (m, r), j in trains.items():
        assert f"resources/models/{m}" in j["input"]
        if r != "sftmix_t":
            assert ids in j["input"]


def test_sftmix_confidence_is_the_selection_models_reference_run(jobs):
    # one reference run and confidence table, the selection model's; each trained model keeps its own log πref
    assert [j["wildcards"]["model"] for j in by_rule(jobs, "reference_run")] == ["small"]
    assert [j["wildcards"]["model"] for j in by_rule(jobs, "confidence")] == ["small"]
    for m in ("big", "other"):
        train = next(j for j in by_rule(jobs, "train") if j["wildcards"] == {"model": m, "dataset": "demo",
                                                                             "recipe": "sftmix_t"})
        assert "results/small/demo/confidence.parquet" in train["input"]
        assert f"results/{m}/demo/ref_logprobs.parquet" in train["input"]
        assert "results/small/demo/selection/full/1.ids" in train["input"]
    assert not any(j["wildcards"].get("model") in ("big", "other")
                   for j in jobs if j["rule"] in ("warmup", "grad_features", "influence", "reference_run", "confidence"))


def test_without_selection_model_each_trained_model_selects_for_itself(tmp_path):
    config = copy.deepcopy(CONFIG)
    for recipe in config["recipes"].values():
        del recipe["selection"]["model"]
    jobs = _jobs(tmp_path, config)
    assert sorted(j["wildcards"]["model"] for j in by_rule(jobs, "warmup")) == ["big", "other"]
    assert len([j for j in by_rule(jobs, "select_data") if j["wildcards"]["selector"].startswith("less")]) == 2


def test_an_unknown_selection_model_is_refused_naming_the_key():
    raw = copy.deepcopy(CONFIG)
    raw["recipes"]["less_t"]["selection"]["model"] = "llama2_7b"
    with pytest.raises(ConfigError, match=r"config key recipes\.less_t\.selection\.model: no model named 'llama2_7b'"):
        prepare(raw)


def test_a_selection_model_in_a_sweep_is_named_where_the_grid_gives_it():
    raw = copy.deepcopy(CONFIG)
    raw["sweeps"] = {"by_model": {"recipe": "less_t", "grid": {"selection.model": ["small", "nope"]}}}
    with pytest.raises(ConfigError, match=r"sweeps\.by_model\.grid: generated recipe .*selection\.model: no model"):
        prepare(raw)


def test_a_selection_model_where_no_model_features_are_read_is_refused():
    raw = copy.deepcopy(CONFIG)
    raw["recipes"]["rnd"] = {"selection": {"name": "random", "seed": 1, "fraction": 0.5, "model": "small"}}
    with pytest.raises(ConfigError, match=r"recipes\.rnd\.selection\.model: selector 'random' ranks by no model"):
        prepare(raw)


def test_selection_model_defaults_to_the_trained_model():
    cfg = prepare(copy.deepcopy(CONFIG))
    assert selection_model(cfg["recipes"]["less_t"]["selection"], "big") == "small"
    assert selection_model({"name": "less", "validation": "target"}, "big") == "big"


def test_the_main_table_labels_transferred_selections_less_t():
    assert method_label("less", 0.05, "llama2_7b") == "LESS-T 5% (selected by llama2_7b)"
    assert method_label("less", 0.05) == "LESS 5%"
    frame = pd.DataFrame([
        {"model": "llama2_13b", "dataset": "pool", "recipe": r, "benchmark": "mmlu", "value": v, "ci_low": None,
         "ci_high": None, "metric": "acc", "objective": "ntp", "name": name, "fraction": 0.05, "group": "g", "selection_model": sm}
        for r, v, name, sm in [("less_mmlu_t", 0.55, "less", "llama2_7b"), ("random", 0.53, "random", None),
                               ("less_self", 0.54, "less", "llama2_13b")]])
    paper = pd.DataFrame([{"model": "Llama-2-13B", "dataset": "x", "method": "LESS-T 5%", "mmlu": 54.0,
                           "source": "LESS"}])
    table = selection_main_table(frame, {"mmlu": "mmlu"}, paper)
    assert list(table.method) == ["random 5%", "LESS 5%", "LESS-T 5% (selected by llama2_7b)", "LESS-T 5%"]
    assert list(table.source) == ["ours", "ours", "ours", "LESS"]


def test_selection_hours_price_each_selecting_models_gpu_jobs_alone():
    from sftlab.config import read_yaml
    from sftlab.report.dag import DagJob
    from sftlab.report.gpu_cost import load_assumptions, rule_hours, selection_hours

    cfg = prepare(read_yaml(ROOT / "configs" / "paper" / "less.yaml"))
    cfg["gradients"]["cost"]["models"]["llama2_13b"] = {**cfg["gradients"]["cost"]["models"]["llama2_7b"],
                                                        "params": 13015864320, "layers": 40, "hidden_size": 5120}
    a = load_assumptions()

    def job(rule, model, phase="method preparation", gpus=1, **w):
        return DagJob(rule=rule, wildcards={"model": model, "dataset": "less_pool", **w}, benchmark=f"b/{rule}",
                      phase=phase, outputs=(), temp_outputs=(), gpus=gpus, dependencies=())

    small = [job("warmup", "llama2_7b"), job("grad_features", "llama2_7b", c="1", shard="0")]
    big = [job("grad_features", "llama2_13b", c="1", shard="0"), job("grad_features", "llama2_13b", c="2", shard="0")]
    # a recipe's training, a CPU job, a scoring in another phase: no selection by the model that selects
    other = [job("train", "llama2_13b", "training", recipe="less_mmlu_t"),
             job("influence", "llama2_7b", gpus=0, selector="less-mmlu-5shot"), job("ref_logprobs", "llama2_7b", "setup")]
    hours = selection_hours(small + big + other, cfg, a)
    assert hours == {("llama2_13b", "less_pool"): rule_hours(big, cfg, a),
                     ("llama2_7b", "less_pool"): rule_hours(small, cfg, a)}
    assert list(hours[("llama2_7b", "less_pool")]) == ["warmup", "grad_features"]
    # a larger model's features cost more per job (about 13.0 / 6.7 of the compute)
    assert hours[("llama2_13b", "less_pool")]["grad_features"] / 2 > hours[("llama2_7b", "less_pool")]["grad_features"]


def test_a_transferred_selection_is_a_curve_line_and_shots_row_of_its_own():
    from sftlab.report.selection import curve_frame, shots_table

    scores = pd.DataFrame([{"model": "llama2_13b", "dataset": "pool", "recipe": r, "benchmark": "mmlu", "value": v,
                            "ci_low": None, "ci_high": None, "metric": "acc"} for r, v in (("less_t", 0.55), ("less", 0.54))])
    info = {"selector": "less-mmlu-5shot", "name": "less", "fraction": 0.05, "shots": 5, "validation": "mmlu",
            "objective": "ntp", "group": "g"}
    frame = curve_frame(scores, {"less_t": {**info, "selection_model": "llama2_7b"},
                                 "less": {**info, "selection_model": "llama2_13b"}})
    assert dict(zip(frame.recipe, frame.selector)) == {"less_t": "less-mmlu-5shot (selected by llama2_7b)",
                                                       "less": "less-mmlu-5shot"}
    assert sorted(shots_table(frame, ["mmlu"]).method) == ["less", "less-T"]
