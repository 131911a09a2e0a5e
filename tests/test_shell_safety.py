"""Nothing a config says reaches a shell or a path unchecked: every value in a rule's shell command is quoted, a
generated recipe name obeys the recipe-name pattern, and an adversarial sweep is refused before any job."""

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sftlab.config import ConfigError, prepare

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk"))

MINIMAL = {
    "models": {"m": {"source": "random"}},
    "datasets": {"d": {"source": "demo"}},
    "recipes": {"sft": {}},
    "experiments": {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft"]}},
}


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line, command) of every `shell:` directive: the string literals on the lines after it, concatenated."""
    lines = path.read_text().splitlines()
    commands = []
    for i, line in enumerate(lines):
        if line.strip() != "shell:":
            continue
        parts, j = [], i + 1
        while j < len(lines) and re.match(r'\s*[rf]?"', lines[j]):
            parts.append(ast.literal_eval(lines[j].strip()))
            j += 1
        assert parts, f"{path.name}:{i + 1}: a shell directive without a string literal on the next lines"
        commands.append((i + 1, "".join(parts)))
    return commands


def unquoted_placeholders(command: str) -> list[str]:
    """Snakemake placeholders (`{input.x}`) without the `:q` format spec; `{{` / `}}` are literal braces."""
    fields = re.findall(r"(?<!\{)\{([^{}]+)\}(?!\})", command.replace("{{", "").replace("}}", ""))
    return [f for f in fields if not f.endswith(":q")]


def test_every_placeholder_of_every_rule_is_quoted():
    commands = [(path.name, line, cmd) for path in RULE_FILES for line, cmd in shell_commands(path)]
    # every rule is seen
    n_rules = sum(len(re.findall(r"^\s*rule(?: \w+)?:", p.read_text(), flags=re.M)) for p in RULE_FILES)
    assert len(commands) == n_rules and len(commands) >= 25  # every rule runs a shell command
    bad = [f"{name}:{line}: {{{field}}}" for name, line, cmd in commands for field in unquoted_placeholders(cmd)]
    assert not bad, "unquoted values in shell commands:\n" + "\n".join(bad)


def test_the_audit_sees_an_unquoted_placeholder():
    assert unquoted_placeholders("python {input.script:q} --name {wildcards.recipe} '{{\"a\": 1}}'") == [
        "wildcards.recipe"]


def sweep(name=None, grid=None):
    raw = {**MINIMAL, "sweeps": {"s": {"recipe": "sft", "grid": grid or {"training.learning_rate": [1e-5]}}}}
    if name is not None:
        raw["sweeps"]["s"]["name"] = name
    return raw


@pytest.mark.parametrize("template", ["x;touch PWNED;#", "../../../../ESCAPE_{training.learning_rate}",
                                      "a b", "_hidden", "$(id)", "lr{training.learning_rate}/x"])
def test_generated_names_obey_the_recipe_name_pattern(template):
    with pytest.raises(ConfigError, match=r"config key sweeps\.s\.name: generated recipe name .* is not a valid"):
        prepare(sweep(template))


def test_a_grid_value_with_unsafe_characters_is_refused_naming_the_grid():
    with pytest.raises(ConfigError, match=r"config key sweeps\.s\.grid: generated recipe name"):
        prepare(sweep(grid={"training.lora.target_modules": [["q_proj", "x;rm -rf ~"]]}))


def test_list_values_get_a_readable_safe_name():
    cfg = prepare(sweep(grid={"training.lora.target_modules": [["q_proj", "v_proj"], ["o_proj"]]}))
    assert cfg["_sweeps"]["s"] == ["sft_target_modulesq_proj-v_proj", "sft_target_moduleso_proj"]
    assert cfg["recipes"]["sft_target_modulesq_proj-v_proj"]["training"]["lora"]["target_modules"] == ["q_proj", "v_proj"]


def test_a_grid_value_that_is_a_whole_block_gets_its_defaults():
    raw = sweep(grid={"composition.merge": [{"method": "ties", "density": 0.5}]})
    raw["recipes"] = {"sft": {"composition": {"name": "disperse_merge", "k": 2}}}
    cfg = prepare(raw)
    assert cfg["_sweeps"]["s"] == ["sft_mergemethod-ties-density-0.5"]
    assert cfg["recipes"]["sft_mergemethod-ties-density-0.5"]["composition"]["merge"] == {
        "method": "ties", "density": 0.5, "merge_space": "delta", "seed": 0}


def test_a_pasted_key_in_api_key_env_is_refused_without_echoing_it():
    secret = "sk-proj-AbC123xyz_secret"
    raw = {**MINIMAL, "judges": {"gpt": {"type": "openai", "model": "gpt-4", "api_key_env": secret}}}
    with pytest.raises(ConfigError) as err:
        prepare(raw)
    assert "judges.gpt.api_key_env" in str(err.value) and "NAME of an environment variable" in str(err.value)
    assert "AbC123" not in str(err.value)
    for name in ("OPENAI_API_KEY", "_KEY2", None):
        prepare({**MINIMAL, "judges": {"gpt": {"type": "openai", "model": "gpt-4", "api_key_env": name}}})


def test_injection_through_a_sweep_name_runs_nothing_and_writes_nothing_outside_results(tmp_path):
    """A real (not dry) run of the adversarial sweep: refused before any job; no file appears but Snakemake's own."""
    work = tmp_path / "a" / "b" / "c" / "d" / "project"
    work.mkdir(parents=True)
    templates = {"pwn": "x;touch PWNED;#{training.learning_rate}", "escape": "../../../../ESCAPE_{training.learning_rate}"}
    for key, template in templates.items():
        raw = sweep(template)
        raw["experiments"] = {"e": {"models": ["m"], "datasets": ["d"], "recipes": ["sft", "s"]}}
        config = work / f"{key}.yaml"
        config.write_text(yaml.safe_dump(raw))
        before = {p for p in tmp_path.rglob("*")}
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "1",
                               "--directory", str(work), "--configfile", str(config)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=300)
        assert proc.returncode != 0
        assert "config key sweeps.s.name: generated recipe name" in proc.stderr + proc.stdout
        new = {p for p in tmp_path.rglob("*")} - before
        assert not [p for p in new if ".snakemake" not in p.parts], sorted(map(str, new))
        assert not list(tmp_path.rglob("PWNED")) and not list(Path.cwd().glob("PWNED"))
