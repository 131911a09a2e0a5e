"""Registries of interchangeable parts (objectives, selectors, generators, judges), each keyed by its config name."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable


def registrar(registry: dict[str, type], kind: str, attribute: str = "name") -> Callable[[str], Callable[[type], type]]:
    """A decorator factory that registers a class in ``registry`` under a name, stored on the class as ``attribute``."""

    def register(name: str) -> Callable[[type], type]:
        def wrap(cls: type) -> type:
            if name in registry:
                raise ValueError(f"{kind} {name!r} registered twice")
            setattr(cls, attribute, name)
            registry[name] = cls
            return cls

        return wrap

    return register


def lookup(registry: dict[str, type], kind: str, name: str) -> type:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(registry)}")
    return registry[name]


@functools.lru_cache(maxsize=None)
def constructor_parameters(init) -> tuple[tuple[str, Any], ...]:
    """(name, default) of a constructor's parameters; cached: planning names parts thousands of times and
    ``inspect.signature`` is slow."""
    signature = inspect.signature(init)
    return tuple((name, p.default) for name, p in signature.parameters.items()
                 if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
