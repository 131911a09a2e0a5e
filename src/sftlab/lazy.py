"""``torch`` imported on first use, for the modules the workflow's rule files import at plan time.

Planning ``configs/paper/all.yaml`` only needs the registries (objective columns, selector tables); importing torch
would add seconds to every ``snakemake`` command. Modules that must stay importable without loading torch write
``from sftlab.lazy import torch`` and use it only inside functions.
"""

from __future__ import annotations

import importlib
from typing import Any


class _LazyModule:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch = _LazyModule("torch")
