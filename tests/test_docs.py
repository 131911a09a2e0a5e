"""The user documentation links only to what a user has: every relative link and path in README.md and docs/*.md
resolves to a file or directory inside the repository, and every #anchor to a heading of its target."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# [text](target) and ![alt](target), and reference definitions `[name]: target`
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.M)
# a relative path written as code, e.g. `../shared/DESIGN.md` or `./profiles/slurm`
CODE_PATH = re.compile(r"`(\.{1,2}/[^`\s]+)`")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def github_anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # a '#' line in a code block is no heading
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every link and code path in a Markdown file, fenced code blocks included for paths."""
    found = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        for pattern in (INLINE_LINK, REFERENCE_LINK, CODE_PATH):
            found += [(lineno, m.group(1)) for m in pattern.finditer(line)]
    return found


def broken(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for lineno, target in links(path):
        if EXTERNAL.match(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{lineno}: {target}"
        if not resolved.is_relative_to(root):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(doc):
    assert broken(doc) == []


def test_the_architecture_and_methods_docs_exist_and_are_linked_from_the_readme():
    readme_targets = {target for _, target in links(ROOT / "README.md")}
    assert {"docs/architecture.md", "docs/methods.md"} <= readme_targets


def test_the_checker_catches_what_it_is_for(tmp_path):
    """A link out of the repository (what the README had), a missing file and a missing anchor are all reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n\n## Paths\n")
    doc = tmp_path / "README.md"
    doc.write_text(
        "See `../shared/DESIGN.md` and [methods](../shared/METHODS.md).\n"
        "[gone](docs/missing.md) [ok](docs/a.md#paths) [bad anchor](docs/a.md#layout) [web](https://example.org/x)\n"
        "[self](#intro)\n\n# Intro\n"
    )
    problems = broken(doc, root=tmp_path)
    assert len(problems) == 4, problems
    assert sum("outside the repository" in p for p in problems) == 2
    assert any("docs/missing.md does not exist" in p for p in problems)
    assert any("no heading #layout" in p for p in problems)
