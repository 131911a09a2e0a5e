"""docs/architecture.md cannot drift from the workflow: every rule of the workflow (parsed with the tiny config,
which plans every rule) is named in it, every output path of a rule matches a line of its Paths section, and every
documented path under results/, resources/ or reports/ is some rule's output or one of the few paths no rule
declares."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sftlab.report.dag import _workflow

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PREFIXES = ("resources/", "results/", "reports/", "logs/", "benchmarks/")
# documented paths no rule declares as an output: written by jobs as they go, by the planning process, or by
# `snakemake --report`
UNDECLARED = {"results/judge_cache/{judge}.jsonl", "results/.code/{script}@{variant}.sha", "reports/report.html",
              "logs/{rule}/...", "benchmarks/{rule}/..."}


@pytest.fixture(scope="module")
def rule_outputs(tmp_path_factory) -> dict[str, list[str]]:
    """rule → its output patterns, wildcard constraints dropped (``{model,tiny}`` → ``{model}``)."""
    with _workflow(ROOT / "Snakefile", [str(ROOT / "configs" / "tiny.yaml")], None, tmp_path_factory.mktemp("w")) as wf:
        return {rule.name: [strip_constraints(str(out)) for out in rule.output] for rule in wf.rules}


def strip_constraints(pattern: str) -> str:
    """``{name,regex}`` → ``{name}`` (the regex may hold one level of braces of its own)."""
    return re.sub(r"\{(\w+),[^{}]*(?:\{[^{}]*\}[^{}]*)*\}", r"{\1}", pattern)


def section(text: str, heading: str) -> str:
    return re.split(r"^## ", text.split(f"## {heading}\n", 1)[1], maxsplit=1, flags=re.M)[0]


def documented_paths(text: str) -> list[str]:
    """The path patterns of the Paths section's code block: every word starting with a top folder of the results."""
    block = section(text, "Paths").split("```", 2)[1]
    return [word for line in block.splitlines() for word in line.split() if word.startswith(PREFIXES)]


def as_regex(doc_pattern: str) -> re.Pattern:
    """A documented pattern as a regex over rule outputs: `{x}` one wildcard or name, `*` within a folder, `...`
    anything below, `{a,b}` either, a trailing `/` a directory."""
    parts = re.split(r"(\{[^}]*\}|\.\.\.|\*)", doc_pattern.rstrip("/"))
    regex = ""
    for part in parts:
        if part == "...":
            regex += ".+"
        elif part == "*":
            regex += "[^/]+"
        elif part.startswith("{") and "," in part:
            regex += "(?:" + "|".join(re.escape(a) for a in part[1:-1].split(",")) + ")"
        elif part.startswith("{"):
            regex += "[^/]+"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def test_constraints_are_dropped_from_output_patterns():
    assert strip_constraints("results/{model,tiny}/{c,\\d+}/{selector,(less|rose)-[^/]+}.pt") == \
        "results/{model}/{c}/{selector}.pt"
    assert strip_constraints("a/{member,shards/shard-[0-9]{2}|seeds}/m") == "a/{member}/m"


def test_the_matcher_tells_documented_from_undocumented():
    patterns = [as_regex(p) for p in ("results/{model}/grads/...", "reports/tables/*.{md,csv}", "results/{m}/model/")]
    def documented(out):
        return any(p.fullmatch(out) for p in patterns)
    assert documented("results/{model}/grads/train/checkpoint-{c}.pt")
    assert documented("reports/tables/main.csv") and not documented("reports/tables/main.tex")
    assert documented("results/{model}/model") and not documented("results/{model}/model/extra")


def test_every_rule_is_named_in_the_architecture_doc(rule_outputs):
    text = DOC.read_text()
    missing = [rule for rule in rule_outputs if rule != "all" and not re.search(rf"\b{rule}\b", text)]
    assert missing == []


def test_every_output_path_is_documented(rule_outputs):
    patterns = [as_regex(p) for p in documented_paths(DOC.read_text())]
    undocumented = [f"{rule}: {out}" for rule, outs in rule_outputs.items() for out in outs
                    if not any(p.fullmatch(out) for p in patterns)]
    assert undocumented == []


def test_every_documented_path_is_an_output(rule_outputs):
    outputs = [out for outs in rule_outputs.values() for out in outs]
    stale = [p for p in documented_paths(DOC.read_text())
             if p not in UNDECLARED and not any(as_regex(p).fullmatch(out) for out in outputs)]
    assert stale == []
