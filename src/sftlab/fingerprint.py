"""What code a job runs, and a fingerprint of its meaning: the rule's script and the ``sftlab`` modules it imports.

A job's results are stale when the code that computed them changes in meaning, and only then. The modules a script
runs are found statically, from its ``import`` statements (lazy ones inside functions too), transitively within the
``sftlab`` package; importing ``sftlab.a.b`` also runs ``sftlab/__init__.py`` and ``sftlab/a/__init__.py``. The
fingerprint hashes each file's syntax tree without docstrings (``ast.dump``), so comments, docstrings and formatting
do not count, a renamed variable or a changed constant does.

A registry package's ``__init__`` imports every type only to register it (``from . import ntp``): those imports are
not followed. A job names the types it runs instead: the module of its type (a *variant*: a training's objective, an
evaluation's benchmark type), or a whole registry where it may run any of them; a change to another type's module
leaves it alone.

The workflow keeps one fingerprint file per script and variant (:func:`sync`), rewritten only when the fingerprint
changes: an input of the rule whose modification time marks the last change of meaning.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path
from typing import Iterable

PACKAGE = "sftlab"
PACKAGE_DIR = Path(__file__).resolve().parent


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@functools.cache
def _parsed(path: Path, stamp: tuple[int, int]) -> tuple[str, tuple[tuple[int, str, str | None, tuple[str, ...]], ...]]:
    """(normalised dump, imports) of one file; ``stamp`` (mtime, size) keys the cache. Each import is
    (level, module, None, ()) for ``import module`` or (level, module or "", "from", names) for ``from ... import``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imports += [(0, alias.name, None, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imports.append((node.level, node.module or "", "from", tuple(alias.name for alias in node.names)))
    return ast.dump(_strip_docstrings(tree)), tuple(imports)


def parsed(path: Path):
    st = path.stat()
    return _parsed(path, (st.st_mtime_ns, st.st_size))


def normalised(path: Path) -> str:
    """The file's syntax tree without docstrings, as text: equal for files that differ only in comments,
    docstrings and formatting."""
    return parsed(path)[0]


def module_file(name: str, package_dir: Path = PACKAGE_DIR) -> Path | None:
    """The source of module ``name`` (``sftlab.x.y``) in the package, or None when it is not one of its modules."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(path: Path, name: str | None, package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The package's modules one file imports: ``name`` is the file's own module name (None for a script), for its
    relative imports. Parents of each module count: importing a submodule runs their ``__init__``."""
    is_package = path.name == "__init__.py"
    found = []
    for level, module, kind, names in parsed(path)[1]:
        if level:
            if name is None:
                continue
            parts = name.split(".") if is_package else name.split(".")[:-1]
            parts = parts[:len(parts) - (level - 1)]
            module = ".".join(parts + ([module] if module else []))
        if kind == "from":
            # `from pkg import x`: x is a submodule or a name defined in pkg
            candidates = [module] + [f"{module}.{n}" for n in names if n != "*"]
        else:
            candidates = [module]
        for candidate in candidates:
            if module_file(candidate, package_dir) is not None:
                found += [m for m in _with_parents(candidate) if module_file(m, package_dir) is not None]
    return list(dict.fromkeys(found))


def registered_siblings(package: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The submodules a package's ``__init__`` imports as modules (``from . import ntp``): the registry's types."""
    init = module_file(package, package_dir)
    if init is None or init.name != "__init__.py":
        return set()
    siblings = set()
    for level, module, kind, names in parsed(init)[1]:
        if kind == "from" and level == 1 and not module:
            siblings |= {f"{package}.{n}" for n in names if module_file(f"{package}.{n}", package_dir) is not None}
    return siblings


def closure(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
            package_dir: Path = PACKAGE_DIR) -> list[str]:
    """Every package module ``script`` runs, sorted. A registry package's ``__init__`` imports each of its types
    only to register it (``from . import ntp``): those imports are not followed, the job names what it runs,
    ``variants`` (modules of the types it runs) and ``registries`` (packages all of whose types it may run)."""
    variants, registries = list(variants), list(registries)
    for name in variants + registries:
        if module_file(name, package_dir) is None:
            raise ValueError(f"{name} is not a module of {package_dir}")
    seen: set[str] = set()
    todo = imported_modules(script, None, package_dir) + [m for v in variants for m in _with_parents(v)]
    todo += [m for r in registries for m in _with_parents(r)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        cut = set() if name in registries else registered_siblings(name, package_dir)
        todo += [m for m in imported_modules(module_file(name, package_dir), name, package_dir) if m not in cut]
    return sorted(seen)


def fingerprint(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
                package_dir: Path = PACKAGE_DIR) -> tuple[str, list[str]]:
    """(sha256 of the normalised script and modules, the modules): equal while the code's meaning is."""
    modules = closure(script, variants, registries, package_dir)
    h = hashlib.sha256()
    h.update(b"script\0" + normalised(script).encode() + b"\n")
    for name in modules:
        h.update(name.encode() + b"\0" + normalised(module_file(name, package_dir)).encode() + b"\n")
    return h.hexdigest(), modules


def fingerprint_name(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = ()) -> str:
    """The fingerprint file's name: ``train@sftlab.objectives.ntp.sha``, ``select_data@sftlab.selection.sha``."""
    return "@".join([script.stem, *sorted({*variants, *registries})]) + ".sha"


def sync(directory: Path, script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
         package_dir: Path = PACKAGE_DIR) -> Path:
    """Write the fingerprint file of ``script`` (with ``variants`` and ``registries``, as for :func:`closure`) in ``directory`` if its content changes; return
    its path. A file written for the first time is dated at the epoch: results made before the workflow kept
    fingerprints are taken as made by the code of now (a first run of this version reruns nothing). Called only
    where the workflow is planned, never from a job."""
    variants, registries = sorted(variants), sorted(registries)
    digest, modules = fingerprint(script, variants, registries, package_dir)
    text = "".join(f"{line}\n" for line in [digest, f"script {script.name}", *modules])
    path = Path(directory) / fingerprint_name(script, variants, registries)
    try:
        if path.read_text() == text:
            return path
        new = False
    except FileNotFoundError:
        new = True
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    if new:
        os.utime(tmp, (0, 0))
    os.replace(tmp, path)
    return path
