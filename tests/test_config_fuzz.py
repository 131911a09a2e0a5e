"""Fuzz test of the plan-time checks (issue 24): every leaf of configs/tiny.yaml and of configs/paper/all.yaml (and
every name of their tables) replaced by hostile values: NaN, ±inf, 0, negative, huge, empty, the wrong type, strings
with Jinja, shell, path and newline metacharacters.

Planning must either refuse the value naming its key, or accept it as plain data: then every number of the prepared
config is finite, every name a whole safe name, no template string holds template syntax, no secret is left where it
would be printed. Validated in-process through ``prepare()`` (and the plan-time checks of workflow/rules/common.smk);
the hostile strings that are plain data all go into one config that is planned (``snakemake -n -p``): no job's
command carries one unquoted, no job writes outside results/, resources/, reports/ and logs/.

Seeded (hypothesis ``derandomize``) and bounded: ``FUZZ_EXAMPLES`` values a config, about a minute on one core
(to look further locally: SFTLAB_FUZZ_EXAMPLES=5000 SFTLAB_FUZZ_SEED=7).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import shlex
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sftlab.config import (JINJA_DELIMITERS, SECRET_NAME_KEYS, TEMPLATE_KEYS, ConfigError, check_local_files,
                           check_shards_fit, load_schema, name_pattern, prepare, read_yaml)
from sftlab.data.prepare import pool_bound
from sftlab.benchmarks.lm_eval import TASK_NAME
from sftlab.secrets import looks_like_secret, url_secrets

from _plan import dry_run_jobs, plan

ROOT = Path(__file__).resolve().parents[1]


def unshared(value):
    """A copy in which no two keys share a value (YAML aliases do): a hostile value lands on one key only."""
    if isinstance(value, dict):
        return {k: unshared(v) for k, v in value.items()}
    return [unshared(v) for v in value] if isinstance(value, list) else value


CONFIGS = {name: unshared(read_yaml(ROOT / path)) for name, path in (("tiny", "configs/tiny.yaml"),
                                                                     ("paper", "configs/paper/all.yaml"))}
FUZZ_EXAMPLES = {"tiny": 1000, "paper": 300}
SCALE = int(os.environ.get("SFTLAB_FUZZ_EXAMPLES", "0"))
SEED = os.environ.get("SFTLAB_FUZZ_SEED")  # another seed than the fixed one, to look further
#: tables whose names become path components and wildcards
NAMED_TABLES = ("models", "datasets", "recipes", "benchmarks", "judges", "validation", "sweeps")
MARK = "PWNED"

HOSTILE_NUMBERS = [math.nan, math.inf, -math.inf, 0, 0.0, -1, -0.5, 1e300, -1e300, 10**30, 2**63]
HOSTILE_OTHER = [None, True, False, "", [], {}, [None], {"x": 1}, [[1]]]
HOSTILE_STRINGS = [
    "{{ 7 * 7 }}", "{% if 1 %}x{% endif %}", "{# c #}", f"$(touch {MARK})", f"; touch {MARK} #", f"`touch {MARK}`",
    f"' ; touch {MARK} ; '", "../../../../ESCAPE", "/tmp/ESCAPE", "a/b", "x\n", "\nx", " x ", "x\x00y", "é",
    "a" * 5000, "https://user:pass@host/v1", "sk-" + "A1b2" * 8, "-rf", "*", "~", "x,y", "{x}", "%s", ".", "..",
]
METACHARS = "{}%#$`'\";|&<>()*?~!\\/.\n\t :,=[]-_aZ09é"


def leaves(value, path=()):
    """(path, value) of every scalar and empty container; (path + ("<name>",), key) of every table name."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            if len(path) == 1 and path[0] in (*NAMED_TABLES, "experiments"):
                yield (*path, key, "<name>"), key
            yield from leaves(item, (*path, key))
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    else:
        yield path, value


def derived(original) -> list:
    """Hostile variants of the value a leaf holds."""
    if isinstance(original, bool) or original is None:
        return [not original, 0, "true"]
    if isinstance(original, (int, float)):
        return [-original, original * 1e300, original + 0.5, str(original), [original], -original - 1]
    if isinstance(original, str):
        return [original + "\n", " " + original, original + " ", original + "/../../ESCAPE", "../" + original,
                original.upper(), original + "{{x}}", original + "; touch " + MARK]
    return [None]


def mutated(raw: dict, path: tuple, value) -> dict:
    raw = copy.deepcopy(raw)
    *head, last = path
    target = raw
    for part in head[:-1] if last == "<name>" else head:
        target = target[part]
    if last == "<name>":  # a second entry under the hostile name: the references to the first still hold
        if value in target:
            raise KeyError(value)
        target[value] = copy.deepcopy(target[head[-1]])
    else:
        target[last] = value
    return raw


def plan_time(raw: dict) -> dict:
    """What the Snakefile runs before planning: prepare() and the checks of workflow/rules/common.smk (relative
    paths from the project, as a run from it takes them)."""
    with contextlib.chdir(ROOT):
        cfg = prepare(raw)
        check_local_files(cfg)
        check_shards_fit(cfg, {name: pool_bound(ds) for name, ds in cfg["datasets"].items()})
    return cfg


def key_forms(path: tuple) -> set[str]:
    """How an error message may write a key path or one of its parents (down to a table entry)."""
    parts = [p for p in path if p != "<name>"]
    forms = set()
    for end in range(len(parts), 0, -1):
        prefix = parts[:end]
        forms.add(".".join(map(str, prefix)))
        forms.add("".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(prefix)))
    return forms


def names_its_key(message: str, path: tuple, value) -> bool:
    """The message names the key, or a parent down to the table entry (`recipes.sft`); a hostile name: the new
    entry or its table."""
    named = re.findall(r"config key ([^\s:]+)", message)
    if path[-1] == "<name>":
        wanted = {path[0]} | key_forms((path[0], value))
        return any(n in wanted or n.startswith(f"{path[0]}.{value}.") for n in named)
    entry = ".".join(map(str, path[:2]))
    return any(n in key_forms(path) and (len(path) == 1 or n.startswith(entry)) for n in named)


def walk(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from walk(item, (*path, i))


NAME = re.compile(name_pattern(load_schema(), "recipes")[1:-1])


def unsafe(cfg: dict) -> list[str]:
    """What an accepted config may not hold."""
    problems = []
    for path, value in walk({k: v for k, v in cfg.items() if not k.startswith("_")}):
        last = path[-1] if path else None
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{path}: not finite")
        if isinstance(value, str):
            if last in TEMPLATE_KEYS and JINJA_DELIMITERS.search(value):
                problems.append(f"{path}: template syntax")
            if last in SECRET_NAME_KEYS and looks_like_secret(value):
                problems.append(f"{path}: a key")
            if "://" in value and url_secrets(value):
                problems.append(f"{path}: URL credentials")
    for table in NAMED_TABLES:
        problems += [f"{table}: name {name!r}" for name in cfg[table]
                     if not (isinstance(name, str) and NAME.fullmatch(name))]
    problems += [f"benchmarks.{n}.task {b['task']!r}" for n, b in cfg["benchmarks"].items()
                 if b["type"] == "lm_eval" and not TASK_NAME.fullmatch(b["task"])]
    return problems


def hostile_values(original):
    return st.one_of(st.sampled_from(HOSTILE_NUMBERS + HOSTILE_OTHER), st.sampled_from(HOSTILE_STRINGS),
                     st.sampled_from(derived(original)), st.text(alphabet=METACHARS, max_size=12))


TRIED: dict[str, list] = {}


def fuzz(config: str):
    raw = CONFIGS[config]
    targets = list(leaves(raw))

    @st.composite
    def cases(draw):
        path, original = draw(st.sampled_from(targets))
        value = draw(hostile_values(original).filter(lambda v: path[-1] != "<name>" or isinstance(v, (str, int))))
        return path, value

    @settings(max_examples=SCALE or FUZZ_EXAMPLES[config], derandomize=SEED is None, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @seed(int(SEED or 0))
    @given(cases())
    def check(case):
        path, value = case
        try:
            candidate = mutated(raw, path, value)
        except (KeyError, TypeError):  # a name that collides with another: nothing to try
            return
        TRIED.setdefault(config, []).append(case)
        try:
            cfg = plan_time(candidate)
        except ConfigError as exc:
            assert names_its_key(str(exc), path, value), f"{path} = {value!r}: refused without naming its key: {exc}"
            return
        assert not unsafe(cfg), f"{path} = {value!r}: accepted, but {unsafe(cfg)}"

    check()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_hostile_value_is_refused_naming_its_key_or_is_plain_data(config):
    fuzz(config)
    tried = TRIED[config]
    assert len(tried) >= 0.9 * (SCALE or FUZZ_EXAMPLES[config])
    # the draws reach every kind of value (numbers, strings, containers) and names
    assert {type(v).__name__ for _, v in tried} >= {"float", "int", "str"}
    assert any(isinstance(v, (list, dict)) for _, v in tried)
    assert any(p[-1] == "<name>" for p, _ in tried)


PAYLOADS = [f"x$(touch {MARK}1)'\"; touch {MARK}2 #{{{{7*7}}}}\n", f"x$(touch {MARK}1)'\"; touch {MARK}2 #"]


def data_strings(raw: dict) -> tuple[dict, list[tuple]]:
    """The config with every string leaf that planning accepts as plain data replaced by a shell payload."""
    changed = []
    for path, original in leaves(raw):
        if not isinstance(original, str) or path[-1] == "<name>":
            continue
        for payload in PAYLOADS:
            candidate = mutated(raw, path, payload)
            try:
                plan_time(candidate)
            except ConfigError:
                continue
            raw, _ = candidate, changed.append(path)
            break
    return raw, changed


def test_hostile_strings_that_are_plain_data_reach_no_shell_unquoted_and_no_path_outside_the_project():
    raw = copy.deepcopy(CONFIGS["tiny"])
    # string settings the tiny config leaves at their defaults
    raw["benchmarks"]["mc_demo"].update(answer_prompt="Answer:", metric="acc", filter="none")
    raw, changed = data_strings(raw)
    # descriptions and the exam's answer prompt at least are plain data
    assert ("recipes", "sft", "description") in changed and ("benchmarks", "mc_demo", "answer_prompt") in changed
    with tempfile.TemporaryDirectory(prefix="fuzz-plan-") as tmp:
        work = Path(tmp) / "a" / "b" / "c" / "d" / "project"
        work.mkdir(parents=True)
        configfile = work / "hostile.yaml"
        import yaml

        configfile.write_text(yaml.safe_dump(raw, allow_unicode=True))
        proc = plan(configfile, work)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        jobs = dry_run_jobs(proc.stdout)
        assert len(jobs) > 50
        for job in jobs:
            for out in job["output"]:
                parts = Path(out).parts
                assert not Path(out).is_absolute() and ".." not in parts, out
                assert parts[0] in ("results", "resources", "reports", "logs"), out
            # a payload is one word of the command wherever it appears: `touch` never becomes a command
            words = shlex.split(job["shell"] or "")
            assert not any(w in (f"{MARK}1)'", f"{MARK}2", "touch") for w in words), job["shell"]
        # the payloads do reach commands (the exam's settings, as one quoted JSON word)
        assert any(MARK in (job["shell"] or "") for job in jobs)
        assert not list(Path(tmp).rglob(f"*{MARK}*"))
