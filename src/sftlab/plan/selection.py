"""The plan's references, πref tables, warmup, gradients and influence, the selection baselines."""

from __future__ import annotations


class SelectionPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""
