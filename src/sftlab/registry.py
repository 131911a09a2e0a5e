"""Registries of interchangeable parts (objectives, selectors, generators, judges), each keyed by its config name."""

from __future__ import annotations

from typing import Callable


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
