"""The plan's shards, members and merges."""

from __future__ import annotations


class CompositionPlan:
    """Mixin of `sftlab.plan.Plan`: uses `self.cfg` (the checked config) and the other mixins' methods."""
