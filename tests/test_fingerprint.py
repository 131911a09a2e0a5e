"""sftlab.fingerprint on a small package written here: what a script reaches (definitions named through imports,
lazy imports, modules loaded on import, registries), what changes the fingerprint, and its file's dates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sftlab.fingerprint import fingerprint, reach, sync

FILES = {
    "__init__.py": '"""The package."""\n',
    "losses/__init__.py": "from .base import LOSSES, register\nfrom . import mse  # registers\nfrom . import hinge\n",
    "losses/base.py": "LOSSES = {}\n\ndef register(name):\n    def deco(cls):\n        LOSSES[name] = cls\n"
                      "        return cls\n    return deco\n",
    "losses/mse.py": "from .base import register\nfrom .util import square\n\n@register('mse')\nclass MSE:\n"
                     "    def __call__(self, x):\n        return square(x)\n",
    "losses/hinge.py": "from .base import register\n\n@register('hinge')\nclass Hinge:\n"
                       "    def __call__(self, x):\n        return max(0, 1 - x)\n",
    "losses/util.py": "SCALE = 1.0\n\ndef square(x):\n    return SCALE * x * x\n\ndef cube(x):\n    return x ** 3\n",
    "scoring.py": "from sftlab.losses.util import cube\n\nprint('loading scoring')\n\n"
                  "def score(x):\n    from sftlab.metrics import accuracy\n    return accuracy(cube(x))\n",
    "metrics.py": "THRESHOLD = 0.5\n\ndef accuracy(x):\n    return x > THRESHOLD\n\ndef unused(x):\n    return -x\n",
}
SCRIPT = "import sys\nfrom sftlab.scoring import score\nfrom sftlab.losses import LOSSES\n\n" \
         "def main():\n    print(score(float(sys.argv[1])), LOSSES)\n"


@pytest.fixture
def package(tmp_path):
    root = tmp_path / "sftlab"
    for rel, text in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (tmp_path / "script.py").write_text(SCRIPT)
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_what_a_script_reaches(package):
    script = package.parent / "script.py"
    units = reach(script, package_dir=package)
    modules = {module for module, _ in units}
    # scoring.score's lazy import and cube; scoring's print (run on import); not metrics.unused, not the losses'
    # types (registered only), not util.square
    assert modules == {"script", "sftlab.scoring", "sftlab.losses.util", "sftlab.metrics", "sftlab.losses.base"}
    dumps = "\n".join(units.values())
    assert "'accuracy'" in dumps and "'THRESHOLD'" in dumps and "'cube'" in dumps and "loading scoring" in dumps
    assert "'unused'" not in dumps and "'square'" not in dumps and "Hinge" not in dumps
    with_mse = {module for module, _ in reach(script, ["sftlab.losses.mse"], package_dir=package)}
    assert with_mse == modules | {"sftlab.losses.mse"}
    every = {module for module, _ in reach(script, registries=["sftlab.losses"], package_dir=package)}
    assert every == modules | {"sftlab.losses.mse", "sftlab.losses.hinge"}


def test_comments_docstrings_and_formatting_keep_the_fingerprint(package):
    script = package.parent / "script.py"
    before = fingerprint(script, ["sftlab.losses.mse"], package_dir=package)
    for path in [*package.rglob("*.py"), script]:
        path.write_text("# a header comment\n" + path.read_text() + "\n\n# the end\n")
    edit(package / "metrics.py", "def accuracy(x):\n", 'def accuracy(x):\n    """Above the threshold."""\n')
    edit(package / "losses/util.py", "return SCALE * x * x", "return (SCALE\n            * x * x)")
    assert fingerprint(script, ["sftlab.losses.mse"], package_dir=package) == before


@pytest.mark.parametrize("path, old, new, changes", [
    ("metrics.py", "THRESHOLD = 0.5", "THRESHOLD = 0.6", True),  # read by a lazily imported function
    ("metrics.py", "return -x", "return x", False),  # a function nothing reaches
    ("losses/util.py", "SCALE = 1.0", "SCALE = 2.0", "mse"),  # only the MSE type reaches it
    ("losses/hinge.py", "1 - x", "2 - x", "hinge"),
    ("scoring.py", "'loading scoring'", "'loading'", True),  # run on import
])
def test_what_changes_the_fingerprint(package, path, old, new, changes):
    script = package.parent / "script.py"
    variants = {"mse": ["sftlab.losses.mse"], "hinge": ["sftlab.losses.hinge"]}
    before = {k: fingerprint(script, v, package_dir=package)[0] for k, v in variants.items()}
    edit(package / path, old, new)
    after = {k: fingerprint(script, v, package_dir=package)[0] for k, v in variants.items()}
    expected = {k: changes is True or changes == k for k in variants}
    assert {k: before[k] != after[k] for k in variants} == expected


def test_the_fingerprint_file_changes_only_with_the_meaning(package, tmp_path):
    script, out = package.parent / "script.py", tmp_path / "results" / ".code"
    path = sync(out, script, package_dir=package)
    assert path == out / "script.sha" and path.stat().st_mtime == 0  # a first fingerprint dates nothing as stale
    (package / "metrics.py").write_text("# note\n" + (package / "metrics.py").read_text())
    assert sync(out, script, package_dir=package).stat().st_mtime == 0
    edit(package / "metrics.py", "THRESHOLD = 0.5", "THRESHOLD = 0.6")
    text = path.read_text()
    sync(out, script, package_dir=package)
    assert path.stat().st_mtime > 0 and path.read_text() != text
    assert path.read_text().splitlines()[1:] == ["script script.py", "sftlab.losses.base", "sftlab.losses.util",
                                                 "sftlab.metrics", "sftlab.scoring"]
    stamp = path.stat().st_mtime_ns
    os.utime(path, ns=(stamp - 10**9, stamp - 10**9))
    sync(out, script, package_dir=package)
    assert path.stat().st_mtime_ns == stamp - 10**9


def test_an_unknown_variant_is_an_error(package):
    with pytest.raises(ValueError, match="sftlab.losses.l1 is not a module"):
        fingerprint(package.parent / "script.py", ["sftlab.losses.l1"], package_dir=package)
