"""What code a job runs, and a fingerprint of its meaning: the rule's script and the ``sftlab`` code it reaches.

A job's results are stale when the code that computed them changes in meaning, and only then. What a script runs
is found statically from its syntax tree, within the ``sftlab`` package: the script itself, every top-level
definition (function, class, assignment) of a package module its code names — through ``from m import name``,
``import m`` and ``m.name``, imports inside functions included — and, transitively, every definition those name.
Loading a module also runs its statements that define nothing (and those of its packages' ``__init__``), so they
count too. The fingerprint hashes each definition's syntax tree without docstrings (``ast.dump``): comments,
docstrings and formatting do not count; a changed constant does, for the jobs whose code reaches it.

A registry package's ``__init__`` imports each of its types only to register it (``from . import ntp``); a
decorator like ``@register_objective("ntp")`` only files the class under its name. Neither is followed: a job names
the types it runs instead, the module of its type (a *variant*: a training's objective, an evaluation's benchmark
type), or a whole registry where it may run any of them.

The workflow keeps one fingerprint file per script and variant (:func:`sync`), rewritten only when the fingerprint
changes: an input of the rule whose modification time marks the code's last change of meaning.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

PACKAGE = "sftlab"
PACKAGE_DIR = Path(__file__).resolve().parent
WHOLE = "*"  # a reference to a whole module: every definition in it


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or ([] if isinstance(node, ast.Module) else [ast.Pass()])
    return tree


@dataclass
class Module:
    """One parsed file: its top-level units (a definition's statement, by the names it binds; or a statement that
    binds nothing the code can name, run on loading), each as (normalised dump, references); its top-level imports
    (name → (module, attribute or WHOLE)); the modules loading it imports."""
    name: str
    units: dict[str, tuple[str, list[tuple[str, ...]]]] = field(default_factory=dict)
    bindings: dict[str, list[str]] = field(default_factory=dict)
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)
    loads: list[tuple[str, str]] = field(default_factory=list)
    effects: list[str] = field(default_factory=list)


def _absolute(module: str | None, level: int, this: str, is_package: bool) -> str:
    if not level:
        return module or ""
    parts = this.split(".") if is_package else this.split(".")[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join(parts + ([module] if module else []))


def _import_refs(node: ast.AST, this: str, is_package: bool) -> list[tuple[str, str, str]]:
    """(bound name, module, attribute or WHOLE) of each name an import statement binds."""
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            if alias.asname:
                out.append((alias.asname, alias.name, WHOLE))
            else:  # `import a.b` binds `a`; `a.b.x` resolves through attribute chains
                out.append((alias.name.split(".")[0], alias.name.split(".")[0], WHOLE))
                out.append(("", alias.name, WHOLE))
        return out
    module = _absolute(node.module, node.level, this, is_package)
    return [(alias.asname or alias.name, module, alias.name) for alias in node.names]


def _references(node: ast.AST, this: str, is_package: bool) -> list[tuple[str, ...]]:
    """Dotted names a statement reads (``a``, ``a.b.c``) and, for imports inside it, ("import", module, attr)."""
    refs = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            chain, base = [sub.attr], sub.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name):
                refs.append((base.id, *reversed(chain)))
        elif isinstance(sub, ast.Name):
            refs.append((sub.id,))
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            refs += [("import", module, attr) for _, module, attr in _import_refs(sub, this, is_package)]
    return refs


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] \
        if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


@functools.cache
def _parse(path: Path, name: str, stamp: tuple[int, int]) -> Module:
    is_package = path.name == "__init__.py"
    tree = _strip_docstrings(ast.parse(path.read_text(), filename=str(path)))
    mod = Module(name)
    for i, stmt in enumerate(tree.body):
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for bound, module, attr in _import_refs(stmt, name, is_package):
                if bound:
                    mod.imports[bound] = (module, attr)
                mod.loads.append((module, attr))
            continue
        key = f"{i}:{stmt.__class__.__name__}"
        names = _bound_names(stmt)
        mod.units[key] = (ast.dump(stmt), _references(stmt, name, is_package))
        for n in names:
            mod.bindings.setdefault(n, []).append(key)
        if not names:
            mod.effects.append(key)
    return mod


@functools.cache
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


def _module(name: str, package_dir: Path, path: Path | None = None) -> Module:
    path = path or module_file(name, package_dir)
    st = path.stat()
    return _parse(path, name, (st.st_mtime_ns, st.st_size))


def registered_types(package: str, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The submodules a package's ``__init__`` imports as modules (``from . import ntp``): a registry's types."""
    init = module_file(package, package_dir)
    if init is None or init.name != "__init__.py":
        return set()
    mod = _module(package, package_dir)
    return {f"{m}.{a}" for m, a in mod.loads if m == package and module_file(f"{m}.{a}", package_dir) is not None}


class _Reach:
    """The units a script reaches: (module, unit key) → dump."""

    def __init__(self, script: Module, package_dir: Path, registries: list[str]) -> None:
        self.script = script
        self.package_dir = package_dir
        self.followed = {r: registered_types(r, package_dir) for r in registries}
        self.units: dict[tuple[str, str], str] = {}
        self.loaded: set[str] = set()
        self.whole: set[str] = set()
        self.todo: list[tuple[str, str]] = []
        self.modules: dict[str, Module] = {"script": script}
        self.registries: dict[str, set[str]] = {}

    def is_module(self, name: str) -> bool:
        return module_file(name, self.package_dir) is not None

    def module(self, name: str) -> Module:
        if name not in self.modules:
            self.modules[name] = _module(name, self.package_dir)
        return self.modules[name]

    def registered(self, package: str) -> set[str]:
        if package not in self.registries:
            self.registries[package] = registered_types(package, self.package_dir)
        return self.registries[package]

    def load(self, name: str) -> None:
        """Importing ``name`` runs its packages' ``__init__`` and, in each, the statements that define nothing and
        the imports (which load their modules; the names they bind count where code reads them)."""
        parts = name.split(".")
        for prefix in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            if prefix in self.loaded or not self.is_module(prefix):
                continue
            self.loaded.add(prefix)
            mod = self.module(prefix)
            self.todo += [(prefix, key) for key in mod.effects]
            registered = self.registered(prefix)
            for module, attr in mod.loads:
                sub = f"{module}.{attr}"
                if attr != WHOLE and self.is_module(sub):
                    if module != prefix or sub not in registered or sub in self.followed.get(prefix, ()):
                        self.load(sub)  # not a registration the job does not name
                else:
                    self.load(module)

    def ref(self, module: str, attr: str) -> None:
        """Code runs ``from module import attr`` (attr WHOLE: ``import module``): a submodule or a whole module
        counts whole, a name its definition."""
        if not self.is_module(module):
            return
        if attr == WHOLE:
            self.whole_module(module)
        elif self.is_module(f"{module}.{attr}"):
            self.whole_module(f"{module}.{attr}")
        else:
            self.load(module)
            self.name(module, attr)

    def whole_module(self, module: str) -> None:
        if module in self.whole:
            return
        self.whole.add(module)
        self.load(module)
        self.todo += [(module, key) for key in self.module(module).units]

    def name(self, module: str, name: str, rest: tuple[str, ...] = ()) -> None:
        """A name read in ``module`` (``rest``: the attributes read from it)."""
        mod = self.module(module)
        if name in mod.bindings:
            self.todo += [(module, key) for key in mod.bindings[name]]
        elif name in mod.imports:
            m, a = mod.imports[name]
            if a == WHOLE:
                self.attributes(m, rest)
            elif self.is_module(f"{m}.{a}"):
                self.attributes(f"{m}.{a}", rest)
            else:
                self.ref(m, a)

    def attributes(self, module: str, chain: tuple[str, ...]) -> None:
        """``module.a.b``: the longest chain of submodules, then one name in the last (none: the whole module)."""
        if not self.is_module(module):
            return
        while chain and self.is_module(f"{module}.{chain[0]}"):
            module, chain = f"{module}.{chain[0]}", chain[1:]
        if chain:
            self.load(module)
            self.name(module, chain[0], chain[1:])
        else:
            self.whole_module(module)

    def run(self, variants: list[str], registries: list[str]) -> dict[tuple[str, str], str]:
        self.loaded.add("script")
        for module, attr in self.script.loads:
            self.load(module if attr == WHOLE or not self.is_module(f"{module}.{attr}") else f"{module}.{attr}")
        self.todo += [("script", key) for key in self.script.units]
        for name in variants:
            self.whole_module(name)
        for registry in registries:
            for name in sorted(self.followed[registry]):
                self.whole_module(name)
        while self.todo:
            module, key = self.todo.pop()
            if (module, key) in self.units:
                continue
            dump, refs = self.module(module).units[key]
            self.units[(module, key)] = dump
            for ref in refs:
                if ref[0] == "import":
                    self.ref(ref[1], ref[2])
                else:
                    self.name(module, ref[0], ref[1:])
        return self.units


def reach(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
          package_dir: Path = PACKAGE_DIR) -> dict[tuple[str, str], str]:
    """Every unit ``script`` reaches, (module, unit key) → normalised dump: the script's own statements under
    module ``script``. ``variants``: modules of the types the job runs; ``registries``: packages all of whose types
    it may run."""
    variants, registries = list(variants), list(registries)
    for name in variants + registries:
        if module_file(name, package_dir) is None:
            raise ValueError(f"{name} is not a module of {package_dir}")
    return _Reach(_module("script", package_dir, path=script), package_dir, registries).run(variants, registries)


def fingerprint(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
                package_dir: Path = PACKAGE_DIR) -> tuple[str, list[str]]:
    """(sha256 of every unit the script reaches, the package modules they are in): equal while the meaning is."""
    units = reach(script, variants, registries, package_dir)
    h = hashlib.sha256()
    # keys hold statement positions: hash the sorted dumps, so that moving a definition changes nothing
    for module, dump in sorted((module, dump) for (module, _), dump in units.items()):
        h.update(module.encode() + b"\0" + dump.encode() + b"\n")
    return h.hexdigest(), sorted({module for module, _ in units} - {"script"})


def fingerprint_name(script: Path, variants: Iterable[str] = (), registries: Iterable[str] = ()) -> str:
    """The fingerprint file's name: ``train@sftlab.objectives.ntp.sha``, ``select_data@sftlab.selection.sha``."""
    return "@".join([script.stem, *sorted({*variants, *registries})]) + ".sha"


def sync(directory: Path, script: Path, variants: Iterable[str] = (), registries: Iterable[str] = (),
         package_dir: Path = PACKAGE_DIR) -> Path:
    """Write the fingerprint file of ``script`` (with ``variants`` and ``registries``, as for :func:`reach`) in
    ``directory`` if its content changes; return its path. A file written for the first time is dated at the epoch:
    results made before the workflow kept fingerprints are taken as made by the code of now (a first run of this
    version reruns nothing; deleting a fingerprint file accepts the code as it is). Called only where the workflow is
    planned, never from a job."""
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
