"""The rule files keep rules: planning logic lives in sftlab.plan (pure, unit-tested functions of config and
wildcards), and the Python left in the .smk files — outside rules — stays a few lines of wiring."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "workflow" / "rules").glob("*.smk")) + [ROOT / "Snakefile"]
# Snakemake's own top-level directives: their indented bodies are not Python outside rules
DIRECTIVE = re.compile(r"^(rule|checkpoint|localrules|ruleorder|wildcard_constraints|include|configfile|envvars|"
                       r"onstart|onsuccess|onerror|module|use rule|workdir|min_version|conda|container)\b")


def python_outside_rules(text: str) -> int:
    """Non-blank, non-comment lines outside Snakemake directives (a rule defined in a loop counts in full)."""
    count, in_directive = 0, False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if line[0] not in " \t":
            in_directive = bool(DIRECTIVE.match(line))
            if in_directive:
                continue
        if not in_directive and not stripped.startswith("#"):
            count += 1
    return count


def test_the_counter_on_a_hand_made_rule_file():
    text = ('"""doc"""\n\nimport os\n# a comment\nrule a:\n    input:\n        "x",\n    run:\n        y = 1\n'
            'X = 1\ndef f():\n    return 2\nlocalrules:\n    a,\n')
    # the docstring, the import, X and f's two lines; the rule's body and localrules' do not count
    assert python_outside_rules(text) == 5


def test_the_rule_files_hold_under_200_lines_of_python_and_no_functions():
    counts = {f.name: python_outside_rules(f.read_text()) for f in RULE_FILES}
    assert sum(counts.values()) < 200, counts
    functions = [f"{f.name}: {m}" for f in RULE_FILES for m in re.findall(r"^def \w+", f.read_text(), flags=re.M)]
    assert functions == []
