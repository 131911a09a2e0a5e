"""Load, validate and expand the workflow configuration.

``prepare(config)`` is what the Snakefile calls before any job is planned: it validates against
``workflow/schemas/config.schema.yaml`` (filling the schema's defaults), checks that every name a
recipe, sweep or experiment refers to exists, expands sweeps into generated recipes and returns
the config with every recipe's effective training settings resolved. Any problem raises
``ConfigError`` naming the key path, e.g. ``recipes.sft.objective.name``.
"""

from __future__ import annotations

import copy
import itertools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# short names used in generated sweep recipe names
_SHORT = {"learning_rate": "lr", "epochs": "ep", "batch_size": "bs", "fraction": "frac"}


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path."""


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    return yaml.safe_load(path.read_text())


def key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise ConfigError(f"schema: unsupported $ref {ref}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest}
    return schema


def fill_defaults(instance: Any, schema: dict, root: dict) -> None:
    """Fill ``default`` values of the schema into ``instance`` in place (objects only, recursively)."""
    if not isinstance(instance, dict):
        return
    schema = _resolve(schema, root)
    for name, prop in schema.get("properties", {}).items():
        if not isinstance(prop, dict):  # `true`: any value
            continue
        prop_r = _resolve(prop, root)
        if name not in instance and "default" in prop_r:
            instance[name] = copy.deepcopy(prop_r["default"])
        if name in instance:
            fill_defaults(instance[name], prop_r, root)
    # after the plain properties, so that defaults set above reach the sub-schemas too
    for sub in schema.get("allOf", []):
        fill_defaults(instance, sub, root)
        sub = _resolve(sub, root)
        if "if" in sub and jsonschema.Draft202012Validator(sub["if"]).is_valid(instance) and "then" in sub:
            fill_defaults(instance, sub["then"], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in schema.get("properties", {}):
                fill_defaults(value, extra, root)


def validate(config: dict, schema: dict | None = None) -> dict:
    """Schema validation with defaults filled in; raises ConfigError with the key path of the first error."""
    schema = schema or load_schema()
    config = copy.deepcopy(config)
    validator = jsonschema.Draft202012Validator(schema)
    # a key that fails inside its `then` branch also counts as unevaluated there: report the real failure first
    errors = sorted(validator.iter_errors(config), key=lambda e: (e.validator == "unevaluatedProperties",
                                                                  len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        raise ConfigError(_describe(errors[0]))
    fill_defaults(config, schema, schema)
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(_describe(errors[0]))
    return config


# keys whose value names an environment variable holding a secret: a wrong value may be the secret itself
SECRET_NAME_KEYS = ("api_key_env",)


def _known_keys(schema: dict, instance: dict) -> set[str]:
    """Property names an object schema declares for this instance (with the `then` branches whose `if` holds)."""
    known = set(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        known |= _known_keys(sub, instance)
        if "if" in sub and "then" in sub and jsonschema.Draft202012Validator(sub["if"]).is_valid(instance):
            known |= _known_keys(sub["then"], instance)
    return known


def _describe(error: jsonschema.ValidationError) -> str:
    # an `if/then` failure reports the first error of the branch, which names the real key
    best = jsonschema.exceptions.best_match([error] + list(error.context or []))
    path = key_path(best.absolute_path)
    if best.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(best.instance, dict):
        known = _known_keys(best.schema, best.instance)
        unknown = [k for k in best.instance if k not in known] or list(best.instance)
        where = key_path([*best.absolute_path, unknown[0]])
        return f"config key {where}: unknown key" + (f" (known here: {sorted(known)})" if known else "")
    if best.absolute_path and best.absolute_path[-1] in SECRET_NAME_KEYS:
        # the value may be a pasted key: never repeat it
        return (f"config key {path}: must be the NAME of an environment variable (letters, digits and '_', "
                "not starting with a digit), not the key itself; the value is not shown")
    if best.validator == "enum":
        return f"config key {path}: {best.instance!r} is not one of {best.validator_value}"
    return f"config key {path}: {best.message}"


def _get_dotted(obj: dict, dotted: str):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def _set_dotted(obj: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def format_value(value) -> str:
    """A value as it reads in a generated recipe name: lists as `q_proj-v_proj`, mappings as `method-ties`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, (list, tuple)):
        return "-".join(format_value(v) for v in value)
    if isinstance(value, dict):
        return "-".join(f"{k}-{format_value(v)}" for k, v in value.items())
    return str(value)


def name_pattern(schema: dict, table: str) -> str:
    """The pattern the schema sets for the names of a table (recipes, models, ...)."""
    return schema["properties"][table]["propertyNames"]["pattern"]


def sweep_name(sweep: dict, base: str, assignment: dict[str, Any]) -> str:
    if "name" in sweep:
        name = sweep["name"]
        for key, value in assignment.items():
            name = name.replace("{" + key + "}", format_value(value))
        return name
    parts = [base] + [f"{_SHORT.get(k.split('.')[-1], k.split('.')[-1])}{format_value(v)}" for k, v in assignment.items()]
    return "_".join(parts)


def expand_sweeps(config: dict, schema: dict) -> dict[str, list[str]]:
    """Add each sweep's generated recipes to ``config['recipes']``; return sweep name → recipe names."""
    recipe_schema = {**schema["$defs"]["recipe"], "$defs": schema["$defs"]}
    generated: dict[str, list[str]] = {}
    for sweep_id, sweep in config.get("sweeps", {}).items():
        base = sweep["recipe"]
        if base not in config["recipes"]:
            raise ConfigError(f"config key sweeps.{sweep_id}.recipe: no recipe named {base!r}")
        keys = list(sweep["grid"])
        names = []
        for values in itertools.product(*(sweep["grid"][k] for k in keys)):
            assignment = dict(zip(keys, values))
            recipe = copy.deepcopy(config["recipes"][base])
            for key, value in assignment.items():
                head = key.split(".")[0]
                if head not in ("selection", "objective", "composition", "training"):
                    raise ConfigError(
                        f"config key sweeps.{sweep_id}.grid.{key}: must start with selection, objective, composition or training"
                    )
                _set_dotted(recipe, key, value)
            name = sweep_name(sweep, base, assignment)
            # a generated name becomes a path component and a wildcard: the same rule as a hand-written one
            if not re.fullmatch(name_pattern(schema, "recipes"), name):
                raise ConfigError(f"config key sweeps.{sweep_id}.{'name' if 'name' in sweep else 'grid'}: generated "
                                  f"recipe name {name!r} is not a valid recipe name (letters, digits, '_', '.', '-'; "
                                  "not starting with a '.', '_' or '-')")
            if name in config["recipes"] or name in names:
                raise ConfigError(f"config key sweeps.{sweep_id}: generated recipe name {name!r} already exists")
            errors = list(jsonschema.Draft202012Validator(recipe_schema).iter_errors(recipe))
            if errors:
                raise ConfigError(f"config key sweeps.{sweep_id}.grid: generated recipe {name!r}: {_describe(errors[0])}")
            # a grid value may be a whole block (merge: {...}): its defaults; training's come from the global settings
            for axis in ("selection", "objective", "composition"):
                fill_defaults(recipe[axis], schema["$defs"][axis], schema)
            config["recipes"][name] = recipe
            names.append(name)
        if sweep_id in config["recipes"]:
            raise ConfigError(f"config key sweeps.{sweep_id}: a recipe has the same name as this sweep")
        generated[sweep_id] = names
    return generated


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_benchmark_references(config: dict) -> None:
    """Every benchmark's type must be registered, every judge and dataset it names must exist."""
    from sftlab.benchmarks import BENCHMARK_TYPES

    for name, bench in config["benchmarks"].items():
        if bench["type"] not in BENCHMARK_TYPES:
            raise ConfigError(f"config key benchmarks.{name}.type: {bench['type']!r} is not one of "
                              f"{sorted(BENCHMARK_TYPES)}")
        for key, table in (("judge", "judges"), ("dataset", "datasets")):
            if key in bench and bench[key] not in config[table]:
                raise ConfigError(f"config key benchmarks.{name}.{key}: no {table[:-1]} named {bench[key]!r}")


def prepare(raw: dict, schema: dict | None = None) -> dict:
    """Validate, fill defaults, expand sweeps, resolve cross-references and effective training settings."""
    schema = schema or load_schema()
    config = validate(raw, schema)
    check_benchmark_references(config)
    # the lora block's schema defaults belong to the global settings: a recipe's partial lora block
    # overrides only the keys it names, not the other global values with the schema's defaults
    for name, recipe in config["recipes"].items():
        given = raw["recipes"][name].get("training", {}).get("lora")
        if given is not None:
            recipe["training"]["lora"] = copy.deepcopy(given)
    sweeps = expand_sweeps(config, schema)
    resolve_influence_selections(config)
    check_token_budget(config)
    check_random_baseline(config)
    for name, recipe in config["recipes"].items():
        recipe["training"] = deep_merge(config["training"], recipe.get("training", {}))
        if recipe["training"]["finetuning"] == "lora":
            recipe["training"]["lora"] = deep_merge(config["training"]["lora"], recipe["training"].get("lora", {}))
    generated_by = {name: sweep_id for sweep_id, names in sweeps.items() for name in names}
    for name, recipe in config["recipes"].items():
        try:
            check_selection(f"recipes.{name}", recipe)
            check_composition(f"recipes.{name}", recipe)
            check_pair_batches(f"recipes.{name}", recipe)
        except ConfigError as exc:
            if name not in generated_by:
                raise
            raise ConfigError(f"config key sweeps.{generated_by[name]}.grid: generated recipe {name!r}: {exc}") from None
    for exp_id, exp in config["experiments"].items():
        for kind, table in (("models", "models"), ("datasets", "datasets"), ("benchmarks", "benchmarks")):
            for i, name in enumerate(exp[kind]):
                if name not in config[table]:
                    raise ConfigError(f"config key experiments.{exp_id}.{kind}[{i}]: no {table[:-1]} named {name!r}")
        expanded = []
        for i, name in enumerate(exp["recipes"]):
            if name in sweeps:
                expanded += sweeps[name]
            elif name in config["recipes"]:
                expanded.append(name)
            else:
                raise ConfigError(f"config key experiments.{exp_id}.recipes[{i}]: no recipe or sweep named {name!r}")
        exp["recipes"] = list(dict.fromkeys(expanded))
    check_references(config, raw)
    check_demo_datasets(config)
    check_hub_folders(config)
    check_prompt_formats(config)
    config["_sweeps"] = sweeps
    config["_seeds"] = expand_seeds(config)
    return config


def check_references(config: dict, raw: dict) -> None:
    """Names that the schema cannot check: the reference run's model, the report's baseline recipe."""
    model = config["reference"]["model"]
    if model is not None and model not in config["models"]:
        raise ConfigError(f"config key reference.model: no model named {model!r} (known: {sorted(config['models'])})")
    # the default baseline `sft` may be absent (no paired tests then); a baseline the user names must exist
    baseline = raw.get("report", {}).get("baseline")
    if baseline is not None and baseline not in config["recipes"]:
        raise ConfigError(f"config key report.baseline: no recipe named {baseline!r}")


def check_demo_datasets(config: dict) -> None:
    """A demo dataset asks each family for per_family + heldout + preference_pairs distinct items."""
    from sftlab.data.demo import FAMILIES, FAMILY_CAPACITY

    for name, ds in config["datasets"].items():
        if ds["source"] != "demo":
            continue
        needed = ds["per_family"] + ds["heldout"] + ds["preference_pairs"]
        for family in ds.get("families") or FAMILIES:
            if needed > FAMILY_CAPACITY[family]:
                key = "heldout" if ds["heldout"] else "per_family"
                raise ConfigError(f"config key datasets.{name}.{key}: per_family ({ds['per_family']}) + heldout "
                                  f"({ds['heldout']}) + preference_pairs ({ds['preference_pairs']}) = {needed} distinct "
                                  f"items per family, but family {family!r} has only {FAMILY_CAPACITY[family]}")


def check_hub_folders(config: dict) -> None:
    """A hub folder (``data_dirs``) that cannot hold the dataset's format, e.g. hh-rlhf's red-team transcripts as pairs."""
    from sftlab.data.loaders import refused_folder

    for name, ds in config["datasets"].items():
        for i, folder in enumerate(ds.get("data_dirs") or []):
            reason = refused_folder(ds.get("format"), folder)
            if reason:
                raise ConfigError(f"config key datasets.{name}.data_dirs[{i}]: {reason}")


def check_prompt_formats(config: dict) -> None:
    """``prompt_format: model`` on a random family whose tokenizer has no template (a hub model's is checked when it
    is materialised: its tokenizer is not here yet)."""
    from sftlab.models.random_init import FAMILIES

    for name, model in config["models"].items():
        family = model.get("family", "tiny")
        if model["source"] == "random" and model.get("prompt_format") == "model" and not FAMILIES[family].chat_template:
            raise ConfigError(f"config key models.{name}.prompt_format: 'model' uses the tokenizer's own chat template, "
                              f"but family {family!r} has none (as the real base model); name a format such as tulu")


def recipe_key(config: dict, name: str) -> str:
    """Where the user wrote a recipe: its own entry, or the sweep that generated it (seed copies: their base)."""
    name = config["_seeds"].get(name, (name,))[0]
    for sweep_id, names in config["_sweeps"].items():
        if name in names:
            return f"sweeps.{sweep_id}.grid (generated recipe {name!r})"
    return f"recipes.{name}"


def check_shards_fit(config: dict, pool_bounds: dict[str, int | None]) -> None:
    """A disperse_merge recipe's k shards each need an example: k may not exceed what its selection can keep.

    ``pool_bounds``: dataset → most training examples it can have (None: known only after data preparation).
    """
    import math

    for exp_id, exp in config["experiments"].items():
        for recipe_name in exp["recipes"]:
            recipe = config["recipes"][recipe_name]
            if recipe["composition"]["name"] != "disperse_merge":
                continue
            k, fraction = recipe["composition"]["k"], recipe["selection"]["fraction"]
            for dataset in exp["datasets"]:
                pool = pool_bounds.get(dataset)
                if pool is None:
                    continue
                most = max(1, math.ceil(fraction * pool))
                if k > most:
                    where = recipe_key(config, recipe_name)
                    where = where if where.startswith("sweeps.") else f"{where}.composition.k"
                    raise ConfigError(f"config key {where}: {k} shards, but on dataset {dataset!r} "
                                      f"(experiment {exp_id}) its selection keeps at most {most} examples "
                                      f"(pool of at most {pool} × fraction {fraction})")


def seed_recipe_name(recipe: str, seed: int) -> str:
    return f"{recipe}_s{seed}"


def expand_seeds(config: dict) -> dict[str, tuple[str, int]]:
    """With ``seeds``, replace each experiment recipe by one recipe per seed; return generated name → (base, seed)."""
    seeds = config.get("seeds") or []
    generated: dict[str, tuple[str, int]] = {}
    if not seeds:
        return generated
    for exp in config["experiments"].values():
        names = []
        for base in exp["recipes"]:
            for seed in seeds:
                name = seed_recipe_name(base, seed)
                if name not in generated:
                    if name in config["recipes"]:
                        raise ConfigError(f"config key seeds: recipe name {name!r} (recipe {base!r}, seed {seed}) "
                                          "is taken by another recipe")
                    recipe = copy.deepcopy(config["recipes"][base])
                    recipe["training"]["seed"] = seed
                    config["recipes"][name] = recipe
                    generated[name] = (base, seed)
                names.append(name)
        exp["recipes"] = names
    return generated


_INFLUENCE_KEYS = ("validation", "shots", "beta")


def influence_selectors() -> tuple[str, ...]:
    """The selectors that rank by an influence table (less, rose), from the selector registry."""
    from sftlab.selection import SELECTORS

    return tuple(name for name, cls in SELECTORS.items() if cls.influence)


def resolve_influence_selections(config: dict) -> None:
    """Check every less / rose selection against its validation set and fill in the set's ``shots``.

    ROSE needs preference pairs (its validation loss is DPO); LESS takes SFT examples, or the chosen
    answers of pairs. The settings of the other selectors may not carry these keys.
    """
    for name in config["validation"]:
        dataset = config["validation"][name]["dataset"]
        if dataset not in config["datasets"]:
            raise ConfigError(f"config key validation.{name}.dataset: no dataset named {dataset!r}")
    for name, recipe in config["recipes"].items():
        sel, where = recipe["selection"], f"recipes.{name}.selection"
        if sel["name"] not in influence_selectors():
            extra = [k for k in _INFLUENCE_KEYS if k in sel]
            if extra:
                raise ConfigError(f"config key {where}.{extra[0]}: only the less and rose selectors take it")
            continue
        if sel["name"] == "less" and "beta" in sel:
            raise ConfigError(f"config key {where}.beta: the less selector has no DPO temperature (rose only)")
        vset = config["validation"].get(sel["validation"])
        if vset is None:
            raise ConfigError(f"config key {where}.validation: no validation set named {sel['validation']!r} "
                              f"(known: {sorted(config['validation'])})")
        if sel["name"] == "rose" and vset["split"] != "pairs":
            raise ConfigError(f"config key {where}.validation: rose needs preference pairs, but validation set "
                              f"{sel['validation']!r} takes {vset['split']!r} examples")
        sel.setdefault("shots", vset["shots"])


def check_token_budget(config: dict) -> None:
    """Every gradient-feature item must fit ``gradients.max_tokens``: max_length tokens a sequence (the warmup's),
    two sequences for a rose (DPO) pair. Refused here, before any job starts, rather than by the job."""
    names = {r["selection"]["name"] for r in config["recipes"].values()}
    if not names & set(influence_selectors()):
        return
    max_length = deep_merge(config["training"], config["warmup"]["training"])["max_length"]
    need = max_length * (2 if "rose" in names else 1)
    budget = config["gradients"]["max_tokens"]
    if budget < need:
        raise ConfigError(f"config key gradients.max_tokens: {budget} tokens cannot hold one item of "
                          f"{'a rose pair: 2 × ' if 'rose' in names else ''}max_length {max_length} = {need} tokens")


def check_selection(key: str, recipe: dict) -> None:
    """The fraction is a share of the pool: refuse one the selector cannot deliver (confident / unconfident: a half)."""
    from sftlab.selection import SELECTORS

    selection = recipe["selection"]
    limit = SELECTORS[selection["name"]].max_fraction
    if selection["fraction"] > limit:
        raise ConfigError(f"config key {key}.selection.fraction: {selection['fraction']:g} of the pool, but selector "
                          f"{selection['name']!r} delivers at most {limit:g} of it (fraction is a share of the pool)")


def check_pair_batches(key: str, recipe: dict) -> None:
    """SFTMix mixes pairs of examples within each per-device batch: an odd batch_size fails in every training process,
    after all the jobs before it (all.yaml's rose_sftmix took the LESS/ROSE batch of 1)."""
    batch = recipe["training"]["batch_size"]
    if recipe["objective"]["name"] == "sftmix" and (batch < 2 or batch % 2):
        raise ConfigError(f"config key {key}.training.batch_size: the sftmix objective pairs examples within a batch, "
                          f"so batch_size (per device) must be even and at least 2, got {batch}")


def check_random_baseline(config: dict) -> None:
    """The random selection baseline must be a draw independent of the LESS / ROSE warmup's random subset.

    Both are the ``random`` selector: with the warmup's seed, every fraction of the baseline contains (or is
    contained in) the warmup's subset, so the "random" rows would be the warmup's own data.
    """
    if not any(r["selection"]["name"] in influence_selectors() for r in config["recipes"].values()):
        return
    seed = config["warmup"]["seed"]
    for name, recipe in config["recipes"].items():
        sel = recipe["selection"]
        if sel["name"] == "random" and sel.get("seed", 0) == seed:
            raise ConfigError(f"config key recipes.{name}.selection.seed: {seed} is the LESS/ROSE warmup's seed "
                              f"(warmup.seed), so this random baseline would hold the warmup's own subset; give it "
                              f"another seed for an independent draw")


def composition_members(composition: dict) -> int:
    """How many runs a composed recipe merges (1 for ``single``)."""
    from sftlab.compose.members import COMPOSED, member_names

    return len(member_names(composition)) if composition["name"] in COMPOSED else 1


def check_composition(key: str, recipe: dict) -> None:
    """What the schema cannot say about a composed recipe: the merge settings must fit the method and the runs."""
    from sftlab.compose.merge import MERGE_METHODS

    composition = recipe["composition"]
    if composition["name"] == "single":
        return
    if composition.get("embedder") is not None and composition["split"] != "kmeans":
        raise ConfigError(f"config key {key}.composition.embedder: only the kmeans split embeds (split is "
                          f"{composition['split']!r})")
    if composition.get("init", "same") == "different" and recipe["training"]["finetuning"] != "lora":
        raise ConfigError(f"config key {key}.composition.init: 'different' draws each member's LoRA initialisation, "
                          f"but training.finetuning is {recipe['training']['finetuning']!r}")
    merge = composition["merge"]
    method = MERGE_METHODS[merge["method"]]
    # every method's parameter is a config key; this method must take the ones the recipe sets
    for param in sorted({p for m in MERGE_METHODS.values() for p in m.params} - {"weights"}):
        if param in merge and param not in method.params:
            raise ConfigError(f"config key {key}.composition.merge.{param}: merge method {merge['method']!r} "
                              f"takes no {param} (it takes {list(method.params)})")
    members = composition_members(composition)
    if "weights" in merge and len(merge["weights"]) != members:
        raise ConfigError(f"config key {key}.composition.merge.weights: {len(merge['weights'])} weights for "
                          f"{members} member runs")
    if merge["merge_space"] == "adapter":
        if merge["method"] != "average":
            raise ConfigError(f"config key {key}.composition.merge.method: merge_space 'adapter' averages LoRA "
                              f"matrices and supports only 'average', got {merge['method']!r}")
        if recipe["training"]["finetuning"] != "lora":
            raise ConfigError(f"config key {key}.composition.merge.merge_space: 'adapter' needs LoRA runs, but "
                              f"training.finetuning is {recipe['training']['finetuning']!r}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it does not repeat
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} (first at line "
                                  f"{seen[key]}); YAML would silently keep only the last one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path):
    """A YAML (or JSON) config file, refusing duplicate keys with the file and line of the repetition."""
    try:
        with open(path, encoding="utf-8") as stream:  # an open file: the marks carry its path
            return yaml.load(stream, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load(path: str | Path) -> dict:
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping")
    return prepare(raw)


def resources(config: dict, stage: str) -> dict:
    """Compute request of a stage: its own entry over ``resources.default`` over the schema defaults."""
    base = {"cpus": 1, "gpus": 0, "mem_mb": 4000, "runtime": 60}
    base.update(config.get("resources", {}).get("default", {}))
    base.update(config.get("resources", {}).get(stage, {}))
    return base


def selector_id(selection: dict) -> str:
    """The selector's name with every parameter it declares (its constructor's), as used in selection paths: two
    selections that can differ get different paths. The fraction is not part of it: every fraction of one selector
    reads one ranking (one influence table)."""
    from sftlab.registry import lookup
    from sftlab.selection import SELECTORS

    cls = lookup(SELECTORS, "selector", selection["name"])
    parts = [cls.name]
    for key, default in cls.parameters().items():
        value = selection.get(key, default)
        if value is None or (key in cls.id_omitted and value == cls.id_omitted[key]):
            continue
        parts.append(cls.id_formats.get(key, "{key}{value}").format(key=key, value=format_value(value)))
    return "-".join(parts)


def fraction_id(fraction: float) -> str:
    return format_value(float(fraction))
