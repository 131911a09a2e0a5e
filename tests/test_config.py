"""Config validation: defaults from the schema, one clear error naming the key path, sweep expansion."""

import copy
from pathlib import Path

import pytest

from sftlab.config import ConfigError, load, prepare

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = {
    "models": {"m": {"source": "random"}},
    "datasets": {"d": {"source": "demo"}},
    "recipes": {"r": {}},
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["r"]}},
}


def with_changes(change):
    raw = copy.deepcopy(MINIMAL)
    change(raw)
    return raw


def test_minimal_config_gets_the_schema_defaults():
    cfg = prepare(copy.deepcopy(MINIMAL))
    assert cfg["training"]["learning_rate"] == 2e-5
    assert cfg["training"]["finetuning"] == "lora"
    assert cfg["training"]["lora"]["r"] == 8
    assert cfg["training"]["lora"]["alpha"] == 16
    assert cfg["training"]["batch_size"] == 8
    assert cfg["training"]["max_steps"] == -1
    assert cfg["training"]["report_to"] == "none"
    assert cfg["models"]["m"]["hidden_size"] == 64
    assert cfg["models"]["m"]["num_layers"] == 2
    assert cfg["datasets"]["d"]["per_family"] == 40
    assert cfg["datasets"]["d"]["degraded_share"] == 0.3
    assert cfg["datasets"]["d"]["on_bad_rows"] == "error"
    recipe = cfg["recipes"]["r"]
    assert recipe["selection"] == {"name": "full", "fraction": 1.0}
    assert recipe["objective"] == {"name": "ntp"}
    assert recipe["composition"] == {"name": "single"}
    # each recipe carries its effective training settings
    assert recipe["training"]["learning_rate"] == 2e-5
    assert recipe["training"]["lora"]["r"] == 8
    assert cfg["experiments"]["e"]["benchmarks"] == []
    assert cfg["sweeps"] == {} and cfg["benchmarks"] == {}


def test_prepare_does_not_modify_its_input():
    raw = copy.deepcopy(MINIMAL)
    prepare(raw)
    assert raw == MINIMAL


def test_recipe_training_overrides_the_global_settings():
    raw = with_changes(lambda c: (
        c.update(training={"learning_rate": 1e-4, "batch_size": 4, "lora": {"r": 16}}),
        c["recipes"].update(full={"training": {"finetuning": "full", "learning_rate": 3e-5}}),
        c["recipes"].update(lora4={"training": {"lora": {"alpha": 4}}}),
    ))
    cfg = prepare(raw)
    assert cfg["recipes"]["r"]["training"]["learning_rate"] == 1e-4
    assert cfg["recipes"]["r"]["training"]["lora"]["r"] == 16
    full = cfg["recipes"]["full"]["training"]
    assert (full["finetuning"], full["learning_rate"], full["batch_size"]) == ("full", 3e-5, 4)
    # a partial lora block keeps the other global lora settings
    lora = cfg["recipes"]["lora4"]["training"]["lora"]
    assert (lora["r"], lora["alpha"], lora["dropout"]) == (16, 4, 0.05)


def error_of(change) -> str:
    with pytest.raises(ConfigError) as info:
        prepare(with_changes(change))
    return str(info.value)


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(training={"learning_rate": "fast"}), "training.learning_rate"),
    (lambda c: c.update(training={"batch_size": 0}), "training.batch_size"),
    (lambda c: c.update(training={"finetuning": "qlora"}), "training.finetuning"),
    (lambda c: c.update(training={"report_to": "mlflow"}), "training.report_to"),
    (lambda c: c["recipes"].update(x={"training": {"learning_rate": "fast"}}), "recipes.x.training.learning_rate"),
    (lambda c: c["recipes"].update(x={"objective": {"name": "magic"}}), "recipes.x.objective.name"),
    (lambda c: c["recipes"].update(x={"selection": {"name": "oracle"}}), "recipes.x.selection.name"),
    (lambda c: c["recipes"].update(x={"selection": {"name": "random", "fraction": 1.5}}),
     "recipes.x.selection.fraction"),
    (lambda c: c["recipes"].update(x={"composition": {"name": "ensemble"}}), "recipes.x.composition.name"),
    (lambda c: c["recipes"].update(x={"objectve": {"name": "ntp"}}), "recipes.x.objectve"),
    (lambda c: c["models"]["m"].update(hidden_size="big"), "models.m.hidden_size"),
    (lambda c: c["models"].update(h={"source": "hub"}), "models.h"),
    (lambda c: c["datasets"].update(x={"source": "local", "path": "a.json", "format": "csv"}), "datasets.x.format"),
    (lambda c: c["datasets"]["d"].update(on_bad_rows="ignore"), "datasets.d.on_bad_rows"),
])
def test_schema_errors_name_the_key_path(change, key):
    message = error_of(change)
    assert f"config key {key}:" in message


@pytest.mark.parametrize("change, key", [
    (lambda c: c["recipes"]["r"].update(selection={"name": "random", "fracton": 0.1}), "recipes.r.selection.fracton"),
    (lambda c: c["datasets"]["d"].update(sed=1), "datasets.d.sed"),
    (lambda c: c["datasets"]["d"].update(heldot=3), "datasets.d.heldot"),
    (lambda c: c["datasets"]["d"].update(per_famly=3), "datasets.d.per_famly"),
    (lambda c: c["datasets"]["d"].update(path="x.json"), "datasets.d.path"),  # a key of another source
    (lambda c: c["models"]["m"].update(hiden_size=64), "models.m.hiden_size"),
    (lambda c: c["models"]["m"].update(repo_id="x/y"), "models.m.repo_id"),
    (lambda c: c.update(benchmarks={"b": {"type": "exact_match", "limt": 5}}), "benchmarks.b.limt"),
    (lambda c: c.update(benchmarks={"b": {"type": "lm_eval", "task": "mmlu", "judge": "j"}}), "benchmarks.b.judge"),
    (lambda c: c.update(judges={"j": {"type": "hf", "model": "m", "base_url": "x"}}), "judges.j.base_url"),
    (lambda c: c["recipes"]["r"].update(objective={"name": "minorsft", "bta": 1}), "recipes.r.objective.bta"),
    (lambda c: c.update(sweeps={"s": {"recipe": "r", "grid": {"selection.fracton": [0.1, 0.2]}}}),
     "sweeps.s.grid: generated recipe 'r_fracton0.1': config key selection.fracton"),
])
def test_unknown_keys_are_refused_in_every_object(change, key):
    message = error_of(change)
    assert f"config key {key}: unknown key" in message


def test_max_steps_has_a_maximum():
    assert "training.max_steps" in error_of(lambda c: c.update(training={"max_steps": 10**9}))


def test_unknown_objective_message_names_the_value():
    message = error_of(lambda c: c["recipes"].update(x={"objective": {"name": "magic"}}))
    assert "'magic'" in message


def test_unknown_top_level_key():
    message = error_of(lambda c: c.update(traning={"learning_rate": 1e-5}))
    assert "config key traning: unknown key" in message


@pytest.mark.parametrize("kind, table", [("models", "model"), ("datasets", "dataset"), ("benchmarks", "benchmark")])
def test_experiment_naming_a_missing_entry(kind, table):
    message = error_of(lambda c: c["experiments"]["e"].update({kind: ["nope"]}))
    assert message == f"config key experiments.e.{kind}[0]: no {table} named 'nope'"


def test_experiment_naming_a_missing_model_at_its_position():
    message = error_of(lambda c: c["experiments"]["e"].update(models=["m", "gone"]))
    assert "experiments.e.models[1]" in message and "'gone'" in message


def test_experiment_naming_a_missing_recipe():
    message = error_of(lambda c: c["experiments"]["e"].update(recipes=["r", "nope"]))
    assert "experiments.e.recipes[1]" in message and "'nope'" in message


def test_missing_required_section():
    message = error_of(lambda c: c.pop("recipes"))
    assert "recipes" in message


def test_sweep_over_a_missing_recipe():
    message = error_of(lambda c: c.update(sweeps={"s": {"recipe": "nope", "grid": {"training.learning_rate": [1e-5]}}}))
    assert "sweeps.s.recipe" in message and "'nope'" in message


def test_sweep_expands_to_the_grid_product_with_readable_names():
    raw = with_changes(lambda c: (
        c.update(sweeps={"lrbs": {"recipe": "r", "grid": {"training.learning_rate": [1e-5, 3e-5],
                                                          "training.batch_size": [4, 16]}}}),
        c["experiments"]["e"].update(recipes=["r", "lrbs"]),
    ))
    cfg = prepare(raw)
    expected = {
        "r_lr1e-05_bs4": (1e-5, 4), "r_lr1e-05_bs16": (1e-5, 16),
        "r_lr3e-05_bs4": (3e-5, 4), "r_lr3e-05_bs16": (3e-5, 16),
    }
    assert cfg["_sweeps"] == {"lrbs": list(expected)}
    assert cfg["experiments"]["e"]["recipes"] == ["r", *expected]
    for name, (lr, bs) in expected.items():
        training = cfg["recipes"][name]["training"]
        assert (training["learning_rate"], training["batch_size"]) == (lr, bs)
        # everything else from the base recipe and the global defaults
        assert training["max_length"] == 512 and training["lora"]["r"] == 8
        assert cfg["recipes"][name]["objective"] == {"name": "ntp"}
    # the base recipe itself is unchanged
    assert cfg["recipes"]["r"]["training"]["learning_rate"] == 2e-5


def test_sweep_over_selection_uses_short_names_and_keeps_base_settings():
    raw = with_changes(lambda c: (
        c["recipes"].update(rnd={"selection": {"name": "random", "seed": 3}, "training": {"learning_rate": 1e-4}}),
        c.update(sweeps={"fr": {"recipe": "rnd", "grid": {"selection.fraction": [0.1, 0.5]}}}),
        c["experiments"]["e"].update(recipes=["fr"]),
    ))
    cfg = prepare(raw)
    assert cfg["experiments"]["e"]["recipes"] == ["rnd_frac0.1", "rnd_frac0.5"]
    assert cfg["recipes"]["rnd_frac0.5"]["selection"] == {"name": "random", "seed": 3, "fraction": 0.5}
    assert cfg["recipes"]["rnd_frac0.1"]["training"]["learning_rate"] == 1e-4


def test_sweep_over_lora_rank_keeps_the_global_lora_settings():
    raw = with_changes(lambda c: (
        c.update(training={"lora": {"alpha": 32, "dropout": 0.0}}),
        c.update(sweeps={"rank": {"recipe": "r", "grid": {"training.lora.r": [4, 64]}}}),
    ))
    cfg = prepare(raw)
    assert cfg["_sweeps"]["rank"] == ["r_r4", "r_r64"]
    lora = cfg["recipes"]["r_r64"]["training"]["lora"]
    assert (lora["r"], lora["alpha"], lora["dropout"]) == (64, 32, 0.0)


def test_sweep_name_template():
    raw = with_changes(lambda c: c.update(sweeps={"s": {
        "recipe": "r", "name": "sft-lr{training.learning_rate}-e{training.epochs}",
        "grid": {"training.learning_rate": [2e-4], "training.epochs": [1, 2.5]}}}))
    cfg = prepare(raw)
    assert cfg["_sweeps"]["s"] == ["sft-lr0.0002-e1", "sft-lr0.0002-e2.5"]


def test_experiment_recipes_deduplicated_in_order():
    raw = with_changes(lambda c: (
        c.update(sweeps={"s": {"recipe": "r", "grid": {"training.epochs": [2, 3]}}}),
        c["experiments"]["e"].update(recipes=["r_ep2", "s", "r"]),
    ))
    assert prepare(raw)["experiments"]["e"]["recipes"] == ["r_ep2", "r_ep3", "r"]


def test_sweep_value_violating_the_schema_names_the_sweep():
    message = error_of(lambda c: c.update(sweeps={"lrs": {"recipe": "r",
                                                          "grid": {"training.learning_rate": [1e-5, "fast"]}}}))
    assert message.startswith("config key sweeps.lrs.grid.training.learning_rate[1]:")  # the value, where given
    assert "learning_rate" in message


def test_sweep_over_an_unknown_objective_is_rejected():
    message = error_of(lambda c: c.update(sweeps={"o": {"recipe": "r", "grid": {"objective.name": ["ntp", "magic"]}}}))
    assert message.startswith("config key sweeps.o.grid.objective.name[1]:") and "'magic'" in message


def test_sweep_key_outside_a_recipe():
    message = error_of(lambda c: c.update(sweeps={"s": {"recipe": "r", "grid": {"models.m.hidden_size": [32]}}}))
    assert "sweeps.s.grid.models.m.hidden_size" in message


def test_sweep_name_collision_with_a_recipe():
    message = error_of(lambda c: (
        c["recipes"].update(r_ep2={}),
        c.update(sweeps={"s": {"recipe": "r", "grid": {"training.epochs": [2]}}}),
    ))
    assert "sweeps.s" in message and "'r_ep2'" in message


def test_sweep_with_empty_grid():
    message = error_of(lambda c: c.update(sweeps={"s": {"recipe": "r", "grid": {}}}))
    assert "sweeps.s.grid" in message


def test_composition_defaults():
    cfg = prepare(with_changes(lambda c: c["recipes"].update(
        dtm={"composition": {"name": "disperse_merge"}},
        soup={"composition": {"name": "seed_soup", "seeds": [3, 5]}})))
    assert cfg["recipes"]["r"]["composition"] == {"name": "single"}
    assert cfg["recipes"]["dtm"]["composition"] == {
        "name": "disperse_merge", "k": 4, "split": "random", "seed": 0, "init": "same",
        "merge": {"method": "average", "merge_space": "delta", "seed": 0}}
    assert cfg["recipes"]["soup"]["composition"] == {
        "name": "seed_soup", "seeds": [3, 5], "merge": {"method": "average", "merge_space": "delta", "seed": 0}}


def dtm(merge=None, **composition):
    return {"composition": {"name": "disperse_merge", "k": 2, **composition, "merge": merge or {}}}


@pytest.mark.parametrize("recipe, key, words", [
    (dtm(k=1), "recipes.x.composition.k", "minimum"),
    (dtm(split="spectral"), "recipes.x.composition.split", "spectral"),
    (dtm(shards=3), "recipes.x.composition", "shards"),
    (dtm({"method": "slerp"}), "recipes.x.composition.merge.method", "slerp"),
    (dtm({"method": "ties", "fisher_samples": 8}), "recipes.x.composition.merge.fisher_samples", "takes no fisher"),
    (dtm({"method": "fisher", "merge_space": "adapter"}), "recipes.x.composition.merge.method", "only 'average'"),
    (dtm({"method": "fisher", "fisher_type": "true"}), "recipes.x.composition.merge.fisher_type", "true"),
    (dtm({"method": "average", "fisher_type": "empirical"}), "recipes.x.composition.merge.fisher_type",
     "takes no fisher_type"),
    (dtm({"density": 1.5}), "recipes.x.composition.merge.density", "1.5"),
    (dtm({"density": 0.5}), "recipes.x.composition.merge.density", "takes no density"),
    (dtm({"lambda": 2.0}), "recipes.x.composition.merge.lambda", "takes no lambda"),
    (dtm({"method": "ties", "weights": [1, 2, 3]}), "recipes.x.composition.merge.weights", "3 weights for 2"),
    (dtm({"method": "ties", "merge_space": "adapter"}), "recipes.x.composition.merge.method", "only 'average'"),
    ({**dtm({"merge_space": "adapter"}), "training": {"finetuning": "full"}},
     "recipes.x.composition.merge.merge_space", "needs LoRA"),
    (dtm(embedder="all-MiniLM-L6-v2"), "recipes.x.composition.embedder", "only the kmeans split"),
    ({**dtm(init="different"), "training": {"finetuning": "full"}}, "recipes.x.composition.init", "LoRA"),
    (dtm(init="other"), "recipes.x.composition.init", "other"),
    ({"composition": {"name": "seed_soup"}}, "recipes.x.composition", "seeds"),
    ({"composition": {"name": "seed_soup", "seeds": [1, 1]}}, "recipes.x.composition.seeds", "non-unique"),
    ({"composition": {"name": "seed_soup", "seeds": [1, 2], "k": 2}}, "recipes.x.composition.k", "unknown key"),
    ({"composition": {"name": "single", "k": 2}}, "recipes.x.composition.k", "unknown key"),
])
def test_composition_errors_name_the_key(recipe, key, words):
    message = error_of(lambda c: c["recipes"].update(x=recipe))
    assert message.startswith(f"config key {key}") and words in message


def test_composition_settings_that_fit_are_accepted():
    cfg = prepare(with_changes(lambda c: c["recipes"].update(
        ties=dtm({"method": "ties", "density": 0.3, "lambda": 1.5, "weights": [1, 3]}),
        km=dtm(split="kmeans", embedder="all-MiniLM-L6-v2"),
        adapter=dtm({"merge_space": "adapter"}))))
    assert cfg["recipes"]["ties"]["composition"]["merge"]["density"] == 0.3
    assert cfg["recipes"]["km"]["composition"]["embedder"] == "all-MiniLM-L6-v2"


def test_sweep_over_merge_methods_checks_each_generated_recipe():
    raw = with_changes(lambda c: (
        c["recipes"].update(d=dtm()),
        c.update(sweeps={"m": {"recipe": "d", "grid": {"composition.merge.method": ["ties", "task_arithmetic"]},
                               "name": "d_{composition.merge.method}"}})))
    assert prepare(raw)["_sweeps"]["m"] == ["d_ties", "d_task_arithmetic"]
    raw["sweeps"]["m"]["grid"]["composition.merge.density"] = [0.5]
    with pytest.raises(ConfigError) as info:
        prepare(raw)
    assert str(info.value).startswith("config key sweeps.m.grid: generated recipe 'd_task_arithmetic': "
                                      "config key recipes.d_task_arithmetic.composition.merge.density:")


@pytest.mark.parametrize("path", ["config.yaml", "configs/tiny.yaml", "configs/paper/dtm.yaml"])
def test_shipped_configs_validate(path):
    cfg = load(ROOT / path)
    assert cfg["experiments"]
    for exp in cfg["experiments"].values():
        assert all(r in cfg["recipes"] for r in exp["recipes"])


def test_tiny_config_effective_settings():
    cfg = load(ROOT / "configs" / "tiny.yaml")
    assert cfg["recipes"]["sft_full"]["training"]["finetuning"] == "full"
    assert cfg["recipes"]["sft_full"]["training"]["learning_rate"] == 1e-4
    assert cfg["recipes"]["sft"]["training"]["learning_rate"] == 1e-3
    assert cfg["recipes"]["sft"]["training"]["lora"]["dropout"] == 0.0


def test_invalid_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("models: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load(path)


def test_seeds_expand_every_experiment_recipe():
    raw = with_changes(lambda c: c.update(seeds=[0, 7]))
    cfg = prepare(raw)
    assert cfg["experiments"]["e"]["recipes"] == ["r_s0", "r_s7"]
    assert cfg["_seeds"] == {"r_s0": ("r", 0), "r_s7": ("r", 7)}
    assert cfg["recipes"]["r_s7"]["training"]["seed"] == 7 and cfg["recipes"]["r"]["training"]["seed"] == 0
    # without seeds nothing changes
    assert prepare(with_changes(lambda c: None))["_seeds"] == {}


def test_seed_names_may_not_collide():
    message = error_of(lambda c: (c.update(seeds=[1]), c["recipes"].update(r_s1={})))
    assert "seeds" in message and "'r_s1'" in message


def test_config_files_and_the_schema_read_by_libyaml_as_by_pyyaml():
    """Every Snakemake process reads the config and the schema while parsing the Snakefile (the planner, and a
    cluster job's two); PyYAML's pure-Python parser was a fifth of that parse. libyaml's reads the same values,
    refuses a repeated key the same way, and merges `<<:` the same."""
    import yaml

    from sftlab.config import SAFE_LOADER, SCHEMA_PATH, read_yaml

    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml")
    assert SAFE_LOADER is yaml.CSafeLoader
    for path in [SCHEMA_PATH, *sorted((ROOT / "configs").rglob("*.yaml"))]:
        assert read_yaml(path) == yaml.safe_load(path.read_text()), path


def test_a_repeated_key_is_refused_with_its_file_and_lines(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\nmodels:\n  m: 1\n  m: 2\n")
    from sftlab.config import read_yaml

    with pytest.raises(ConfigError, match=rf"^{path}:7: duplicate key 'm' \(first at line 6\)"):
        read_yaml(path)
    path.write_text("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n")
    assert read_yaml(path) == {"base": {"x": 1}, "d": {"x": 1, "y": 2}}


def test_a_config_the_planner_checked_prepares_the_same_without_the_schema_passes():
    """A cluster job parses the config its planner prepared (sftlab.config.CHECKED_ENV): with the same digest it
    skips the schema's two passes, and gets the same config."""
    from sftlab import rehearsal
    from sftlab.config import config_digest, read_yaml

    for path in [ROOT / "configs" / "tiny.yaml", *sorted((ROOT / "configs" / "paper").glob("*.yaml"))]:
        raw = read_yaml(path)
        for variant in (raw, rehearsal.overlay(raw)) if path.parent.name == "paper" else (raw,):
            assert prepare(variant, checked=True) == prepare(variant), path
            assert config_digest(copy.deepcopy(variant)) == config_digest(variant)
    # only the schema's passes are skipped: an unknown key passes them, a dangling reference does not
    raw = read_yaml(ROOT / "configs" / "tiny.yaml")
    with pytest.raises(ConfigError, match="unknown key|Additional properties|unevaluated"):
        prepare({**raw, "surprise": 1})
    prepare({**raw, "surprise": 1}, checked=True)
    dangling = copy.deepcopy(raw)
    dangling["experiments"][next(iter(dangling["experiments"]))]["models"] = ["nowhere"]
    with pytest.raises(ConfigError, match=r"experiments\.\w+\.models\[0\]: no model named 'nowhere'"):
        prepare(dangling, checked=True)


def test_the_config_digest_tells_apart_what_the_schema_tells_apart():
    from sftlab.config import config_digest, read_yaml

    raw = read_yaml(ROOT / "configs" / "tiny.yaml")
    digests = {config_digest(raw)}
    for changed in ({**raw, "training": {**raw["training"], "learning_rate": "1e-4"}},   # a string, not a number
                    {**raw, "training": {**raw["training"], "epochs": 1.0}},             # a float, not an int
                    {**raw, "training": {**raw["training"], "epochs": True}},
                    {**raw, "seeds": [0]}):
        digests.add(config_digest(changed))
    assert len(digests) == 5
