"""Load, validate and expand the workflow configuration.

``prepare(config)`` is what the Snakefile calls before any job is planned: it validates against
``workflow/schemas/config.schema.yaml`` (filling the schema's defaults), checks that every name a
recipe, sweep or experiment refers to exists, expands sweeps into generated recipes and returns
the config with every recipe's effective training settings resolved. Any problem raises
``ConfigError`` naming the key path, e.g. ``recipes.sft.objective.name``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import math
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


def _pattern_whole(validator, pattern, instance, schema):
    """JSON Schema's ``pattern`` (a search), except that an anchored ``^…$`` matches the whole string: Python's ``$``
    also matches before a final newline, which would let ``"sft\\n"`` through as a name."""
    if validator.is_type(instance, "string"):
        whole = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
        if not re.search(whole, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


#: the schema's validator, with whole-string patterns; an integer is an int (JSON Schema also takes 2.0 and 1e300,
#: which then fail in a job as a count, or as a shard list too long for memory)
Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"pattern": _pattern_whole},
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)))


def load_schema(path: Path = SCHEMA_PATH) -> dict:
    # parsed once per version of the file: parsing takes three quarters of a prepare() otherwise
    return copy.deepcopy(_parsed_schema(Path(path), Path(path).stat().st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _parsed_schema(path: Path, mtime_ns: int) -> dict:
    return yaml.load(path.read_text(), Loader=SAFE_LOADER)


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
        if "if" in sub and Validator(sub["if"]).is_valid(instance) and "then" in sub:
            fill_defaults(instance, sub["then"], root)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for name, value in instance.items():
            if name not in schema.get("properties", {}):
                fill_defaults(value, extra, root)


def validate(config: dict, schema: dict | None = None, checked: bool = False) -> dict:
    """Schema validation with defaults filled in; raises ConfigError with the key path of the first error.
    ``checked``: this config (its config_digest) passed already, in the process that planned the job parsing it now:
    its defaults are filled without the schema's two passes."""
    schema = schema or load_schema()
    check_values(config)
    config = copy.deepcopy(config)
    if checked:
        fill_defaults(config, schema, schema)
        return config
    validator = Validator(schema)
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
#: keys whose string is placed into a Jinja template (lm-eval renders its task YAMLs unsandboxed)
TEMPLATE_KEYS = ("answer_prompt",)
JINJA_DELIMITERS = re.compile(r"\{[{%#]")
#: most values (mapping entries, list items) a config may hold with its YAML aliases expanded: a paper config holds
#: about 1,500; an alias bomb (`a: &a [x, x]`, `b: &b [*a, *a]`, ...) would make the schema's walk run for ever
MAX_CONFIG_VALUES = 100_000
#: longest key: table names become path components, with suffixes (`_s{seed}`, `.json`) on top
MAX_NAME_LENGTH = 100
#: no setting means anything beyond this magnitude (a model's parameter count is below 1e13)
MAX_MAGNITUDE = 1e15
#: seeds go to numpy (np.random.seed takes 0 ≤ seed < 2**32), torch and Python's random
SEED_RANGE = (0, 2**32 - 1)


def _is_seed(path: tuple) -> bool:
    """A seed's key: `seed`, `*_seed`, an item of `seeds` (or a sweep's `training.seed: [...]`)."""
    names = [p.rsplit(".", 1)[-1] for p in path[-2:] if isinstance(p, str)]
    return bool(names) and (names[-1] == "seed" or names[-1].endswith("_seed")
                            or (names[-1] == "seeds" and isinstance(path[-1], int)))


def check_values(config: Any) -> None:
    """What holds for every value of a config, before the schema sees it: a bounded size, every number finite,
    no template syntax where a template is written, no secret where one would be printed (URL credentials, a key
    pasted as an ``api_key_env``). Raises ConfigError naming the key; a secret is never repeated."""
    from sftlab.secrets import looks_like_secret, url_secrets

    seen, stack = 0, [((), config)]
    while stack:
        path, value = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise ConfigError(f"the config holds more than {MAX_CONFIG_VALUES:,} values with its YAML aliases "
                              f"expanded (under config key {key_path(path[:3])}): an alias bomb, or a config far larger "
                              "than any paper's")
        key, last = key_path(path), (path[-1] if path else None)
        if isinstance(value, dict):
            for k in value:
                if not isinstance(k, str):  # YAML reads `1:`, `yes:` or `null:` as a number, a bool, None
                    raise ConfigError(f"config key {key_path((*path, k))}: a key must be a string, not "
                                      f"{type(k).__name__} {k!r} (quote it in the YAML)")
                if len(k) > MAX_NAME_LENGTH:  # names become file names (at most 255 bytes, suffixes included)
                    raise ConfigError(f"config key {key_path(path)}: key {_short(repr(k), 60)} is longer than "
                                      f"{MAX_NAME_LENGTH} characters")
            stack.extend(((*path, k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), v) for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config key {key}: {value} is not a finite number")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_MAGNITUDE:
            raise ConfigError(f"config key {key}: {value:g} is beyond any meaningful setting (magnitude at most "
                              f"{MAX_MAGNITUDE:g})")
        if _is_seed(path) and isinstance(value, int) and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
            raise ConfigError(f"config key {key}: seed {value} is outside {SEED_RANGE[0]}..{SEED_RANGE[1]} "
                              "(numpy's seeds)")
        if isinstance(value, str):
            if last in SECRET_NAME_KEYS and looks_like_secret(value):
                raise ConfigError(f"config key {key}: must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                                  "not the key itself, which this value looks like; the value is not shown")
            if last in TEMPLATE_KEYS and JINJA_DELIMITERS.search(value):
                raise ConfigError(f"config key {key}: holds template syntax ('{{{{', '{{%' or '{{#'), which would run "
                                  "as a Jinja template when lm-eval renders the task; write plain text")
            if re.match(r"(?i)[a-z][a-z0-9+.-]*://", value) and url_secrets(value):
                raise ConfigError(f"config key {key}: the URL carries credentials ({', '.join(url_secrets(value))}), "
                                  "which would be printed in job commands and logs; put the key in the environment "
                                  "variable that api_key_env names (the value is not shown)")


def _known_keys(schema: dict, instance: dict) -> set[str]:
    """Property names an object schema declares for this instance (with the `then` branches whose `if` holds)."""
    known = set(schema.get("properties", {}))
    for sub in schema.get("allOf", []):
        known |= _known_keys(sub, instance)
        if "if" in sub and "then" in sub and Validator(sub["if"]).is_valid(instance):
            known |= _known_keys(sub["then"], instance)
    return known


def _unmatched_branch(schema: dict, instance: dict) -> tuple[str, list] | None:
    """The key that picks an object's `if/then` branch (a benchmark's type, a model's source) when its value picks
    none of them, with the values that do."""
    conditions = [sub["if"].get("properties", {}) for sub in schema.get("allOf", []) if "if" in sub]
    # a key with its own enum is reported by it; `type: {type: string}` (any registered benchmark type) is not
    keys = {key for props in conditions for key in props
            if not {"enum", "const"} & set(schema.get("properties", {}).get(key, {}))}
    for key in sorted(keys):
        options = [v for props in conditions if key in props
                   for v in ([props[key]["const"]] if "const" in props[key] else props[key].get("enum", []))]
        if key in instance and options and instance[key] not in options:
            return key, list(dict.fromkeys(options))
    return None


def _describe(error: jsonschema.ValidationError) -> str:
    # an `if/then` failure reports the first error of the branch, which names the real key
    best = jsonschema.exceptions.best_match([error] + list(error.context or []))
    path = key_path(best.absolute_path)
    if best.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(best.instance, dict):
        unmatched = _unmatched_branch(best.schema, best.instance)
        if unmatched:  # e.g. a benchmark type no branch knows: its settings are not the real error
            name, options = unmatched
            return (f"config key {key_path([*best.absolute_path, name])}: {_short(repr(best.instance[name]))} is "
                    f"not one of {options}")
        known = _known_keys(best.schema, best.instance)
        unknown = [k for k in best.instance if k not in known] or list(best.instance)
        where = key_path([*best.absolute_path, unknown[0]])
        return f"config key {where}: unknown key" + (f" (known here: {sorted(known)})" if known else "")
    if best.absolute_path and best.absolute_path[-1] in SECRET_NAME_KEYS:
        # the value may be a pasted key: never repeat it
        return (f"config key {path}: must be the NAME of an environment variable (letters, digits and '_', "
                "not starting with a digit), not the key itself; the value is not shown")
    if best.validator == "enum":
        return f"config key {path}: {_short(repr(best.instance))} is not one of {best.validator_value}"
    return f"config key {path}: {_short(best.message, 400)}"


def _short(value, limit: int = 200) -> str:
    """A value as an error message quotes it, cut to ``limit`` characters (a hostile value may be megabytes)."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} characters)"


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


#: recipes one sweep may generate (each is a training run per model × dataset)
MAX_SWEEP_RECIPES = 10_000


def expand_sweeps(config: dict, schema: dict, checked: bool = False) -> dict[str, list[str]]:
    """Add each sweep's generated recipes to ``config['recipes']``; return sweep name → recipe names. ``checked``:
    as in validate, the generated recipes are not checked against the recipe schema again."""
    recipe_schema = {**schema["$defs"]["recipe"], "$defs": schema["$defs"]}
    generated: dict[str, list[str]] = {}
    for sweep_id, sweep in config.get("sweeps", {}).items():
        base = sweep["recipe"]
        if base not in config["recipes"]:
            raise ConfigError(f"config key sweeps.{sweep_id}.recipe: no recipe named {base!r}")
        keys = list(sweep["grid"])
        size = math.prod(len(sweep["grid"][k]) for k in keys)
        if size > MAX_SWEEP_RECIPES:
            raise ConfigError(f"config key sweeps.{sweep_id}.grid: {size:,} combinations; a sweep generates at most "
                              f"{MAX_SWEEP_RECIPES:,} recipes")
        names = []
        for chosen in itertools.product(*(enumerate(sweep["grid"][k]) for k in keys)):
            assignment = {k: value for k, (_, value) in zip(keys, chosen)}
            recipe = copy.deepcopy(config["recipes"][base])
            for key, value in assignment.items():
                head = key.split(".")[0]
                if head not in ("selection", "objective", "composition", "training"):
                    raise ConfigError(
                        f"config key sweeps.{sweep_id}.grid.{key}: must start with selection, objective, composition or training"
                    )
                _set_dotted(recipe, key, value)
            name = sweep_name(sweep, base, assignment)
            # a value the recipe's schema refuses is named where the grid gives it, before its name is judged
            errors = [] if checked else list(Validator(recipe_schema).iter_errors(recipe))
            if errors:
                where = f"sweeps.{sweep_id}.grid"
                best = jsonschema.exceptions.best_match([errors[0]] + list(errors[0].context or []))
                error_path = ".".join(map(str, best.absolute_path))
                for key, (i, _) in zip(keys, chosen):
                    if error_path == key or error_path.startswith(key + "."):
                        where = f"{where}.{key}[{i}]"
                raise ConfigError(f"config key {where}: generated recipe {_short(repr(name))}: {_describe(errors[0])}")
            # a generated name becomes a path component and a wildcard: the same rule as a hand-written one
            if not re.fullmatch(name_pattern(schema, "recipes"), name) or len(name) > MAX_NAME_LENGTH:
                raise ConfigError(f"config key sweeps.{sweep_id}.{'name' if 'name' in sweep else 'grid'}: generated "
                                  f"recipe name {_short(repr(name))} is not a valid recipe name (letters, digits, '_', "
                                  f"'.', '-'; not starting with a '.', '_' or '-'; at most {MAX_NAME_LENGTH} characters)")
            if name in config["recipes"] or name in names:
                raise ConfigError(f"config key sweeps.{sweep_id}: generated recipe name {name!r} already exists")
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


#: set by the Snakefile to the config_digest of the config it prepared: a cluster job inherits the planner's
#: environment and parses the same config twice more (its job step's Snakemake and srun's)
CHECKED_ENV = "SFTLAB_CONFIG_CHECKED"


def config_digest(raw: dict) -> str:
    """A config as prepare() receives it, with the schema and this module that check it: one digest, one verdict."""
    digest = hashlib.sha256(repr(raw).encode())
    for path in (SCHEMA_PATH, Path(__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare(raw: dict, schema: dict | None = None, checked: bool = False) -> dict:
    """Validate, fill defaults, expand sweeps, resolve cross-references and effective training settings.
    ``checked``: the schema's passes are skipped (see validate, expand_sweeps); every other check runs."""
    schema = schema or load_schema()
    config = validate(raw, schema, checked)
    check_benchmark_references(config)
    # the lora block's schema defaults belong to the global settings: a recipe's partial lora block
    # overrides only the keys it names, not the other global values with the schema's defaults
    for name, recipe in config["recipes"].items():
        given = raw["recipes"][name].get("training", {}).get("lora")
        if given is not None:
            recipe["training"]["lora"] = copy.deepcopy(given)
    sweeps = expand_sweeps(config, schema, checked)
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
            check_selection_model(f"recipes.{name}", recipe, config["models"])
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
    check_heldout_benchmarks(config)
    check_demo_datasets(config)
    check_hub_folders(config)
    check_prompt_formats(config)
    config["_sweeps"] = sweeps
    config["_seeds"] = expand_seeds(config)
    return config


def check_references(config: dict, raw: dict) -> None:
    """Names that the schema cannot check: the reference run's model and checkpoints, the report's baseline recipe."""
    model = config["reference"]["model"]
    if model is not None and model not in config["models"]:
        raise ConfigError(f"config key reference.model: no model named {model!r} (known: {sorted(config['models'])})")
    # the default baseline `sft` may be absent (no paired tests then); a baseline the user names must exist
    checkpoints = config["reference"]["checkpoints"]
    for name, recipe in config["recipes"].items():
        if recipe["selection"]["name"] == "ambiguous" and len(checkpoints) < 2:
            raise ConfigError(f"config key reference.checkpoints: {checkpoints} is one checkpoint, but recipe {name!r} "
                              "ranks by the variability across checkpoints (selector 'ambiguous'): give two or more")
    baseline = raw.get("report", {}).get("baseline")
    if baseline is not None and baseline not in config["recipes"]:
        raise ConfigError(f"config key report.baseline: no recipe named {baseline!r}")


def check_heldout_benchmarks(config: dict) -> None:
    """A benchmark that scores a dataset's held-out examples needs some: ``heldout: 0`` would fail after training."""
    from sftlab.benchmarks import benchmark_type

    for exp_id, exp in config["experiments"].items():
        for bench_name in exp["benchmarks"]:
            bench = config["benchmarks"][bench_name]
            if not benchmark_type(bench["type"]).reads_heldout(bench):
                continue
            for name in exp["datasets"]:
                if config["datasets"][name]["heldout"] == 0:
                    raise ConfigError(f"config key datasets.{name}.heldout: 0 held-out examples, but benchmark "
                                      f"{bench_name!r} (experiment {exp_id}) scores the held-out examples; set heldout "
                                      "to 1 or more")


def check_local_files(config: dict) -> None:
    """Local inputs exist, as what they must be: a dataset one file (a directory would be walked whole at plan time,
    then fail to load), a local model, an hf judge not in `models` and a benchmark's data_dir / include_path a
    directory. Run on the paths as the workflow resolves them."""
    wanted = [(f"datasets.{name}.path", ds["path"], "file") for name, ds in config["datasets"].items()
              if ds["source"] == "local"]
    wanted += [(f"models.{name}.path", m["path"], "directory") for name, m in config["models"].items()
               if m["source"] == "local"]
    wanted += [(f"benchmarks.{name}.{key}", bench[key], "directory") for name, bench in config["benchmarks"].items()
               for key in ("data_dir", "include_path") if key in bench]
    wanted += [(f"benchmarks.{name}.calibration.data_dir", bench["calibration"]["data_dir"], "directory")
               for name, bench in config["benchmarks"].items() if "data_dir" in bench.get("calibration", {})]
    # an hf judge is a config model or a Hugging Face directory
    wanted += [(f"judges.{name}.model", judge["model"], "directory") for name, judge in config["judges"].items()
               if judge["type"] == "hf" and judge["model"] not in config["models"]]
    for key, path, kind in wanted:
        p = Path(path)
        if not str(path).strip():
            raise ConfigError(f"config key {key}: an empty path")
        try:
            p.is_dir()
        except OSError as exc:  # a name too long for the file system, ...
            raise ConfigError(f"config key {key}: not a usable path ({exc.strerror})") from None
        if p.is_dir() and Path.cwd().resolve().is_relative_to(p.resolve()):
            # its files are inputs: results/ and everything else of the project would be
            raise ConfigError(f"config key {key}: {_short(repr(path))} holds the working directory itself, whose "
                              "results would become inputs of the jobs that read it")
        if not p.exists():
            raise ConfigError(f"config key {key}: {_short(repr(path))} does not exist (relative paths: from the "
                              "working directory, else the workflow's)")
        if kind == "file" and p.is_dir():
            raise ConfigError(f"config key {key}: {_short(repr(path))} is a directory; give a JSON, JSONL or CSV file")
        if kind == "directory" and not p.is_dir():
            raise ConfigError(f"config key {key}: {_short(repr(path))} is not a directory")


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
    """A sharded recipe's (disperse_merge) k shards each need an example: k may not exceed what its selection can keep.

    ``pool_bounds``: dataset → most training examples it can have (None: known only after data preparation).
    """
    import math

    from sftlab.compose.members import COMPOSITIONS

    for exp_id, exp in config["experiments"].items():
        for recipe_name in exp["recipes"]:
            recipe = config["recipes"][recipe_name]
            if not COMPOSITIONS[recipe["composition"]["name"]].shards:
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


def preference_selectors() -> tuple[str, ...]:
    """The influence selectors that score against preference pairs with a DPO loss (rose), from the registry."""
    from sftlab.selection import SELECTORS

    return tuple(name for name, cls in SELECTORS.items() if cls.validation_loss == "dpo")


def targeted_selectors() -> tuple[str, ...]:
    """The selectors that score the pool against a validation set (less, rose, bm25, dsir, rds, rds_plus)."""
    from sftlab.selection import SELECTORS

    return tuple(name for name, cls in SELECTORS.items() if cls.targeted)


def resolve_influence_selections(config: dict) -> None:
    """Check every targeted selection (less, rose, bm25, ...) against its validation set and fill in the set's
    ``shots``.

    ROSE needs preference pairs (its validation loss is DPO); the others take SFT examples, or the chosen
    answers of pairs. The settings of the other selectors may not carry these keys.
    """
    from sftlab.data.demo import FAMILIES

    for name in config["validation"]:
        dataset = config["validation"][name]["dataset"]
        if dataset not in config["datasets"]:
            raise ConfigError(f"config key validation.{name}.dataset: no dataset named {dataset!r}")
        # a demo dataset's subtasks are its families, known before any data is made
        ds = config["datasets"][dataset]
        for i, subtask in enumerate(config["validation"][name].get("subtasks") or []):
            if ds["source"] == "demo" and subtask not in (ds.get("families") or FAMILIES):
                raise ConfigError(f"config key validation.{name}.subtasks[{i}]: demo dataset {dataset!r} has no "
                                  f"family {_short(repr(subtask))} (it has {list(ds.get('families') or FAMILIES)})")
    for name, recipe in config["recipes"].items():
        sel, where = recipe["selection"], f"recipes.{name}.selection"
        if sel["name"] not in targeted_selectors():
            extra = [k for k in _INFLUENCE_KEYS if k in sel]
            if extra:
                raise ConfigError(f"config key {where}.{extra[0]}: only the selectors that score against a "
                                  f"validation set ({', '.join(targeted_selectors())}) take it")
            continue
        if sel["name"] not in preference_selectors() and "beta" in sel:
            raise ConfigError(f"config key {where}.beta: the {sel['name']} selector has no DPO temperature "
                              f"({', '.join(preference_selectors())} only)")
        vset = config["validation"].get(sel["validation"])
        if vset is None:
            raise ConfigError(f"config key {where}.validation: no validation set named {sel['validation']!r} "
                              f"(known: {sorted(config['validation'])})")
        ds = config["datasets"][vset["dataset"]]
        count_key = {"pairs": "preference_pairs", "heldout": "heldout", "train": "per_family"}[vset["split"]]
        if ds["source"] == "demo" and ds[count_key] == 0:  # the warmup's validation set would be empty
            raise ConfigError(f"config key datasets.{vset['dataset']}.{count_key}: 0, but validation set "
                              f"{sel['validation']!r} of {where} takes its {vset['split']!r} items")
        if sel["name"] in preference_selectors() and vset["split"] != "pairs":
            raise ConfigError(f"config key {where}.validation: {sel['name']} needs preference pairs, but validation set "
                              f"{sel['validation']!r} takes {vset['split']!r} examples")
        sel.setdefault("shots", vset["shots"])


def check_token_budget(config: dict) -> None:
    """Every gradient-feature item must fit ``gradients.max_tokens``: max_length tokens a sequence (the warmup's),
    two sequences for a rose (DPO) pair. Refused here, before any job starts, rather than by the job."""
    names = {r["selection"]["name"] for r in config["recipes"].values()}
    if not names & set(influence_selectors()):
        return
    max_length = deep_merge(config["training"], config["warmup"]["training"])["max_length"]
    pairs = sorted(names & set(preference_selectors()))
    need = max_length * (2 if pairs else 1)
    budget = config["gradients"]["max_tokens"]
    if budget < need:
        raise ConfigError(f"config key gradients.max_tokens: {budget} tokens cannot hold one item of "
                          f"{f'a {pairs[0]} pair: 2 × ' if pairs else ''}max_length {max_length} = {need} tokens")


def check_selection(key: str, recipe: dict) -> None:
    """The fraction is a share of the pool: refuse one the selector cannot deliver (confident / unconfident: a half)."""
    from sftlab.selection import SELECTORS

    selection = recipe["selection"]
    limit = SELECTORS[selection["name"]].max_fraction
    if selection["fraction"] > limit:
        raise ConfigError(f"config key {key}.selection.fraction: {selection['fraction']:g} of the pool, but selector "
                          f"{selection['name']!r} delivers at most {limit:g} of it (fraction is a share of the pool)")


def selection_model(selection: dict, trained: str) -> str:
    """The model whose features a selection ranks by (``selection.model``, else the trained model): the selection's
    results (warmup, gradient features, influence, reference run, confidence, the ids) live under its name, so
    recipes that train different models on one selection share it."""
    return selection.get("model") or trained


def reads_confidence(objective: dict) -> bool:
    """Whether an objective reads the pool's confidence split (SFTMix's confident × unconfident pairs)."""
    from sftlab.objectives import build_objective

    return "confident" in build_objective(objective["name"], {k: v for k, v in objective.items() if k != "name"}).columns


def check_selection_model(key: str, recipe: dict, models: dict) -> None:
    """``selection.model`` names a model of the config, and the recipe has a model's features to take from it."""
    from sftlab.selection import SELECTORS

    selection = recipe["selection"]
    if "model" not in selection:
        return
    if selection["model"] not in models:
        raise ConfigError(f"config key {key}.selection.model: no model named {_short(repr(selection['model']))} "
                          f"(known: {sorted(models)})")
    if not SELECTORS[selection["name"]].model_features and not reads_confidence(recipe["objective"]):
        raise ConfigError(f"config key {key}.selection.model: selector {selection['name']!r} ranks by no model's "
                          f"features and objective {recipe['objective']['name']!r} reads no confidence split, so no "
                          "model's features are used; leave it out")


def check_pair_batches(key: str, recipe: dict) -> None:
    """An objective that pairs examples within each per-device batch (``pairs_examples``: SFTMix's Mixup) fails on an
    odd batch_size in every training process, after all the jobs before it (all.yaml's rose_sftmix took the LESS/ROSE
    batch of 1)."""
    from sftlab.objectives import OBJECTIVES
    from sftlab.registry import lookup

    batch, name = recipe["training"]["batch_size"], recipe["objective"]["name"]
    if lookup(OBJECTIVES, "objective", name).pairs_examples and (batch < 2 or batch % 2):
        raise ConfigError(f"config key {key}.training.batch_size: the {name} objective pairs examples within a batch, "
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
    from sftlab.compose.merge import MERGE_METHODS, resolve_params

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
    # the merge job's own check of its parameters (weights summing to 0, ...), before the members train
    try:
        resolve_params(merge["method"], members, {p: merge[p] for p in method.params if p in merge})
    except ValueError as exc:
        param = next((p for p in method.params if p in merge and p in str(exc)), "method")
        raise ConfigError(f"config key {key}.composition.merge.{param}: {exc}") from None
    if merge["merge_space"] == "adapter":
        if merge["method"] != "average":
            raise ConfigError(f"config key {key}.composition.merge.method: merge_space 'adapter' averages LoRA "
                              f"matrices and supports only 'average', got {merge['method']!r}")
        if recipe["training"]["finetuning"] != "lora":
            raise ConfigError(f"config key {key}.composition.merge.merge_space: 'adapter' needs LoRA runs, but "
                              f"training.finetuning is {recipe['training']['finetuning']!r}")


#: PyYAML's safe loader, parsed by libyaml where PyYAML has it: every Snakemake process reads the config and the
#: schema while parsing the Snakefile (the planner, and each cluster job's two: its job step's and srun's), and the
#: pure-Python parser took a third of the Snakefile's own time (tests/test_config.py checks both read the same)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(SAFE_LOADER):
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
